import pytest

from hala.filters import Pair, check_pair, filter_pairs, protected_spans, reason_key, source_problem
from hala.recipe import Filters

S = Filters()


@pytest.mark.parametrize(
    "source, target, reason",
    [
        ("The weather is nice today.", "الطقس جميل اليوم.", None),
        ("", "الطقس جميل اليوم.", "empty source"),
        ("The weather is nice today.", "   ", "empty target"),
        ("The weather is nice today.", "The weather is nice today.", "untranslated copy"),
        ("The weather is nice today.", "the  WEATHER is nice today.", "untranslated copy"),
        ("The weather is nice today.", "Le temps est beau aujourd'hui.", "no Arabic letters in target"),
        ("Please restart the server tonight.", "please restart the server الليلة", "mixed scripts: target mostly Latin"),
        ("Yes.", "نعم، هذا صحيح تمامًا وأنا أوافق على كل ما قلته اليوم في الاجتماع.", "length ratio 16.25 outside [0.3, 3.0]"),
        ("Run `pip install hala` first.", "شغّل الأمر أولاً.", "lost code or placeholder: `pip install hala`"),
        ("Hello {name}, welcome back.", "مرحبا يا صديقي، أهلا بعودتك.", "lost code or placeholder: {name}"),
        ("Hello {name}, welcome back.", "مرحبا {name}، أهلا بعودتك.", None),
        ("Visit https://example.org for details.", "زر https://example.org للتفاصيل.", None),
        ("See https://example.org/a, then reply.", "انظر https://example.org/a ثم رد.", None),
        ("Das Wetter ist heute sehr schön und warm.", "الطقس جميل جدًا ودافئ اليوم.", "source language is de, not en"),
        ("The weather is nice\u202e today.", "الطقس جميل اليوم.", "bidi control characters"),
        ("x" * 5000, "س" * 5000, "too long: 5000 chars > 4000"),
        ("Where is the station?", "المحطة بعيدة جدا عن هنا.", "answered instead of translated: the source asks a question, the target does not"),
        ("Where is the station?", "أين المحطة؟", None),
        ("Solve $x + 1 = 2$ now.", "حل $x + 1 = 2$ الآن.", None),
        ("Solve $x + 1 = 2$ now.", "حل المعادلة الآن.", "lost code or placeholder: $x + 1 = 2$"),
    ],
)
def test_each_reason(source, target, reason):
    assert check_pair(Pair(source, target), S, "en", "ar") == reason


def test_protected_spans_find_code_urls_placeholders_tags():
    text = "Use `ls -la` or see https://x.org/a?b=1 with {user} and %s in <b>bold</b>.\n```py\nprint(1)\n```"
    assert protected_spans(text) == ["`ls -la`", "https://x.org/a?b=1", "{user}", "%s", "<b>", "</b>", "```py\nprint(1)\n```"]


def test_duplicates_exact_and_near_and_conservation():
    base = "The children played football in the park after school on a sunny afternoon."
    pairs = [
        Pair(base, "لعب الأطفال كرة القدم في الحديقة بعد المدرسة في ظهيرة مشمسة."),
        Pair(base.upper(), "لعب الأطفال كرة القدم في الحديقة بعد المدرسة في ظهيرة مشمسة."),
        Pair(base.replace("sunny", "sunny and warm"), "لعب الأطفال كرة القدم في الحديقة بعد المدرسة في ظهيرة مشمسة."),
        Pair("My brother works at the hospital near our house.", "يعمل أخي في المستشفى القريب من بيتنا."),
    ]
    results = list(filter_pairs(pairs, Filters(near_duplicate_threshold=0.5), "en", "ar"))
    assert [r for _, r in results] == [None, "exact duplicate", "near duplicate", None]
    assert [p for p, _ in results] == pairs


@pytest.mark.parametrize(
    "reason, key",
    [
        ("untranslated copy", "untranslated_copy"),
        ("length ratio 3.10 outside [0.3, 3.0]", "length_ratio"),
        ("lost code or placeholder: {x}", "lost_code_or_placeholder"),
        ("source language is de, not en", "source_language"),
        ("too long: 5000 chars > 4000", "too_long"),
        ("judge: REJECT", "judge"),
        ("bad row: not valid JSON (Expecting value)", "bad_row"),
        ("translation cut at max_new_tokens (turn 1)", "translation_cut_at_max_new_tokens"),
        ("lost protected span: {x} (turn 0)", "lost_protected_span"),
        ("answered instead of translated (turn 0)", "answered_instead_of_translated"),
    ],
)
def test_reason_keys(reason, key):
    assert reason_key(reason) == key


def test_source_problems_stop_a_text_before_translation():
    assert source_problem("Hello\u2066 there", S, "en") == "bidi control characters in source"
    assert source_problem("Der Hund schläft heute im warmen Garten.", S, "en") == "source language is de, not en"
    assert source_problem("The dog sleeps in the warm garden today.", S, "en") is None
    assert source_problem("Hi", S, "en") is None  # too short to judge its language

"""Faithful translation: what is copied, what is translated, and what is rejected, on a fake model."""

import json

import pytest

from hala.corpora import DataError
from hala.engines import Completion
from hala.recipe import Bootstrap, DatasetRef, Generation, Languages, Sharding, TranslationJob
from hala.stages.bootstrap_bilingual import turn_pairs
from hala.translate_datasets import translate_datasets
from hala.translation import Budget, UnfaithfulTranslation, assemble, plan_text
from tests.fake_engine import PROMPT, FakeTranslator

WORDS = lambda text: len(text.split())  # noqa: E731 - a token counter for plans

MARKDOWN = """# Install the tool

Run `pip install hala`, then open https://example.com/docs and greet {name} with %s.

```python
print("Hello")  # never translated
```

- First step with $x^2 + 1$ inside.
- Second step.

| Name | Speed |
|------|-------|
| Car | fast |
"""


def _identity(plan):
    return assemble(plan, [Completion(r, 1, False) for r in plan.requests])


def test_plan_copies_code_and_structure_and_masks_inline_spans():
    plan = plan_text(MARKDOWN, Budget(50, WORDS))
    assert _identity(plan) == MARKDOWN  # nothing is lost or moved when the model copies its input
    joined = "\n".join(plan.requests)
    for never_sent in ("print(", "```", "# ", "- ", "|", "https://", "{name}", "`pip", "$x^2"):
        assert never_sent not in joined
    assert "Run ⟦1⟧, then open ⟦2⟧ and greet ⟦3⟧ with ⟦4⟧." in plan.requests
    assert plan.requests[:2] == ["Install the tool", "Run ⟦1⟧, then open ⟦2⟧ and greet ⟦3⟧ with ⟦4⟧."]
    assert {"Name", "Speed", "Car", "fast"} <= set(plan.requests)


def test_translated_text_keeps_every_protected_span_in_place():
    plan = plan_text(MARKDOWN, Budget(50, WORDS))
    out = assemble(plan, [Completion(f"ع[{r}]", 1, False) for r in plan.requests])
    assert '```python\nprint("Hello")  # never translated\n```\n' in out
    assert "ع[Run `pip install hala`, then open https://example.com/docs and greet {name} with %s.]" in out
    assert out.startswith("# ع[Install the tool]\n")
    assert "- ع[First step with $x^2 + 1$ inside.]\n- ع[Second step.]" in out
    assert "| ع[Name] | ع[Speed] |\n|------|-------|\n| ع[Car] | ع[fast] |" in out


def test_long_text_is_split_at_sentences_under_the_budget_and_rejoined():
    text = "The first sentence is short. The second sentence is a little longer than that. A third one ends it."
    # 5, 9 and 5 words: at 12 a request holds one sentence (two would not fit), each whole.
    plan = plan_text(text, Budget(12, WORDS))
    assert plan.requests == ["The first sentence is short.", "The second sentence is a little longer than that.", "A third one ends it."]
    assert _identity(plan) == text
    # At 8 the 9-word sentence alone is too long: it is cut at words, the others stay whole.
    plan = plan_text(text, Budget(8, WORDS))
    assert plan.requests == ["The first sentence is short.", "The second sentence is a little longer than", "that.", "A third one ends it."]
    assert _identity(plan) == text
    one_long_sentence = " ".join(f"word{i}" for i in range(30)) + "."
    plan = plan_text(one_long_sentence, Budget(8, WORDS))
    assert all(WORDS(r) <= 8 for r in plan.requests) and _identity(plan) == one_long_sentence


def test_lost_marker_truncation_and_reserved_characters_are_rejects():
    plan = plan_text("Say hello to {name} today.", Budget(50, WORDS))
    with pytest.raises(UnfaithfulTranslation, match="lost protected span: {name}"):
        assemble(plan, [Completion("مرحبا اليوم", 3, False)])
    with pytest.raises(UnfaithfulTranslation, match="translation cut at max_new_tokens"):
        assemble(plan, [Completion("مرحبا ⟦1⟧", 3, True)])
    with pytest.raises(UnfaithfulTranslation, match="reserved marker"):
        plan_text("odd ⟦1⟧ text", Budget(50, WORDS))


def _conversations(tmp_path, rows, name="convs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return DatasetRef(path=str(path))


def _run(tmp_path, monkeypatch, ds, engine, job=None, out="out"):
    monkeypatch.setattr("hala.translate_datasets.load_engine", lambda *args: engine)
    job = job or TranslationJob(generation=Generation(max_new_tokens=64), shards=Sharding(size=2))
    metrics = translate_datasets([ds], "fake-model", PROMPT, job, Languages(), "transformers", tmp_path / out)
    read = lambda f: [json.loads(line) for line in (tmp_path / out / f).read_text(encoding="utf-8").splitlines()]  # noqa: E731
    return metrics, read("corpus.jsonl"), read("rejects.jsonl")


CHAT = {
    "conversations": [
        {"from": "system", "value": "You are a careful assistant."},
        {"from": "human", "value": "How do I print in Python?"},
        {"from": "gpt", "value": "Call the function:\n\n```python\nprint(1)\n```\n\nThat is all."},
        {"from": "human", "value": "And in a loop?"},
        {"from": "gpt", "value": "Put `print(i)` inside the loop body."},
    ]
}


@pytest.mark.parametrize("policy, roles", [
    ("translate", ["system", "user", "assistant", "user", "assistant"]),
    ("keep", ["system", "user", "assistant", "user", "assistant"]),
    ("drop", ["user", "assistant", "user", "assistant"]),
])
def test_every_turn_translated_roles_and_order_kept(tmp_path, monkeypatch, policy, roles):
    job = TranslationJob(generation=Generation(max_new_tokens=64), system_prompt=policy)
    metrics, kept, rejects = _run(tmp_path, monkeypatch, _conversations(tmp_path, [CHAT]), FakeTranslator(), job)
    assert rejects == [] and metrics["rows_kept"] == 1
    messages = kept[0]["messages"]
    assert [m["role"] for m in messages] == roles
    assert kept[0]["source_messages"][0] == {"role": "system", "content": "You are a careful assistant."}
    system = messages[0]["content"] if policy != "drop" else None
    assert system == {"translate": "ع[You are a careful assistant.]", "keep": "You are a careful assistant.", "drop": None}[policy]
    by_role = [m["content"] for m in messages if m["role"] != "system"]
    assert by_role[0] == "ع[How do I print in Python؟]"
    assert by_role[1] == "ع[Call the function:]\n\n```python\nprint(1)\n```\n\nع[That is all.]"
    assert by_role[3] == "ع[Put `print(i)` inside the loop body.]"


def test_a_kept_tool_turn_passes_untranslated(tmp_path, monkeypatch):
    row = {"messages": [{"role": "user", "content": "What is the weather?"}, {"role": "tool", "content": '{"temp": 21}'},
                        {"role": "assistant", "content": "It is warm."}]}  # fmt: skip
    ds = _conversations(tmp_path, [row]).model_copy(update={"other_roles": "keep"})
    _, kept, rejects = _run(tmp_path, monkeypatch, ds, FakeTranslator())
    assert rejects == [] and kept[0]["messages"] == [
        {"role": "user", "content": "ع[What is the weather؟]"},
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "ع[It is warm.]"},
    ]


def test_bad_rows_and_unfaithful_translations_are_rejects_and_counts_add_up(tmp_path, monkeypatch):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"instruction": "Name a colour.", "response": "Blue is a colour."})
    lines = [
        good,
        "{broken json",
        json.dumps({"instruction": "", "response": "x"}),
        json.dumps({"instruction": "Greet {name} warmly.", "response": "Hello {name}."}),
        json.dumps({"instruction": "Is the sky blue?", "response": "Yes."}),
        json.dumps({"instruction": "Say hi\u202e now.", "response": "Hi."}),
        json.dumps({"instruction": "Tell me a story about a cat and a dog who live in a small house. " * 3, "response": "Fine."}),
        json.dumps({"instruction": "x" * 400, "response": "y"}),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"instruction": "bad \xff byte", "response": "r"}\n')
    ds = DatasetRef(path=str(path), max_row_bytes=300)
    engine = FakeTranslator(lose_markers=True, truncate_longer_than=30, answer_questions=True)
    # min_keep_rate 0: this file is meant to be mostly rejects
    job = TranslationJob(generation=Generation(max_new_tokens=64), shards=Sharding(size=3), max_source_tokens=60, min_keep_rate=0)
    metrics, kept, rejects = _run(tmp_path, monkeypatch, ds, engine, job)
    assert [r["row"] for r in kept] == [1]
    reasons = {r["row"]: r["reason"] for r in rejects}
    assert reasons == {
        2: "bad row: not valid JSON (Expecting property name enclosed in double quotes)",
        3: "bad row: instruction is empty",
        4: "lost protected span: {name} (turn 0)",
        5: "answered instead of translated (turn 0)",
        6: "bidi control characters in source (turn 0)",
        7: "translation cut at max_new_tokens (turn 0)",
        8: f"bad row: row of {len(lines[7])} bytes is over the limit of 300",
        9: "bad row: invalid UTF-8 at byte 21",
    }
    assert metrics["rows_in"] == 9 == metrics["rows_kept"] + metrics["rows_rejected"]
    assert metrics["shards"] == 3 and metrics["rejected_bad_row"] == 4 and metrics["rejected_lost_protected_span"] == 1
    assert engine.closed


def test_a_file_with_no_usable_row_stops_before_the_model_loads(tmp_path, monkeypatch):
    ds = _conversations(tmp_path, [{"text": "a"}, {"text": "b"}])
    loaded = []
    monkeypatch.setattr("hala.translate_datasets.load_engine", lambda *args: loaded.append(1))
    with pytest.raises(DataError, match=r"convs.jsonl: no conversations in its first 2 rows; row 1: no conversation in any known layout \(keys: text\)"):
        translate_datasets([ds], "m", PROMPT, TranslationJob(), Languages(), "transformers", tmp_path / "out")
    assert loaded == [] and not (tmp_path / "out").exists()


def test_plans_rejoin_exactly_whatever_the_white_space_and_line_endings():
    cases = [
        "One sentence here.  Two spaces before this one.\tA tab before this one. And a last one here.",
        "Il reste .... Logiquement oui. Next one comes here. And then the end.",  # pysbd drops a space here
        "Intro line.\r\n```python\r\nprint('x')\r\n```\r\nOutro line.\r\n",
        "Before.\n```\nnever closed, so code to the end\nstill code\n",
        "Formula:\n$$\nx^2 + y^2\n$$\nThat is all.",
        "| Name | Example |\n|---|---|\n| Pipe | `a|b` here |",
    ]
    for text in cases:
        plan = plan_text(text, Budget(4, WORDS))
        assert _identity(plan) == text, text
        assert all(WORDS(r) <= 4 or " " not in r.strip() for r in plan.requests)
    assert not any("print" in r for r in plan_text(cases[2], Budget(4, WORDS)).requests)
    assert not any("code" in r for r in plan_text(cases[3], Budget(4, WORDS)).requests)
    assert not any("x^2" in r for r in plan_text(cases[4], Budget(4, WORDS)).requests)
    table = plan_text(cases[5], Budget(50, WORDS))
    assert "⟦1⟧ here" in table.requests and not any("|" in r for r in table.requests)


def test_hostile_texts_do_not_take_quadratic_time():
    """A guard against regressions (each case took 10 s to minutes before), not a speed target."""
    import time

    for text in ("```a\n" * 20000, "\\( x " * 20000, "`a " * 30000, "$x " * 30000, "This is a sentence. " * 6000):
        started = time.perf_counter()
        plan = plan_text(text, Budget(100, WORDS))
        assert time.perf_counter() - started < 10, text[:10]
        assert _identity(plan) == text


def test_bootstrap_gives_the_translator_question_and_response_pairs_and_system_prompts_only_when_asked(tmp_path, monkeypatch):
    # Open-Orca's shape: the report bootstraps from its question/response pairs (405K rows -> 810K pairs).
    row = {"system_prompt": "You are an AI assistant. Answer briefly.", "question": "What is two plus two?", "response": "It is four."}
    path = tmp_path / "orca.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    ds = DatasetRef(path=str(path), layout="columns", fields={"system": "system_prompt", "user": "question", "assistant": "response"})
    pairs = {}
    for policy in ("drop", "translate"):
        section = Bootstrap(dataset=ds, **({} if policy == "drop" else {"system_prompt": policy}))
        _, kept, _ = _run(tmp_path, monkeypatch, ds, FakeTranslator(), section, out=policy)
        pairs[policy] = turn_pairs(kept[0])
    assert Bootstrap(dataset=ds).system_prompt == "drop"  # the default
    assert pairs["drop"] == [("What is two plus two?", "ع[What is two plus two؟]"), ("It is four.", "ع[It is four.]")]
    assert pairs["translate"] == [("You are an AI assistant. Answer briefly.", "ع[You are an AI assistant. Answer briefly.]")] + pairs["drop"]

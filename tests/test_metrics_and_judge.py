import pytest

from hala.metrics import translation_scores
from hala.stages.filter_parallel import parse_verdict


def test_scores_identical_and_disjoint():
    same = translation_scores(["القطة نائمة على الكرسي."], ["القطة نائمة على الكرسي."])
    assert same["chrf"] == pytest.approx(100.0) and same["bleu"] == pytest.approx(100.0)
    far = translation_scores(["xyz"], ["القطة نائمة على الكرسي."])
    assert far["chrf"] < 5 and far["bleu"] == 0.0


def test_scores_refuse_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        translation_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no references"):
        translation_scores([], [])


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ("ACCEPT", "ACCEPT"),
        ("reject", "REJECT"),
        ("Verdict: Accept.", "ACCEPT"),
        ("ACCEPT or REJECT", None),
        ("ACCEPTABLE", None),
        ("", None),
        ("نعم", None),
    ],
)
def test_parse_verdict(answer, verdict):
    assert parse_verdict(answer) == verdict


def _judge_conversations(n: int = 12) -> list:
    from hala.corpora import read_pairs
    from hala.recipe import DatasetRef, Judge

    prompt = Judge.model_fields["prompt"].default
    pairs = read_pairs(DatasetRef(path="bundled:smoke/parallel_en_ar.jsonl", limit=n), "en", "ar")
    # half of them misaligned: each English sentence against the next one's Arabic
    pairs = pairs[: n // 2] + [(pairs[i][0], pairs[i + 1][1]) for i in range(n // 2, n - 1)]
    return [[{"role": "user", "content": prompt.format(source=en, target=ar)}] for en, ar in pairs]


def test_a_judge_that_answers_in_sentences_still_decides(tiny):
    """The tiny teacher was trained to translate, not to judge: asked to judge, it writes text, no verdict."""
    from hala.engines import TransformersEngine
    from hala.recipe import Generation
    from hala.stages.filter_parallel import VERDICTS, p_accept

    engine = TransformersEngine(tiny("teacher"))
    conversations = _judge_conversations()
    answers = engine.complete(conversations, Generation(max_new_tokens=8))
    assert sum(parse_verdict(a.text) is None for a in answers) >= len(answers) - 1, [a.text for a in answers]
    odds = [p_accept(lp) for lp in engine.choice_logprobs(conversations, VERDICTS)]
    assert all(0.0 < p < 1.0 for p in odds) and len({round(p, 6) for p in odds}) > 1


def test_the_judges_two_ways_agree_and_one_token_choices_take_one_pass(tiny):
    from hala.engines import TransformersEngine
    from hala.recipe import Generation
    from hala.stages.filter_parallel import VERDICTS, p_accept

    engine = TransformersEngine(tiny("judge"))
    conversations = _judge_conversations()
    generated = [parse_verdict(a.text) for a in engine.complete(conversations, Generation(max_new_tokens=8))]
    single = engine.choice_logprobs(conversations, VERDICTS)
    decided = ["ACCEPT" if p_accept(lp) >= 0.5 else "REJECT" for lp in single]
    # The trained judge's greedy answer starts with the likelier verdict, so both ways decide alike.
    assert decided == generated
    # A choice of several tokens takes a pass per choice; the one-token choices score the same either way.
    several = engine.choice_logprobs(conversations, [*VERDICTS, "ACCEPT REJECT"])
    assert [x for s in several for x in s[:2]] == pytest.approx([x for s in single for x in s], abs=1e-4)


def test_p_accept_is_the_two_answer_softmax_even_far_apart():
    from hala.stages.filter_parallel import p_accept

    assert p_accept([-1.0, -1.0]) == pytest.approx(0.5)
    assert p_accept([0.0, -2000.0]) == pytest.approx(1.0) and p_accept([-2000.0, 0.0]) == pytest.approx(0.0)

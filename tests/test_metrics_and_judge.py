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

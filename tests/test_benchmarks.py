import json

import pytest

from hala.benchmarks import SUITE, lm_eval_task
from hala.recipe import BENCHMARKS


def test_suite_covers_the_six_reported_benchmarks():
    assert tuple(SUITE) == BENCHMARKS
    assert {b.title for b in SUITE.values()} == {"AlGhafa", "ArabicMMLU", "EXAMS", "MadinahQA", "AraTrust", "ArbMMLU-HT"}


@pytest.mark.parametrize("key", BENCHMARKS)
def test_every_fixture_row_becomes_a_scorable_doc(key):
    rows = [json.loads(line) for line in SUITE[key].fixture.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 16
    for row in rows:
        doc = SUITE[key].to_doc(row)
        assert 2 <= len(doc.choices) <= 5
        assert 0 <= doc.gold < len(doc.choices)
        assert doc.query.endswith("الإجابة:")


def test_gold_encodings_follow_each_dataset():
    # AlGhafa: 0-based string label; ArabicMMLU: Latin letter over non-empty options; AraTrust: Arabic letter;
    # ArbMMLU-HT: 0-based int with options numbered from 1.
    assert SUITE["alghafa"].to_doc({"query": "q", "sol1": "a", "sol2": "b", "sol3": "c", "label": "2"}).gold == 2
    doc = SUITE["arabic_mmlu"].to_doc(
        {"Question": "q", "Option 1": "a", "Option 2": None, "Option 3": "c", "Option 4": "", "Option 5": None, "Answer Key": "C"}
    )
    assert (doc.choices, doc.gold) == (["أ", "ج"], 1)
    assert SUITE["aratrust"].to_doc({"Question": "q", "A": "أ) x", "B": "ب) y", "C": "ج) z", "Answer": "ج"}).gold == 2
    ht = SUITE["arbmmlu_ht"].to_doc({"question": "q", "choices": ["w", "x", "y", "z"], "answer": 3})
    assert (ht.choices, ht.gold) == (["1", "2", "3", "4"], 3)


def test_task_points_at_hub_or_fixture():
    hub = lm_eval_task("madinah_qa", "hub")
    assert (hub["dataset_path"], hub["dataset_name"], hub["test_split"]) == ("MBZUAI/MadinahQA", "Arabic Language (General)", "test")
    local = lm_eval_task("aratrust", "fixtures")
    assert local["dataset_path"] == "json"
    assert local["dataset_kwargs"]["data_files"]["test"].endswith("benchmarks/aratrust.jsonl")
    assert lm_eval_task("aratrust", "hub")["test_split"] == "train"

"""The filter stage's three steps (screen, judge in shards, collect) on a fake judge."""

import json
import math

import pytest

from hala.engines import Completion
from hala.recipe import DatasetRef, Filters, Judge, Languages, Sharding
from hala.stages.filter_parallel import collect_pairs, filter_corpus, judge_pairs, screen_pairs

SENTENCES = [
    ("The weather is nice today.", "الطقس جميل اليوم."),
    ("My brother works at the hospital.", "يعمل أخي في المستشفى."),
    ("The train leaves at nine.", "يغادر القطار في التاسعة."),
    ("I like green tea very much.", "أحب الشاي الأخضر كثيرا."),
    ("The library opens at eight.", "تفتح المكتبة في الثامنة."),
    ("We walked to the old market.", "مشينا إلى السوق القديم."),
    ("She reads a book every week.", "تقرأ كتابا كل أسبوع."),
    ("The children are playing outside.", "الأطفال يلعبون في الخارج."),
]


class FakeJudge:
    """ACCEPT, except REJECT for targets marked خطأ and gibberish for targets marked غامض."""

    name = "fake"

    def __init__(self):
        self.loads = 0
        self.seen = 0

    def complete(self, conversations, generation, desc=""):
        self.seen += len(conversations)
        answers = []
        for conv in conversations:
            text = conv[-1]["content"]
            answers.append("REJECT" if "خطأ" in text else "hmm, maybe" if "غامض" in text else "ACCEPT.")
        return [Completion(a, 2, False) for a in answers]

    def choice_logprobs(self, conversations, choices, desc=""):
        assert list(choices) == ["ACCEPT", "REJECT"]
        self.seen += len(conversations)
        # P(ACCEPT): 0.9 as a rule, 0.2 for targets marked خطأ, 0.5 (a coin toss) for targets marked غامض
        p = [0.2 if "خطأ" in c[-1]["content"] else 0.5 if "غامض" in c[-1]["content"] else 0.9 for c in conversations]
        return [[math.log(x), math.log(1 - x)] for x in p]

    def close(self):
        pass


@pytest.fixture
def corpus(tmp_path):
    rows = [{"translation": {"en": en, "ar": ar}} for en, ar in SENTENCES]
    rows[2]["translation"]["ar"] += " خطأ"
    rows[5]["translation"]["ar"] += " غامض"
    rows.append({"translation": {"en": "The weather is nice today.", "ar": "الطقس جميل اليوم."}})  # exact duplicate
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + ["{oops"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DatasetRef(path=str(path))


@pytest.fixture
def fake_judge(monkeypatch):
    judge = FakeJudge()

    def load(*args):
        judge.loads += 1
        return judge

    monkeypatch.setattr("hala.stages.filter_parallel.load_engine", load)
    monkeypatch.setattr("hala.stages.filter_parallel.resolve_model", lambda ref, revision=None: ref)
    return judge


JUDGE = Judge(model="org/judge", dataset=DatasetRef(path="org/data"), decision="generate")


def test_two_judge_workers_and_a_join_account_for_every_row(tmp_path, corpus, fake_judge):
    screened = screen_pairs(corpus, Filters(), Languages(), tmp_path / "screen")
    assert screened["screen_rows_in"] == 10 and screened["screen_survivors"] == 8 and screened["screen_rejected"] == 2
    shards = Sharding(size=3, workers=2)
    parts = [tmp_path / f"part{w}" for w in (0, 1)]
    done = [judge_pairs(tmp_path / "screen", JUDGE, "auto", parts[w], shards, worker=w, workers=2) for w in (0, 1)]
    assert [d["judged"] for d in done] == [5, 3]  # shards 0 and 2 (3 + 2 pairs), shard 1 (3 pairs)
    metrics = collect_pairs(tmp_path / "screen", parts, tmp_path / "out")
    assert metrics["rows_in"] == 10 and metrics["rows_kept"] == 6 and metrics["rows_rejected"] == 4
    assert metrics["rejected_judge_reject"] == 1 and metrics["rejected_judge_unparseable"] == 1
    assert metrics["rejected_exact_duplicate"] == 1 and metrics["rejected_bad_row"] == 1
    kept = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["row"] for r in kept + rejects) == list(range(1, 11))
    assert [r["row"] for r in kept] == [1, 2, 4, 5, 7, 8]  # input order survives the fan-out
    with pytest.raises(RuntimeError, match=r"parts do not add up: workers \[0\], declared \[2\]"):
        collect_pairs(tmp_path / "screen", parts[:1], tmp_path / "out2")


def test_rerun_reuses_the_screen_and_every_judged_shard(tmp_path, corpus, fake_judge):
    first = filter_corpus(corpus, Filters(), Languages(), tmp_path / "out", judge=JUDGE, shards=Sharding(size=3))
    assert first["shards"] == 3 and first["shards_reused"] == 0 and fake_judge.loads == 1 and fake_judge.seen == 8
    kept_before = (tmp_path / "out" / "pairs.jsonl").read_text(encoding="utf-8")
    second = filter_corpus(corpus, Filters(), Languages(), tmp_path / "out", judge=JUDGE, shards=Sharding(size=3))
    assert second["shards_reused"] == 3 and fake_judge.loads == 1 and fake_judge.seen == 8  # no model loaded again
    assert (tmp_path / "out" / "pairs.jsonl").read_text(encoding="utf-8") == kept_before
    assert {k: v for k, v in second.items() if k.startswith("rows")} == {k: v for k, v in first.items() if k.startswith("rows")}
    changed = JUDGE.model_copy(update={"prompt": "Faithful? ACCEPT or REJECT. {source} / {target}"})
    third = filter_corpus(corpus, Filters(), Languages(), tmp_path / "out", judge=changed, shards=Sharding(size=3))
    assert third["shards_reused"] == 0 and fake_judge.seen == 16  # a new prompt redoes every judged shard


@pytest.mark.parametrize("threshold, rejected", [(0.5, 1), (0.6, 2)])
def test_a_judge_by_probability_records_its_odds_and_obeys_the_threshold(tmp_path, corpus, fake_judge, threshold, rejected):
    judge = Judge(model="org/judge", dataset=DatasetRef(path="org/data"), threshold=threshold)
    assert judge.decision == "probability"  # the default
    metrics = filter_corpus(corpus, Filters(), Languages(), tmp_path / "out", judge=judge, shards=Sharding(size=3))
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    judged = sorted((r["judge_p_accept"], r["reason"]) for r in rejects if r["reason"].startswith("judge"))
    # the coin toss (0.5) passes a threshold of 0.5 and fails one of 0.6; nothing is unparseable
    assert judged == [(0.2, "judge: REJECT"), (0.5, "judge: REJECT")][:rejected]
    assert metrics.get("rejected_judge_unparseable", 0) == 0 and metrics["rejected_judge_reject"] == rejected

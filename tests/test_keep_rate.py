"""Stages that stop early: a canary shard before the fan-out, a running keep rate, and no empty output passed on."""

import json

import pytest
import yaml

from hala.engines import Completion
from hala.models import resolve_model
from hala.recipe import DatasetRef, Filters, Generation, Judge, Languages, Sharding, TranslationJob, parse_recipe
from hala.shards import CANARY, KeepRateError
from hala.stages.bootstrap_bilingual import bootstrap_bilingual
from hala.stages.filter_parallel import filter_corpus
from hala.translate_datasets import translate_datasets
from tests.fake_engine import PROMPT, FakeTranslator


def _instructions(tmp_path, n, name="rows.jsonl"):
    path = tmp_path / name
    rows = [{"instruction": f"Write sentence number {i} about the sea.", "response": f"The sea is wide, says line {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return DatasetRef(path=str(path))


def _shards_done(folder):
    return sorted(p.name for p in folder.rglob("*.done.json"))


def test_a_teacher_that_only_truncates_stops_in_the_bootstrap_canary(smoke_recipe, tmp_path):
    # The real tiny teacher, allowed one new token: every translation is cut, as with a real model and a short limit.
    data = yaml.safe_load(smoke_recipe.to_yaml())
    data["bootstrap"]["generation"]["max_new_tokens"] = 1
    recipe = parse_recipe(data, "test")
    with pytest.raises(KeepRateError) as err:
        bootstrap_bilingual(recipe, resolve_model("tiny:teacher"), tmp_path / "out")
    message = str(err.value)
    size = recipe.bootstrap.shards.size
    assert message.startswith(
        f"bootstrap: canary shard (0% kept, under min_keep_rate 0.5); stopped: kept 0 of {size} rows; "
        f"top reject reason: 'translation cut at max_new_tokens' ({size} rows); example: {{"
    ), message
    assert '"source_messages": [{"role": "user", "content": "' in message  # the example shows what was being translated
    assert len(_shards_done(tmp_path / "out")) == 1  # the rest of the stream was never sent to the model
    assert not (tmp_path / "out" / "bilingual.jsonl").exists()


class CollapsingTranslator(FakeTranslator):
    """Translates the first ``good`` requests, then cuts every answer (a model that degrades mid-run)."""

    def __init__(self, good):
        super().__init__()
        self.good = good

    def complete(self, conversations, generation, desc=""):
        out = super().complete(conversations, generation, desc)
        return [c if len(self.requests) - len(out) + i < self.good else Completion(c.text, c.tokens, True) for i, c in enumerate(out)]


def test_a_worker_whose_running_keep_rate_falls_stops_naming_the_reason(tmp_path, monkeypatch):
    engine = CollapsingTranslator(good=8)  # 4 rows of 2 turns
    monkeypatch.setattr("hala.translate_datasets.load_engine", lambda *args: engine)
    job = TranslationJob(generation=Generation(max_new_tokens=64), shards=Sharding(size=4))
    with pytest.raises(KeepRateError, match=r"^translate: worker 0's first 3 shards \(33% kept, under min_keep_rate 0.5\); stopped: kept 4 of 12 rows; top reject reason: 'translation cut at max_new_tokens' \(8 rows\)"):
        translate_datasets([_instructions(tmp_path, 40)], "fake", PROMPT, job, Languages(), "transformers", tmp_path / "out")
    assert len(_shards_done(tmp_path / "out")) == 3


def test_the_canary_task_does_the_first_shard_only_and_worker_0_reuses_it_from_a_shared_cache(tmp_path, monkeypatch):
    engine = FakeTranslator()
    monkeypatch.setattr("hala.translate_datasets.load_engine", lambda *args: engine)
    job = TranslationJob(generation=Generation(max_new_tokens=64), shards=Sharding(size=4, workers=2, cache=str(tmp_path / "cache")))
    ds = _instructions(tmp_path, 20)
    run = lambda worker, out: translate_datasets([ds], "fake", PROMPT, job, Languages(), "transformers", tmp_path / out, worker=worker, workers=2)  # noqa: E731
    canary = run(CANARY, "canary")
    assert canary["rows_in"] == 4 and canary["rows_kept"] == 4 and len(engine.requests) == 8
    assert json.loads((tmp_path / "canary" / "canary.json").read_text())["rows_in"] == 4
    assert not (tmp_path / "canary" / "part.json").exists()  # not a part: the join never sees it
    first = run(0, "w0")
    assert first["shards"] == 3 and first["shards_reused"] == 1  # shards 0, 2, 4; shard 0 is the canary's
    # A canary that keeps too little stops before any worker starts.
    engine.truncate_longer_than = 0
    ds = _instructions(tmp_path, 20, "other.jsonl")
    with pytest.raises(KeepRateError, match=r"^translate: canary shard \(0% kept"):
        translate_datasets([ds], "fake", PROMPT, job, Languages(), "transformers", tmp_path / "c2", worker=CANARY, workers=2)


def test_an_empty_output_is_an_error_naming_why_never_an_input(tmp_path, monkeypatch):
    engine = FakeTranslator(truncate_longer_than=0)
    monkeypatch.setattr("hala.translate_datasets.load_engine", lambda *args: engine)
    # min_keep_rate 0 turns the canary off; the empty result is still refused.
    job = TranslationJob(generation=Generation(max_new_tokens=64), shards=Sharding(size=4), min_keep_rate=0)
    with pytest.raises(KeepRateError, match=r"^translate: empty output; nothing to pass on: kept 0 of 6 rows; top reject reason: 'translation cut at max_new_tokens' \(6 rows\); example: "):
        translate_datasets([_instructions(tmp_path, 6)], "fake", PROMPT, job, Languages(), "transformers", tmp_path / "out")
    assert len((tmp_path / "out" / "rejects.jsonl").read_text().splitlines()) == 6  # the rejects stay to be read


class RejectingJudge:
    name = "fake"

    def choice_logprobs(self, conversations, choices, desc=""):
        return [[-5.0, -0.01] for _ in conversations]  # P(ACCEPT) ~ 0.7%

    def close(self):
        pass


def _pairs(tmp_path, n):
    path = tmp_path / "pairs.jsonl"
    rows = [{"translation": {"en": f"The market opens at {i} in the morning.", "ar": f"يفتح السوق في الساعة {i} صباحا."}} for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return DatasetRef(path=str(path))


def test_a_judge_that_rejects_everything_stops_at_its_canary_and_empty_heuristics_stop_the_filter(tmp_path, monkeypatch):
    monkeypatch.setattr("hala.stages.filter_parallel.load_engine", lambda *args: RejectingJudge())
    monkeypatch.setattr("hala.stages.filter_parallel.resolve_model", lambda ref, revision=None: ref)
    judge = Judge(model="org/judge", dataset=DatasetRef(path="org/data"))
    with pytest.raises(KeepRateError, match=r"^filter: judge: canary shard \(0% kept, under min_keep_rate 0.1\); stopped: kept 0 of 5 rows; top reject reason: 'judge: REJECT' \(5 rows\); example: .*judge_p_accept"):
        filter_corpus(_pairs(tmp_path, 12), Filters(), Languages(), tmp_path / "out", judge=judge, shards=Sharding(size=5))
    strict = Filters(max_chars=5)  # every pair is too long
    with pytest.raises(KeepRateError, match=r"^filter: heuristic checks: empty output; nothing to pass on: kept 0 of 12 rows; top reject reason: "):
        filter_corpus(_pairs(tmp_path, 12), strict, Languages(), tmp_path / "out2", judge=judge)


"""The job-size estimate: rows x tokens per row, measured as the stages cut and prompt their data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hala.job_size import SAMPLE_ROWS, estimate
from hala.recipe import load_recipe

DATA = Path(__file__).resolve().parents[1] / "hala" / "data" / "smoke"


def _work(size, stage):
    return next(w for w in size.works if w.stage == stage)


@pytest.fixture(scope="module")
def smoke_size(smoke_recipe):
    return estimate(smoke_recipe)


def _tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _prompt_tokens(tok, text):
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return len(tok(rendered, add_special_tokens=False)["input_ids"])


def _count(tok, text):
    return len(tok(text, add_special_tokens=False)["input_ids"])


def test_the_gate_is_sized_by_its_held_out_references_twice(smoke_size, smoke_recipe, tiny):
    # Read apart from hala's readers: lines 151-180 of the bundled set are the gate's rows (skip 150, limit 30).
    rows = [json.loads(line)["translation"] for line in (DATA / "parallel_en_ar.jsonl").read_text().splitlines()][150:180]
    tok = _tokenizer(tiny("teacher"))
    gate = _work(smoke_size, "1b. FP8 gate (original, then FP8)")
    assert (gate.rows, gate.rows_from, gate.sampled, gate.requests) == (30, "recipe limit", 30, 2.0)
    cap = smoke_recipe.teacher.generation.max_new_tokens
    assert gate.generated == pytest.approx(2 * sum(min(_count(tok, r["ar"]), cap) for r in rows) / 30)
    prompt = smoke_recipe.bootstrap.prompt
    assert gate.prompt == pytest.approx(2 * sum(_prompt_tokens(tok, prompt.format(text=r["en"])) for r in rows) / 30)
    assert gate.total("generated") == round(gate.generated * 30)


def test_bootstrap_requests_and_prompts_are_what_the_stage_sends(smoke_size, smoke_recipe, tiny):
    from hala.corpora import iter_conversations
    from hala.engines import Completion
    from hala.translate_datasets import _translate_shard

    tok = _tokenizer(tiny("teacher"))

    class Recording:
        """Stands in for the teacher's engine: records each request, answers with nothing."""

        sent: list = []

        def count_tokens(self, text):
            return _count(tok, text)

        def complete(self, conversations, generation, desc=""):
            self.sent.extend(conversations)
            return [Completion("", 0, False) for _ in conversations]

    section = smoke_recipe.bootstrap
    items = [(section.dataset.path, row) for row in iter_conversations(section.dataset)]
    assert len(items) < SAMPLE_ROWS  # so the estimate measured every row the stage reads
    engine = Recording()
    _translate_shard(items, engine, section.prompt, section, smoke_recipe.languages)
    work = _work(smoke_size, "2. bootstrap")
    assert work.rows == len(items) == work.sampled
    assert work.total("requests") == len(engine.sent) > len(items)  # question and response: two requests a row
    sent_prompts = sum(_prompt_tokens(tok, c[0]["content"]) for c in engine.sent)
    assert work.total("prompt") == sent_prompts
    # Each request's answer: its source length times the ar/en token ratio of the gate set, at most max_new_tokens.
    pairs = [json.loads(line)["translation"] for line in (DATA / "parallel_en_ar.jsonl").read_text().splitlines()][150:180]
    ratio = sum(_count(tok, p["ar"]) for p in pairs) / sum(_count(tok, p["en"]) for p in pairs)
    prefix, suffix = section.prompt.split("{text}")
    sources = [c[0]["content"].removeprefix(prefix).removesuffix(suffix) for c in engine.sent]
    cap = section.generation.max_new_tokens
    assert work.total("generated") == sum(min(math.ceil(_count(tok, s) * ratio), cap) for s in sources)
    assert f"{ratio:.2f} ar tokens per en token" in work.note


def test_the_corpus_adds_its_datasets_and_the_judge_scores_without_generating(smoke_size, smoke_recipe):
    corpus = _work(smoke_size, "5. translate corpus")
    lines = [sum(1 for _ in open(DATA / Path(ds.path.removeprefix("bundled:smoke/")))) for ds in smoke_recipe.corpus.datasets]
    assert [p.rows for p in corpus.parts] == lines and corpus.rows == sum(lines)
    assert corpus.total("generated") == sum(p.total("generated") for p in corpus.parts) > 0
    judge = _work(smoke_size, "3. judge")
    assert judge.rows == 180 and judge.requests == 1.0 and judge.generated == 0.0  # decided by the odds of its answer
    assert smoke_size.generated == sum(w.total("generated") for w in smoke_size.works)
    assert smoke_size.unmeasured == []


def test_offline_a_hub_recipe_keeps_its_row_counts_and_says_what_was_not_measured():
    size = estimate(load_recipe("hala-nano"))
    bootstrap = _work(size, "2. bootstrap")
    assert (bootstrap.rows, bootstrap.rows_from, bootstrap.generated) == (405_000, "recipe limit", None)
    assert bootstrap.note == "not measured: the hub did not answer (tokenizer of CohereLabs/command-a-translate-08-2025)"
    corpus = _work(size, "5. translate corpus")
    assert corpus.rows == 4_500_073  # the recipe's limits (README, "The paper's data mix")
    assert len(size.unmeasured) == 5 and size.generated == 0
    assert size.summary().startswith("tokens to generate: 0 in the 0 of 5 stages measured (not: 1b. FP8 gate")


def test_a_tokenizer_that_cannot_be_read_is_named_in_its_row(smoke_recipe, tmp_path):
    (tmp_path / "config.json").write_text("{}")  # a model folder without a tokenizer
    recipe = smoke_recipe.model_copy(update={"judge": smoke_recipe.judge.model_copy(update={"model": str(tmp_path)})})
    judge = _work(estimate(recipe), "3. judge")
    assert judge.generated is None and judge.rows == 180
    assert judge.note.startswith(f"not measured: no tokenizer loads from {tmp_path} (ValueError: Couldn't instantiate the backend tokenizer")


def test_an_s3_model_lends_only_its_tokenizer_files(s3_env, tiny, tmp_path, monkeypatch):
    from hala.job_size import _Tokenizer
    from hala.storage import ObjectStore

    local = tiny("translator-base")  # before the cache moves: tiny models live in it
    monkeypatch.setenv("HALA_CACHE", str(tmp_path / "cache"))
    store = ObjectStore.from_env()
    uri = f"s3://{s3_env['bucket']}/job-size/translator"
    store.upload_dir(Path(local), uri)
    ours = _Tokenizer(uri, None, None)
    fetched = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert "tokenizer.json" in fetched and not any(name.endswith(".safetensors") for name in fetched)
    text = "Translate from English to Arabic: the cat sat on the mat"
    assert ours.count(text) == _count(_tokenizer(local), text)

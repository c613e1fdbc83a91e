"""Checks of a whole smoke run, shared by both runners: a test module subclasses ``RunChecks`` and
gives ``any_run`` (its run folder and summary); tests/test_pipeline.py runs the tasks as processes,
tests/test_containers.py in their images."""

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hala.corpora import bundled_path, file_hash
from tests.slerp_reference import slerp

BUNDLED = Path(__file__).resolve().parents[1] / "hala" / "data" / "smoke"

# Planted in every secret-bearing variable for the whole smoke run: none may reach anything it writes.
PLANTED = {
    "HF_TOKEN": "hf_plantedSecret7c1d9e",
    "MLFLOW_TRACKING_PASSWORD": "planted-password-8f3e",
    "MLFLOW_TRACKING_TOKEN": "planted-mlflow-token-2d6c",
    "KF_PIPELINES_TOKEN": "planted-kfp-token-9a4b",
}
# Set too, but an identity, not a secret: MLflow records the tracking username as its runs' user.
IDENTITY = {"MLFLOW_TRACKING_USERNAME": "planted-user-5b2a"}


@contextmanager
def planted_secrets(extra: dict[str, str] | None = None):
    """PLANTED, IDENTITY (and ``extra``) in os.environ for the block; the previous values after it."""
    values = {**PLANTED, **IDENTITY, **(extra or {})}
    with mock.patch.dict(os.environ, values):
        yield values


@contextmanager
def output_to(path: Path):
    """Everything the block prints or logs into ``path``: file descriptors 1 and 2 (this process and its
    children), sys.stdout and sys.stderr, and every logging stream handler (kfp.local's among them,
    which streams its tasks' output)."""
    import logging

    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_fds = os.dup(1), os.dup(2)
    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    with path.open("wb") as log, open(log.fileno(), "w", encoding="utf-8", closefd=False) as text:
        swapped = []
        for handler in {h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}:
            try:
                swapped.append((handler, handler.setStream(text)))
            except AttributeError:  # a handler whose stream is fixed (sys.stderr's own, swapped below)
                pass
        saved_sys = sys.stdout, sys.stderr
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout = sys.stderr = text
        try:
            yield
        finally:
            text.flush()
            sys.stdout, sys.stderr = saved_sys
            for handler, stream in swapped:
                handler.setStream(stream)
            # Handlers made during the block took the log as their stream: back to the real stdout.
            for lg in [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]:
                for handler in lg.handlers:
                    if getattr(handler, "stream", None) is text:
                        handler.setStream(sys.stdout)
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            os.close(saved_fds[0])
            os.close(saved_fds[1])


def leaks(folder: Path, secrets: dict[str, str]) -> list[str]:
    """Every (file, variable) where a secret's value appears in a file under ``folder``."""
    found = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(folder)}: {name}" for name, value in secrets.items() if value.encode() in data]
    return found


def _client(summary):
    import mlflow

    mlflow.set_tracking_uri(summary["mlflow"]["tracking_uri"])
    return mlflow.MlflowClient()


# The stage runs that open a generation engine or an lm-eval model (the vllm family's).
ENGINE_STAGES = {
    "gate_teacher", "bootstrap_bilingual[0]", "judge_pairs[0]", "judge_pairs[1]", "judge_pairs[canary]", "evaluate_translator",
    "translate_corpus[0]", "translate_corpus[1]", "translate_corpus[canary]", "evaluate_student[nano-s]", "evaluate_student[nano-m]",
}  # fmt: skip


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


class RunChecks:
    """What a finished smoke run must have left behind, whichever runner ran its tasks.

    A runner's module also gives ``run_secrets``, the secret values its run had in its environment,
    and ``run_engine``, the engine (name, release) its generating stages must have run on.
    """

    def test_no_secret_reached_any_file_log_or_mlflow_record_of_the_run(self, any_run, run_secrets):
        out, _ = any_run
        # run.log holds every line the run printed; mlflow.db its params, tags and metrics; the rest its artifacts.
        assert (out / "run.log").stat().st_size > 0 and list(out.rglob("mlflow.db"))
        found = leaks(out, run_secrets)
        assert found == [], found
        # The search finds what is there: the username, an identity MLflow records as the runs' user.
        assert any(f.endswith(": MLFLOW_TRACKING_USERNAME") for f in leaks(out, IDENTITY))

    def test_every_generating_and_evaluating_stage_names_its_engine(self, any_run, run_engine):
        """summary.json says which engine (and release, and device) each stage ran on, as its MLflow run does."""
        _, summary = any_run
        assert set(summary["engines"]) == ENGINE_STAGES
        name, version = run_engine
        assert {stage: engine["name"] for stage, engine in summary["engines"].items()} == dict.fromkeys(ENGINE_STAGES, name)
        assert {(e["version"], e["device"]) for e in summary["engines"].values()} == {(version, "cpu")}
        # The stage runs carry the same tags, for a user who looks in MLflow instead.
        client = _client(summary)
        parent_id = summary["mlflow"]["parent_run_id"]
        runs = client.search_runs([client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
        assert {r.info.run_name: r.data.tags["hala.engine.name"] for r in runs if "hala.engine.name" in r.data.tags} == dict.fromkeys(ENGINE_STAGES, name)

    def test_summary_locates_every_artifact(self, any_run):
        out, summary = any_run
        assert json.loads((out / "summary.json").read_text()) == summary
        arts = summary["artifacts"]
        for key in ("fp8_teacher", "bilingual_data", "filtered_pairs", "translator", "arabic_corpus", "translator_evaluation"):
            assert Path(arts[key]).exists(), key
        assert set(arts["students"]) == {"nano-s", "nano-m"}
        for info in arts["students"].values():
            assert (Path(info["sft_checkpoint"]) / "model.safetensors").is_file()
            assert (Path(info["merged"]["uri"]) / "model.safetensors").is_file()
            assert info["merged"]["t"] in (0.3, 0.5) and set(info["merged"]["sweep"]) == {"0.30", "0.50"}
            assert info["merged"]["uri"].endswith(f"/t{info['merged']['t']:.2f}")
            assert info["merged"]["other"] == str(Path(info["sft_checkpoint"]).resolve())
            assert Path(info["evaluation"]).is_file()
        if summary["runner"] == "subprocess":
            assert summary["mlflow"]["tracking_uri"] == f"sqlite:///{out.resolve()}/mlflow.db"
        else:  # the recipe's server
            assert summary["mlflow"]["tracking_uri"].startswith("http://127.0.0.1:")
        report = (out / "report" / "report.md").read_text(encoding="utf-8")
        assert "### nano-s" in report and "| **average** |" in report and (out / "report" / "loss_curves.png").is_file()

    def test_data_stages_conserve_rows(self, any_run):
        _, summary = any_run
        m = summary["metrics"]
        assert m["bootstrap"]["rows_in"] == 60 == m["bootstrap"]["rows_kept"] + m["bootstrap"]["rows_rejected"]
        assert m["bootstrap"]["shards"] == 2 and m["bootstrap"]["tokens_per_s"] > 0
        assert m["filter"]["rows_in"] == 180 == m["filter"]["rows_kept"] + m["filter"]["rows_rejected"]
        kept = _rows(Path(summary["artifacts"]["filtered_pairs"]) / "pairs.jsonl")
        rejected = _rows(Path(summary["artifacts"]["filtered_pairs"]) / "rejects.jsonl")
        assert len(kept) == m["filter"]["rows_kept"] and len(rejected) == m["filter"]["rows_rejected"]
        assert sorted(r["row"] for r in kept + rejected) == list(range(1, 181))  # every candidate once
        assert all(r["reason"] for r in rejected)
        # The 10 planted untranslated copies never reach the judge: the heuristics name them.
        assert sum(r["reason"] == "untranslated copy" for r in rejected) == m["filter"]["rejected_untranslated_copy"] == 10
        # One misaligned pair answers a question ("How much is this shirt?") with an unrelated sentence.
        assert m["filter"]["rejected_answered_instead_of_translated"] == 1
        # Every pair the heuristics passed was decided by the judge's odds of ACCEPT over REJECT.
        judge_rejects = [r for r in rejected if r["reason"].startswith("judge:")]
        assert m["filter"]["rows_kept"] + len(judge_rejects) == 180 - 11
        assert all(r["reason"] == "judge: REJECT" and 0.0 <= r["judge_p_accept"] < 0.5 for r in judge_rejects)

    def test_corpus_translation_is_faithful_and_fans_out(self, any_run):
        _, summary = any_run
        m = summary["metrics"]["corpus"]
        assert m["rows_in"] == 46 == m["rows_kept"] + m["rows_rejected"]
        assert m["shards"] == 3 and m["tokens_per_s"] > 0
        folder = Path(summary["artifacts"]["arabic_corpus"])
        corpus, rejects = _rows(folder / "corpus.jsonl"), _rows(folder / "rejects.jsonl")
        assert len(corpus) == m["rows_kept"] >= 30 and all(r["reason"] for r in rejects)
        sources = {
            (f"bundled:smoke/{name}", n): json.loads(line)
            for name in ("instructions_more_en.jsonl", "instructions_features_en.jsonl")
            for n, line in enumerate((BUNDLED / name).read_text().splitlines(), 1)
        }
        assert sorted((r["dataset"], r["row"]) for r in corpus + rejects) == sorted(sources)
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        for row in corpus:  # every turn translated, roles and order kept, the system turn kept as is (policy: keep)
            source = sources[(row["dataset"], row["row"])]["conversations"]
            assert [t["role"] for t in row["messages"]] == [roles[t["from"]] for t in source]
            for turn, original in zip(row["messages"], source, strict=True):
                if original["from"] == "system":
                    assert turn["content"] == original["value"]
                if "```" in original["value"]:
                    assert 'print("Hello")' in turn["content"] and turn["content"].count("```") == 2
        # Two workers each did their share of the three shards and one task joined them.
        run_folder = Path(summary["artifacts"]["arabic_corpus"]).parent.parent
        parts = [json.loads(p.read_text()) for p in run_folder.glob("for-loop-*/translate-corpus*/part/part.json")]
        assert sorted((p["worker"], p["workers"], p["total_shards"]) for p in parts) == [(0, 2, 3), (1, 2, 3)]
        judged = [json.loads(p.read_text()) for p in run_folder.glob("for-loop-*/judge-pairs*/part/part.json")]
        assert sorted(p["worker"] for p in judged) == [0, 1]
        # Before the two workers, a canary task did the first shard and found enough kept.
        (canary,) = [json.loads(p.read_text()) for p in run_folder.glob("translate-corpus*/part/canary.json")]
        assert canary["rows_in"] == 16 and canary["rows_kept"] >= 8

    def test_fp8_gate_compared_real_translations(self, any_run):
        _, summary = any_run
        gate = summary["metrics"]["fp8_gate"]
        assert gate["gate_samples"] == 30
        # The gate's rows are held out of the tiny teacher's training (hala.tiny.HELD_OUT): it translates
        # some of them, and neither copy can score the 100 of rows learnt by heart.
        assert 5 < gate["chrf_original"] < 60 and 5 < gate["chrf_fp8"] < 60
        assert gate["chrf_drop"] <= 2.0
        # Stage 1a's figures travel with the gate's: the FP8 copy is smaller than the original.
        assert gate["compression_ratio"] > 1.5 and gate["fp8_bytes"] < gate["teacher_bytes"]
        with safe_open(str(Path(summary["artifacts"]["fp8_teacher"]) / "model.safetensors"), "pt") as st:
            dtypes = {st.get_tensor(k).dtype for k in st.keys() if k.endswith("proj.weight")}
        assert dtypes == {torch.float8_e4m3fn}

    def test_translator_improves_over_its_base(self, any_run):
        _, summary = any_run
        tr = summary["metrics"]["translation"]
        assert tr["after"]["pairs"] == 30
        assert tr["after"]["chrf"] > tr["before"]["chrf"] + 5
        assert set(tr["after"]) >= {"chrf", "chrf_pp", "bleu"}

    def test_students_evaluated_on_six_benchmarks_for_base_sft_merged(self, any_run):
        _, summary = any_run
        for name, roles in summary["metrics"]["students"].items():
            assert set(roles) == {"base", "sft", "merged", "merged_t0.30", "merged_t0.50"}, name
            best = summary["artifacts"]["students"][name]["merged"]["t"]
            assert roles["merged"] == roles[f"merged_t{best:.2f}"]
            for role, scores in roles.items():
                # OALL v2 on the 0-100 scale: a task is the mean of its subsets (two per task in the
                # fixtures, EXAMS has one), the average the mean of the six tasks.
                tasks = ("alghafa", "arabic_mmlu", "exams", "madinah_qa", "aratrust", "arbmmlu_ht")
                assert {k: len(v) for k, v in scores["subsets"].items()} == {k: 1 if k == "exams" else 2 for k in tasks}
                for task in tasks:
                    subsets = list(scores["subsets"][task].values())
                    assert scores[task] == pytest.approx(sum(subsets) / len(subsets))
                    assert all(0.0 <= a <= 100.0 for a in subsets)
                assert scores["average"] == pytest.approx(sum(scores[k] for k in tasks) / 6)
                assert scores["chat_template"] is True

    def test_merged_model_is_slerp_of_base_and_sft(self, any_run):
        _, summary = any_run
        info = summary["artifacts"]["students"]["nano-s"]
        base = load_file(Path(info["merged"]["base"]) / "model.safetensors")
        sft = load_file(Path(info["sft_checkpoint"]) / "model.safetensors")
        merged = load_file(Path(info["merged"]["uri"]) / "model.safetensors")
        assert set(merged) == set(base)
        for name in base:
            expected = slerp(base[name].numpy(), sft[name].numpy(), info["merged"]["t"])
            np.testing.assert_allclose(merged[name].numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=name)

    def test_mlflow_holds_parent_nested_runs_and_registered_versions(self, any_run):
        _, summary = any_run
        client = _client(summary)
        parent_id = summary["mlflow"]["parent_run_id"]
        parent = client.get_run(parent_id)
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["hala.recipe_hash"] == summary["recipe_hash"]
        children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
        names = sorted(r.info.run_name for r in children)
        assert names == sorted(
            ["quantize_teacher", "gate_teacher", "bootstrap_bilingual", "filter_parallel", "train_translator", "evaluate_translator", "translate_corpus"]
            + ["bootstrap_bilingual[0]", "screen_pairs", "judge_pairs[0]", "judge_pairs[1]", "translate_corpus[0]", "translate_corpus[1]"]
            + ["judge_pairs[canary]", "translate_corpus[canary]"]  # two workers each: a canary shard first
            + [f"{stage}[{s}]" for s in ("nano-s", "nano-m") for stage in ("train_student", "merge_student", "evaluate_student")]
            + ["register_models"]  # it logs the registered models
        )
        assert all(r.info.status == "FINISHED" for r in children)
        assert "report/report.md" in {a.path for a in client.list_artifacts(parent_id, "report")}
        by_name = {r.info.run_name: r for r in children}
        artifacts = {name: {a.path for a in client.list_artifacts(r.info.run_id, "samples")} | {a.path for a in client.list_artifacts(r.info.run_id)} for name, r in by_name.items()}
        assert {"samples/kept.jsonl", "samples/rejects.jsonl"} <= artifacts["filter_parallel"]
        assert "benchmark_results.json" in artifacts["evaluate_student[nano-s]"]
        assert "translation_scores.json" in artifacts["evaluate_translator"]
        assert {"mergekit_config_t0.30.json", "mergekit_config_t0.50.json"} <= artifacts["merge_student[nano-m]"]
        train = by_name["train_translator"]
        assert len(client.get_metric_history(train.info.run_id, "loss")) >= 2  # the loss curve

        registered = summary["registered"]
        assert set(registered) == {"hala-smoke-teacher-fp8", "hala-smoke-translator", "hala-smoke-nano-s", "hala-smoke-nano-m"}
        for name, info in registered.items():
            version = client.get_model_version_by_alias(name, "challenger")
            assert str(version.version) == info["version"]
            assert version.tags["hala.recipe_hash"] == summary["recipe_hash"]
            assert version.tags["hala.source_run"] == parent_id
            assert version.tags["hala.data_hash.arabic_corpus"] == summary["data_hashes"]["arabic_corpus"]
            # Lineage: the version of every model and dataset the stages read, as the stages recorded it.
            sources = {k: v for k, v in version.tags.items() if k.startswith("hala.source.")}
            assert set(sources) == {
                "hala.source.tiny_teacher", "hala.source.tiny_judge", "hala.source.tiny_translator-base",
                "hala.source.tiny_student-s", "hala.source.tiny_student-m", "hala.source.bundled_smoke/parallel_en_ar.jsonl",
                "hala.source.bundled_smoke/instructions_en.jsonl", "hala.source.bundled_smoke/parallel_candidates_en_ar.jsonl",
                "hala.source.bundled_smoke/instructions_more_en.jsonl", "hala.source.bundled_smoke/instructions_features_en.jsonl",
            }, name  # fmt: skip
            assert sources["hala.source.tiny_judge"] == by_name["judge_pairs[0]"].data.tags["hala.source.tiny_judge"]
            assert sources["hala.source.bundled_smoke/instructions_en.jsonl"] == file_hash(bundled_path("smoke/instructions_en.jsonl"))
        student = client.get_model_version_by_alias("hala-smoke-nano-m", "challenger")
        merge_tag = json.loads(student.tags["hala.merge"])
        assert merge_tag["t"] == summary["artifacts"]["students"]["nano-m"]["merged"]["t"] and set(merge_tag["sweep"]) == {"0.30", "0.50"}

    def test_registered_versions_are_mlflow_models_with_their_scores_and_lineage(self, any_run):
        from mlflow.entities import LoggedModelStatus

        from hala.registry import model_metrics, version_model_id

        _, summary = any_run
        client = _client(summary)
        parent_id = summary["mlflow"]["parent_run_id"]
        children = client.search_runs([client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
        by_name = {r.info.run_name: r for r in children}
        # The summary names the teacher the FP8 copy was made from, at the version the quantize stage read.
        assert summary["teacher"] == {
            "model": "tiny:teacher", "revision": None, "reused_fp8": None,
            "version": by_name["quantize_teacher"].data.tags["hala.source.tiny_teacher"],
        }  # fmt: skip
        teacher = client.get_model_version_by_alias("hala-smoke-teacher-fp8", "challenger")
        assert (teacher.tags["hala.teacher"], teacher.tags["hala.teacher.version"]) == ("tiny:teacher", summary["teacher"]["version"])
        for name, info in summary["registered"].items():
            version = client.get_model_version_by_alias(name, "challenger")
            assert version_model_id(version) == info["model_id"] and version.source == f"models:/{info['model_id']}"
            logged = client.get_logged_model(info["model_id"])
            assert logged.source_run_id == by_name["register_models"].info.run_id and logged.status == LoggedModelStatus.READY
        # The six OALL v2 task scores and their average are the student model's own metrics (what promotion reads).
        student = client.get_model_version_by_alias("hala-smoke-nano-m", "challenger")
        merged = summary["metrics"]["students"]["nano-m"]["merged"]
        expected = {k: v for k, v in merged.items() if isinstance(v, float)} | {"base_average": summary["metrics"]["students"]["nano-m"]["base"]["average"]}
        assert len(expected) == 8 and model_metrics(client, student) == pytest.approx(expected)
        translator = client.get_model_version_by_alias("hala-smoke-translator", "challenger")
        assert {"chrf", "chrf_pp", "bleu"} <= set(model_metrics(client, translator))
        assert model_metrics(client, teacher)["chrf_drop"] == summary["metrics"]["fp8_gate"]["chrf_drop"]

        # Loadable by alias as MLflow users load models, replying through its own chat template.
        import mlflow

        pipe = mlflow.transformers.load_model("models:/hala-smoke-nano-m@challenger")
        reply = pipe([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=4, do_sample=False)
        assert reply[0]["generated_text"][-1]["role"] == "assistant"
        checkpoint = Path(summary["artifacts"]["students"]["nano-m"]["merged"]["uri"])
        assert pipe.tokenizer.chat_template == (checkpoint / "chat_template.jinja").read_text()

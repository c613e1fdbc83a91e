"""The whole smoke pipeline through kfp.local, every task a process here, once per module; then checks
of what it left behind (tests/pipeline_checks.py, shared with the containerized run), a failing
run and a run that reuses the first one's outputs."""

from pathlib import Path

import pytest
from safetensors.torch import load_file

from hala.recipe import load_recipe
from tests.pipeline_checks import PLANTED, RunChecks, output_to, planted_secrets

pytestmark = pytest.mark.slow


# A planted S3 secret too: the subprocess run has no bucket, so nothing may even have read it.
S3_SECRET = {"AWS_SECRET_ACCESS_KEY": "planted-s3-secret-4e7f"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from pipelines.local import run_local

    out = tmp_path_factory.mktemp("smoke-run")
    with planted_secrets(S3_SECRET), output_to(out / "run.log"):
        summary = run_local(load_recipe("smoke"), out)
    return out, summary


@pytest.fixture(scope="module")
def any_run(smoke_run):
    return smoke_run


@pytest.fixture(scope="module")
def run_engine():
    import transformers

    # the smoke recipe's engine
    return "transformers", transformers.__version__


@pytest.fixture(scope="module")
def run_secrets():
    return {**PLANTED, **S3_SECRET}


class TestSubprocessRun(RunChecks):
    """Every task a process in this environment. The checks are tests/pipeline_checks.py's."""

    def test_the_local_registry_shares_the_weights_and_deploy_points_at_it(self, smoke_run, tmp_path):
        import os
        import subprocess
        import sys

        import mlflow
        import yaml

        out, summary = smoke_run
        client = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"], registry_uri=summary["mlflow"]["tracking_uri"])
        location = client.get_model_version_download_uri("hala-smoke-nano-m", summary["registered"]["hala-smoke-nano-m"]["version"])
        assert location.startswith(f"file://{out.resolve()}/mlartifacts/")
        # No second copy of the weights on the local run: the registry's file is the merge's output, hard-linked.
        stored = Path(location.removeprefix("file://")) / "model" / "model.safetensors"
        merged = Path(summary["artifacts"]["students"]["nano-m"]["merged"]["uri"]) / "model.safetensors"
        assert os.stat(stored).st_ino == os.stat(merged).st_ino
        # hala deploy --dry-run: the values point at the registry's copy, and say the pods cannot read this machine's files.
        done = subprocess.run(
            [sys.executable, "-m", "hala", "deploy", "hala-smoke-nano-m", "--alias", "challenger", "--tracking-uri",
             summary["mlflow"]["tracking_uri"], "--out", str(tmp_path), "--dry-run"],
            capture_output=True, text=True, timeout=1800,  # a hang guard, not a speed claim
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        values = yaml.safe_load((tmp_path / "hala-serving.serving-values.yaml").read_text())
        assert values["models"][0]["source"] == f"{location}/model"
        assert "which the serving pods cannot read: they sync from s3:// only" in done.stderr


def test_failed_stage_marks_runs_failed_and_keeps_finished_artifacts(tmp_path):
    import subprocess
    import sys

    import mlflow
    import yaml

    gate = tmp_path / "gate.jsonl"
    gate.write_text('{"translation": {"en": "Hello.", "ar": "مرحبا."}}\n{"translation": {"en": "Broken."}}\n', encoding="utf-8")
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["teacher"]["gate_dataset"] = {"path": str(gate)}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "hala", "run", "--recipe", str(recipe), "--out", str(out)],
        capture_output=True, text=True, timeout=1800,  # a hang guard, not a speed claim
    )
    assert proc.returncode == 1
    assert "pipeline failed" in proc.stderr
    assert "row 2: translation.ar is missing" in proc.stdout + proc.stderr
    assert not (out / "summary.json").exists()
    # The task that finished before the failure left its artifact.
    assert len(list(out.glob("artifacts/*/open-run/mlflow_run"))) == 1

    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow.db")
    experiment = client.get_experiment_by_name("hala-smoke")
    runs = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert runs.pop("smoke-pipeline") == "FAILED" and runs.pop("quantize_teacher") == "FAILED"
    # Only stages that need nothing from the teacher may have run (kfp.local picks their order), and they finished.
    assert set(runs) <= {"screen_pairs"} and all(status == "FINISHED" for status in runs.values())


def test_rerun_reuses_earlier_outputs_and_skips_their_stages(smoke_run, s3_env, tmp_path):
    """Every stage up to student training replaced by the first run's outputs, two of them read from S3."""
    import mlflow
    import yaml

    from hala.recipe import parse_recipe
    from hala.storage import ObjectStore
    from pipelines.local import run_local

    _, first = smoke_run
    arts = first["artifacts"]
    store = ObjectStore.from_env()
    translator_uri = f"s3://{s3_env['bucket']}/earlier-run/translator"
    checkpoint_uri = f"s3://{s3_env['bucket']}/earlier-run/nano-s/checkpoint"
    store.upload_dir(Path(arts["translator"]), translator_uri)
    store.upload_dir(Path(arts["students"]["nano-s"]["sft_checkpoint"]), checkpoint_uri)
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["students"]["models"] = [m for m in data["students"]["models"] if m["name"] == "nano-s"]
    data["reuse"] = {
        "fp8_teacher": arts["fp8_teacher"],
        "bilingual": arts["bilingual_data"],
        "pairs": arts["filtered_pairs"],
        "translator": translator_uri,
        "corpus": arts["arabic_corpus"],
        "students": {"nano-s": checkpoint_uri},
    }
    summary = run_local(parse_recipe(data, "reuse"), tmp_path)

    # Only the stages after the reused outputs ran.
    client = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"])
    parent_id = summary["mlflow"]["parent_run_id"]
    children = client.search_runs([client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.info.run_name for r in children) == ["evaluate_student[nano-s]", "evaluate_translator", "merge_student[nano-s]", "register_models"]
    assert not list((tmp_path / "artifacts").glob("*/quantize-teacher"))
    out = summary["artifacts"]
    assert out["fp8_teacher"] == arts["fp8_teacher"] and out["translator"] == translator_uri
    assert out["students"]["nano-s"]["sft_checkpoint"] == checkpoint_uri
    # The same data, so the same lineage hashes; the translator read from S3 scores as it did.
    assert summary["data_hashes"] == first["data_hashes"]
    assert summary["metrics"]["translation"]["after"] == first["metrics"]["translation"]["after"]
    assert summary["metrics"]["students"]["nano-s"]["base"] == first["metrics"]["students"]["nano-s"]["base"]
    merged = load_file(str(Path(out["students"]["nano-s"]["merged"]["uri"]) / "model.safetensors"))
    sft = load_file(str(Path(arts["students"]["nano-s"]["sft_checkpoint"]) / "model.safetensors"))
    assert merged.keys() == sft.keys()
    teacher = client.get_model_version_by_alias("hala-smoke-teacher-fp8", "challenger")
    # The reused FP8 copy is registered again as this run's MLflow Model, and says where it came from.
    assert teacher.source == f"models:/{summary['registered']['hala-smoke-teacher-fp8']['model_id']}"
    assert teacher.tags["hala.source_run"] == parent_id and teacher.tags["hala.teacher.version"] == f"reused FP8 copy {arts['fp8_teacher']}"
    assert summary["teacher"] == {"model": "tiny:teacher", "revision": None, "version": None, "reused_fp8": arts["fp8_teacher"]}

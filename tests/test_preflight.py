"""The pipeline's preflight: every problem listed in seconds, before any GPU work."""

import io
import shutil
import socket
import time

import pytest
import yaml

from hala import benchmarks
from hala.preflight import PreflightError, check_run
from hala.recipe import load_recipe, parse_recipe


def test_the_smoke_recipe_passes_every_check(smoke_recipe, tmp_path):
    passed = check_run(smoke_recipe, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert f"MLflow at sqlite:///{tmp_path / 'mlflow.db'}" in passed
    assert "students.models[1].base: model tiny:student-m" in passed
    # MLflow, 3 models + the students, 4 datasets + the corpus sets, the six benchmark tasks
    assert len(passed) == 1 + 3 + len(smoke_recipe.students.models) + 4 + len(smoke_recipe.corpus.datasets) + 6
    assert "evaluation.benchmarks[aratrust]: fixtures" in passed


def test_every_problem_is_listed_by_name(s3_env, monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["storage"] = {"uri": "s3://no-such-bucket-here/runs"}
    data["cluster"] = {"secrets": [{"name": "hala-hf", "env": {"HF_TOKEN_FOR_TEST": "token"}}]}
    data["translator"]["base"] = "s3://hala-test/models/none-such"
    data["judge"]["model"] = "Qwen/Qwen2.5-3B-Instruct"  # a hub id: unreachable from here
    data["corpus"]["datasets"].append({"path": "s3://hala-test/data/none-such.jsonl"})
    recipe = parse_recipe(data, "test")
    shutil.copytree(benchmarks.FIXTURES, tmp_path / "benchmarks")
    shutil.rmtree(tmp_path / "benchmarks" / "exams")
    monkeypatch.setattr(benchmarks, "FIXTURES", tmp_path / "benchmarks")
    monkeypatch.delenv("HF_TOKEN_FOR_TEST", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(PreflightError) as err:
        check_run(recipe, f"http://127.0.0.1:{closed}")
    assert time.monotonic() - start < 60
    lines = str(err.value).splitlines()
    assert lines[0].startswith("preflight: 7 of ")
    problems = "\n".join(lines[1:])
    assert "- secret hala-hf/token: LookupError: Secret 'hala-hf' (key 'token') did not reach this pod as HF_TOKEN_FOR_TEST" in problems
    assert "- storage s3://no-such-bucket-here/runs writable: StorageError:" in problems and "NoSuchBucket" in problems
    assert f"- MLflow at http://127.0.0.1:{closed}:" in problems
    assert "- translator.base: model s3://hala-test/models/none-such: SourceError: s3://hala-test/models/none-such: nothing is stored there" in problems
    assert "- judge.model: model Qwen/Qwen2.5-3B-Instruct:" in problems
    assert "- corpus.datasets[2]: dataset s3://hala-test/data/none-such.jsonl: SourceError: s3://hala-test/data/none-such.jsonl: nothing is stored there" in problems
    assert "- evaluation.benchmarks[exams]: fixtures: FileNotFoundError: no fixture subset under " in problems


def test_reused_outputs_are_checked_and_replace_their_stages_inputs(s3_env, tmp_path):
    translator = tmp_path / "translator"
    translator.mkdir()
    (translator / "config.json").write_text("{}")
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    # The teacher's own model and gate set are not needed once its FP8 copy is given.
    data["teacher"]["model"] = "/nowhere/teacher"
    data["reuse"] = {
        "fp8_teacher": f"s3://{s3_env['bucket']}/earlier/fp8-teacher",
        "translator": str(translator),
        "corpus": str(tmp_path / "no-corpus"),
    }
    with pytest.raises(PreflightError) as err:
        check_run(parse_recipe(data, "test"), None)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("preflight: 2 of ")
    assert f"- reuse.fp8_teacher: s3://{s3_env['bucket']}/earlier/fp8-teacher: FileNotFoundError: nothing stored under this URI" in lines
    assert f"- reuse.corpus: {tmp_path / 'no-corpus'}: FileNotFoundError: {tmp_path / 'no-corpus'} does not exist" in lines
    s3_env["client"].put_object(s3_env["bucket"], "earlier/fp8-teacher/config.json", io.BytesIO(b"{}"), 2)
    (tmp_path / "no-corpus").mkdir()
    passed = check_run(parse_recipe(data, "test"), None)
    assert f"reuse.translator: {translator}" in passed
    assert not any(line.startswith(("teacher.", "corpus.datasets")) for line in passed)


def test_a_recipe_whose_stages_do_not_fit_its_pods_fails_preflight_with_the_plan(smoke_recipe):
    data = yaml.safe_load(smoke_recipe.to_yaml())
    # GPUs of 256 MiB: the tiny teacher's gate fits, the training of a student with AdamW does not.
    gpu = {"accelerator_memory": "256Mi", "memory": "4Gi"}
    data["cluster"] = {"resources": {role: dict(gpu) for role in ("quantize", "generation", "training", "evaluation")}}
    data["students"]["training"]["batch_size"] = 64
    with pytest.raises(PreflightError) as err:
        check_run(parse_recipe(data, "test"), None)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("preflight: 1 of ")
    assert lines[1].startswith("- capacity plan: every stage fits its pods: PlanError: capacity plan: ")
    assert "6. train nano-s: tiny:student-s on trl single needs " in lines[1] and "the recipe gives 0.2 GiB" in lines[1]

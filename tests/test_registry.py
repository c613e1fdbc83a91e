"""Registered versions are MLflow Models: loadable by alias, scored on the model, stored by the registry."""

from __future__ import annotations

import os
import shutil
from importlib import metadata
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import LoggedModelStatus

from hala.registry import RegistryError, check_model_folder, log_checkpoint, model_metrics, version_model_id
from hala.tracking import local_tracking_uri, registry_client, use_store
from tests.registry_helpers import register_tiny

NAME = "hala-test-nano-m"


@pytest.fixture
def checkpoint(tiny, tmp_path):
    """A pipeline output: a copy of a tiny student in the run's folder (the same filesystem as its store)."""
    folder = tmp_path / "run" / "merged" / "t0.50"
    shutil.copytree(tiny("student-m"), folder)
    return folder


def test_a_version_loads_by_alias_and_chats_with_its_template(checkpoint, tmp_path):
    uri = local_tracking_uri(tmp_path / "run")
    version = register_tiny(uri, NAME, str(checkpoint), {"average": 31.5, "alghafa": 40.25})
    client = registry_client(uri)
    registered = client.get_model_version_by_alias(NAME, "challenger")
    assert str(registered.version) == version
    # The scores are the model's own metrics, which promotion reads.
    assert model_metrics(client, registered) == {"average": 31.5, "alghafa": 40.25}
    logged = client.get_logged_model(version_model_id(registered))
    assert logged.status == LoggedModelStatus.READY

    pipe = mlflow.transformers.load_model(f"models:/{NAME}@challenger")
    reply = pipe([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=4, do_sample=False)
    assert reply[0]["generated_text"][-1]["role"] == "assistant"
    assert pipe.tokenizer.chat_template == (checkpoint / "chat_template.jinja").read_text()

    # An MLflow Model as MLflow's loaders expect it: flavor, chat task and signature, requirements.
    store = Path(client.get_model_version_download_uri(NAME, version).removeprefix("file://"))
    mlmodel = mlflow.models.Model.load(str(store / "MLmodel"))
    assert mlmodel.flavors["transformers"]["task"] == "text-generation" and mlmodel.metadata["task"] == "llm/v1/chat"
    assert mlmodel.signature.inputs.input_names()[0] == "messages"
    pins = (store / "requirements.txt").read_text().split()
    assert f"transformers=={metadata.version('transformers')}" in pins and f"torch=={metadata.version('torch').split('+')[0]}" in pins


def test_a_local_store_keeps_one_copy_of_the_weights(checkpoint, tmp_path):
    uri = local_tracking_uri(tmp_path / "run")
    register_tiny(uri, NAME, str(checkpoint))
    client = registry_client(uri)
    store = Path(client.get_model_version_download_uri(NAME, "1").removeprefix("file://"))
    stored, original = store / "model" / "model.safetensors", checkpoint / "model.safetensors"
    assert stored.read_bytes() == original.read_bytes()
    # Hard links: the registry's file and the pipeline's output are one file on disk.
    assert os.stat(stored).st_ino == os.stat(original).st_ino and os.stat(original).st_nlink == 2
    assert sorted(p.name for p in (store / "model").iterdir()) == sorted(p.name for p in checkpoint.iterdir())


@pytest.mark.parametrize(("remove", "message"), [("config.json", "has no config.json"), ("model.safetensors", r"has no weight files \(\*.safetensors\)")])
def test_a_folder_without_config_or_weights_is_refused_before_logging(checkpoint, tmp_path, remove, message):
    (checkpoint / remove).unlink()
    with pytest.raises(RegistryError, match=f"^model folder {checkpoint} {message}$"):
        check_model_folder(checkpoint)
    uri = local_tracking_uri(tmp_path / "run")
    client = registry_client(uri)
    run_id = client.create_run(use_store(uri, "hala-test")).info.run_id
    with pytest.raises(RegistryError, match=message):
        log_checkpoint(checkpoint, "m", run_id, card="", source_name="x", license_text="", params={}, metrics={}, pip=[])
    assert mlflow.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id], output_format="list") == []


def test_a_logging_that_fails_half_way_leaves_no_version(checkpoint, tmp_path, monkeypatch):
    from hala import registry

    uri = local_tracking_uri(tmp_path / "run")
    client = registry_client(uri)
    run_id = client.create_run(use_store(uri, "hala-test")).info.run_id

    def disk_full(staging, target):
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(registry, "_place", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        model_id, _ = log_checkpoint(checkpoint, "m", run_id, card="", source_name="x", license_text="", params={}, metrics={}, pip=[])
    (logged,) = mlflow.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id], output_format="list")
    assert logged.status == LoggedModelStatus.FAILED
    # register_version is reached only with a complete model: no registered model or version exists.
    assert client.search_registered_models() == []


def test_a_server_stores_the_model_in_its_bucket_and_deploy_points_there(checkpoint, mlflow_server, s3_server, tmp_path):
    from hala.deploy import DeployError, plan

    uri = mlflow_server["uri"]
    version = register_tiny(uri, "hala-srv-nano-m", str(checkpoint), {"average": 30.0}, alias="champion")
    client = registry_client(uri)
    location = client.get_model_version_download_uri("hala-srv-nano-m", version)
    assert location.startswith("mlflow-artifacts:") and location.endswith("/artifacts")
    p = plan(uri, "hala-srv-nano-m", ["champion"], "srv", out_dir=tmp_path, destination=mlflow_server["destination"])
    (entry,) = p.values["models"]
    assert entry["registry"]["model_id"] == version_model_id(client.get_model_version("hala-srv-nano-m", version))
    source = entry["source"]
    assert source.startswith(mlflow_server["destination"] + "/") and source.endswith("/artifacts/model") and p.unreachable == []
    # What the chart's pods sync: exactly the checkpoint's files, as the server wrote them to the bucket.
    prefix = source.removeprefix(f"s3://{s3_server['bucket']}/") + "/"
    stored = {o.object_name.removeprefix(prefix): o.size for o in s3_server["client"].list_objects(s3_server["bucket"], prefix, recursive=True)}
    assert stored == {p.name: p.stat().st_size for p in checkpoint.iterdir()}
    with pytest.raises(DeployError, match=r"is stored behind the MLflow server; give --artifacts-destination"):
        plan(uri, "hala-srv-nano-m", ["champion"], "srv", out_dir=tmp_path, destination=None)


def test_a_version_that_is_not_an_mlflow_model_is_refused_by_deploy(tmp_path):
    from hala.deploy import DeployError, resolve

    uri = local_tracking_uri(tmp_path)
    client = registry_client(uri)
    client.create_registered_model("bare")
    client.create_model_version("bare", source="s3://hala/runs/r1/merged/t0.50")
    client.set_registered_model_alias("bare", "champion", "1")
    with pytest.raises(DeployError, match=r"^bare version 1 \(champion\) is not an MLflow Model \(its source is s3://hala/runs/r1/merged/t0.50\)"):
        resolve(uri, "bare", "champion")


def test_hala_chat_replies_from_a_version_by_alias_and_lists_aliases_when_one_is_missing(checkpoint, tmp_path):
    import subprocess
    import sys

    from hala.registry import load_chat_model

    uri = local_tracking_uri(tmp_path / "run")
    register_tiny(uri, NAME, str(checkpoint))
    with pytest.raises(RegistryError, match=rf"^{NAME} has no alias 'champion'; its aliases: challenger \(version 1\)$"):
        load_chat_model(uri, NAME, "champion")
    with pytest.raises(RegistryError, match=rf"^no registered model 'nope' at {uri}; registered models: {NAME}$"):
        load_chat_model(uri, "nope", "champion")
    done = subprocess.run(
        [sys.executable, "-m", "hala", "chat", NAME, "What is the capital of France?", "--alias", "challenger",
         "--tracking-uri", uri, "--max-new-tokens", "4"],
        capture_output=True, text=True, timeout=1200,  # a hang guard, not a speed claim
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The reply MLflow's own loader gives for the same message, greedily: the command adds nothing.
    pipe = load_chat_model(uri, NAME, "challenger")
    expected = pipe([{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=4, do_sample=False)
    assert done.stdout == expected[0]["generated_text"][-1]["content"] + "\n"

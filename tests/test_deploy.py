"""hala deploy: registry aliases to chart values, against a real local MLflow store and the real helm."""

import socket
import subprocess
import sys

import mlflow
import pytest
import yaml

from hala.deploy import CHART, DeployError, apply, plan, resolve
from hala.tracking import local_tracking_uri, registry_client
from tests.registry_helpers import register_tiny
from tests.helm import render, validate

MODEL = "hala-9b"


@pytest.fixture
def registry(smoke_recipe, tmp_path, tiny, s3_env, monkeypatch):
    """A store whose model files live in S3 (as a cluster's MLflow keeps them): versions 1 (champion)
    and 2 (challenger) of MODEL, and a model whose files stayed on this machine."""
    uri = local_tracking_uri(tmp_path / "mlflow")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_env["env"]["AWS_ENDPOINT_URL"])
    registry_client(uri)
    mlflow.create_experiment("hala-test", artifact_location=f"s3://{s3_env['bucket']}/deploy/{tmp_path.name}")
    register_tiny(uri, MODEL, tiny("student-s"), {"average": 0.41})
    register_tiny(uri, MODEL, tiny("student-m"), {"average": 0.44, "base_average": 0.30})
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.set_registered_model_alias(MODEL, "champion", "1")
    local = local_tracking_uri(tmp_path / "elsewhere")
    register_tiny(local, "hala-local", tiny("student-s"))
    return uri, local, f"s3://{s3_env['bucket']}/deploy/{tmp_path.name}"


def _source(uri, version):
    """Where the registry keeps a version's checkpoint: its MLflow Model's model/ folder."""
    return mlflow.MlflowClient(uri, registry_uri=uri).get_model_version_download_uri(MODEL, version) + "/model"


def test_aliases_become_the_charts_models_and_render_valid_manifests(registry, tmp_path):
    uri, _, bucket = registry
    p = plan(uri, MODEL, ["champion", "challenger"], "hala-prod", namespace="serving", gpus=2, out_dir=tmp_path)
    champion, challenger = p.values["models"]
    model_id = champion["registry"].pop("model_id")
    assert champion == {
        "name": "hala-9b-champion",
        "servedModelName": "hala-9b",
        "source": f"{bucket}/models/{model_id}/artifacts/model",
        "gpus": 2,
        "registry": {"name": "hala-9b", "version": "1", "alias": "champion"},
    }
    assert champion["source"] == _source(uri, "1") and p.unreachable == []
    assert challenger["servedModelName"] == "hala-9b-challenger" and challenger["registry"]["version"] == "2"
    assert yaml.safe_load(p.values_file.read_text())["models"][1] == challenger
    assert p.command == ["helm", "upgrade", "--install", "hala-prod", str(CHART), "-f", str(p.values_file), "--namespace", "serving"]
    # What helm would apply: two Deployments that pass the Kubernetes schemas.
    docs = render("hala-serving", p.values_file)
    validate(docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"rel-hala-9b-champion", "rel-hala-9b-challenger"}
    labels = deployments["rel-hala-9b-champion"]["metadata"]["labels"]
    assert labels["hala.dev/registered-model"] == "hala-9b" and labels["hala.dev/alias"] == "champion"
    assert labels["hala.dev/logged-model"] == model_id


def test_a_missing_alias_lists_the_aliases_that_exist(registry, tmp_path):
    uri, local, _ = registry
    with pytest.raises(DeployError) as err:
        resolve(uri, MODEL, "production")
    assert str(err.value) == "hala-9b has no alias 'production'; its aliases: challenger (version 2), champion (version 1)"
    with pytest.raises(DeployError, match=r"no registered model 'hala-99b' at .*; registered models: hala-9b$"):
        resolve(uri, "hala-99b", "champion")
    with pytest.raises(DeployError, match="release 'Hala_Prod' is not a helm release name"):
        plan(uri, MODEL, ["champion"], "Hala_Prod")
    # Files on this machine: the values are written (a dry run shows them), applying is refused with the URI.
    p = plan(local, "hala-local", ["challenger"], "hala-local", out_dir=tmp_path)
    (line,) = p.unreachable
    assert line.startswith("hala-local version 1 (challenger) is at file://") and line.endswith(
        "/model, which the serving pods cannot read: they sync from s3:// only"
    )
    with pytest.raises(DeployError, match="^hala-local version 1 \\(challenger\\) is at file://"):
        apply(p)


def _hala(*args, env=None):
    return subprocess.run([sys.executable, "-m", "hala", *args], capture_output=True, text=True, timeout=1200, env=env)  # a hang guard, not a speed claim


def test_the_command_prints_its_helm_command_or_fails_in_one_line(registry, tmp_path):
    registry, _, _ = registry
    dry = _hala("deploy", MODEL, "--alias", "champion", "--release", "hala-prod", "--tracking-uri", registry,
                "--out", str(tmp_path), "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert f"helm upgrade --install hala-prod {CHART} -f {tmp_path}/hala-prod.serving-values.yaml" in dry.stdout
    # The command alone on stdout (to pipe or copy); what it serves on stderr.
    assert f"hala-9b-champion: hala-9b version 1 from {_source(registry, '1')}" in dry.stderr

    missing = _hala("deploy", MODEL, "--alias", "prod", "--tracking-uri", registry, "--out", str(tmp_path), "--dry-run")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: hala-9b has no alias 'prod'; its aliases: challenger (version 2), champion (version 1)"

    # A real helm that cannot reach a cluster: its own reason, in one line.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{closed}"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    import os

    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    applied = _hala("deploy", MODEL, "--tracking-uri", registry, "--out", str(tmp_path), env=env)
    assert applied.returncode == 2
    served, line = applied.stderr.strip().splitlines()
    assert served.startswith("hala-9b-champion: hala-9b version 1")
    assert line.startswith("error: helm upgrade --install failed:") and f"127.0.0.1:{closed}" in line, line


def test_promote_then_deploy_the_new_champion(registry, tmp_path):
    registry, _, _ = registry
    result = _hala("promote", MODEL, "--tracking-uri", registry, "--deploy", "hala-prod", "--out", str(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "hala-9b: version 2 is now the champion" in result.stderr
    values = yaml.safe_load((tmp_path / "hala-prod.serving-values.yaml").read_text())
    assert values["models"][0]["registry"] == {"name": "hala-9b", "version": "2", "alias": "champion", "model_id": values["models"][0]["registry"]["model_id"]}
    assert values["models"][0]["source"] == _source(registry, "2")
    assert "helm upgrade --install hala-prod" in result.stdout

"""The MLflow chart with the real helm binary: lint, render, Kubernetes schemas, and its server command run for real."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helm import CHARTS, containers, helm, render, validate

MLFLOW = CHARTS / "hala-mlflow"
EXAMPLES = sorted((MLFLOW / "examples").glob("*.yaml"))


def test_the_chart_lints_in_every_example():
    for values in [None, *EXAMPLES]:
        args = ["lint", "--strict", str(MLFLOW)] + (["-f", str(values)] if values else [])
        result = helm(*args, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", [None, *EXAMPLES], ids=lambda v: v.stem if v else "defaults")
def test_every_rendered_manifest_is_valid_kubernetes(values):
    docs = render("hala-mlflow", *([values] if values else []))
    validate(docs)
    kinds = sorted(d["kind"] for d in docs)
    bundled = values is None or "bundled" in values.stem
    assert ("StatefulSet" in kinds) == bundled
    if values is not None and "external" in values.stem:
        assert kinds == ["Deployment", "Ingress", "NetworkPolicy", "Service"]


def test_pods_run_locked_down_with_credentials_only_from_secrets():
    docs = render("hala-mlflow", sets={"postgresql.existingSecret": "db-pass", "artifacts.existingSecret": "s3-keys"})
    for c in containers(docs):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["limits"]["memory"]
        secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
        plain = {e["name"] for e in c["env"] if "value" in e}
        assert not plain & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD", "POSTGRES_PASSWORD"}
        if c["name"] == "mlflow":
            assert secret_env == {"PGPASSWORD": "db-pass", "AWS_ACCESS_KEY_ID": "s3-keys", "AWS_SECRET_ACCESS_KEY": "s3-keys"}
        else:
            assert secret_env == {"POSTGRES_PASSWORD": "db-pass"}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] and pod["automountServiceAccountToken"] is False
    # The database answers the server's pods only.
    (db_policy,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("postgresql")]
    (source,) = db_policy["spec"]["ingress"][0]["from"]
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"


@pytest.mark.parametrize(
    "sets, message",
    [
        ({"replicas": "two"}, "at '/replicas': got string, want integer"),
        ({"artifacts.destination": "/data/mlflow"}, "at '/artifacts/destination': '/data/mlflow' does not match pattern"),
        ({"postgresql.enabled": "false"}, "backendStore.existingSecret: name the Secret holding the database URI"),
        ({"servr.workers": "2"}, "additional properties 'servr' not allowed"),
    ],
)
def test_wrong_values_fail_naming_the_key(sets, message):
    args = ["template", "rel", str(MLFLOW)] + [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    result = helm(*args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_the_rendered_server_command_serves_runs_with_artifacts_in_s3(s3_server, tmp_path):
    """The Deployment's own command and environment, run on loopback against SeaweedFS and SQLite."""
    import mlflow

    endpoint = s3_server["env"]["AWS_ENDPOINT_URL"]
    bucket = s3_server["bucket"]
    docs = render(
        "hala-mlflow",
        sets={"artifacts.destination": f"s3://{bucket}/mlflow", "artifacts.s3EndpointUrl": endpoint, "postgresql.enabled": "false",
              "backendStore.existingSecret": "db-uri"},
        namespace="mlflow",
    )
    (server,) = [c for c in containers(docs) if c["name"] == "mlflow"]
    port = _free_port()
    # Only what a cluster would supply differs: loopback instead of all interfaces, a free port,
    # the Secrets' values, and SQLite instead of PostgreSQL.
    args = [{"0.0.0.0": "127.0.0.1", "5000": str(port)}.get(a, a) for a in server["args"]]
    secrets = {
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "AWS_ACCESS_KEY_ID": s3_server["env"]["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": s3_server["env"]["AWS_SECRET_ACCESS_KEY"],
    }
    env = {e["name"]: e["value"] if "value" in e else secrets[e["name"]] for e in server["env"]}
    env["HOME"] = str(tmp_path)  # the chart's /tmp is an emptyDir; here a private folder
    command = [str(Path(sys.executable).parent / server["command"][0]), *args]
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(command, env={"PATH": os.environ["PATH"], **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # sized for a loaded machine; a dead server fails at once (poll)
        while _get(f"{base}/health") != 200:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "MLflow did not answer /health in 300 s"
            time.sleep(1)
        client = mlflow.MlflowClient(tracking_uri=base)
        experiment = client.create_experiment("chart-check")
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, '{"ok": true}', "report/summary.json")
        client.set_terminated(run.info.run_id)
        # The client sent the artifact through the server, which stored it in the bucket.
        keys = [o.object_name for o in s3_server["client"].list_objects(bucket, prefix="mlflow/", recursive=True)]
        assert any(k.endswith(f"{run.info.run_id}/artifacts/report/summary.json") for k in keys), keys
        fetched = client.download_artifacts(run.info.run_id, "report/summary.json", str(tmp_path / "fetched"))
        assert json.loads(Path(fetched).read_text()) == {"ok": True}
        # Pods reach the Service by any of its names; other Host headers are refused.
        api = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(api, host=f"rel-hala-mlflow.mlflow.svc.cluster.local:{port}") == 200
        assert _get(api, host=f"rel-hala-mlflow:{port}") == 200
        assert _get(api, host="attacker.example.org") == 403
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()

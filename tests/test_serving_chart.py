"""The serving chart with the real helm binary: lint, render, Kubernetes schemas, checkov, and what each example asks for."""

import json

import pytest
import yaml

from tests.helm import CHARTS, checkov, containers, helm, render, skipped_checks, validate

SERVING = CHARTS / "hala-serving"
EXAMPLES = sorted((SERVING / "examples").glob("*.yaml"))
CASES = [None, *EXAMPLES]
IDS = ["defaults", *(e.stem for e in EXAMPLES)]


def _render(values=None, **kw):
    return render("hala-serving", *([values] if values else []), namespace="serving", **kw)


def _by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("values", CASES, ids=IDS)
def test_every_configuration_lints_renders_and_validates(values):
    result = helm("lint", "--strict", str(SERVING), *(["-f", str(values)] if values else []), check=False)
    assert result.returncode == 0 and "0 chart(s) failed" in result.stdout, result.stdout + result.stderr
    docs = _render(values)
    # kubernetes-validate knows no CRDs: the ServiceMonitor is checked by hand in its own test.
    validate([d for d in docs if d["kind"] != "ServiceMonitor"])
    # One Deployment per model: the example's models, or the chart's own default list.
    models = yaml.safe_load((values or SERVING / "values.yaml").read_text())["models"]
    assert len(models) >= 1 and sorted(_by_kind(docs, "Deployment")) == sorted(f"rel-{m['name']}" for m in models)


@pytest.mark.parametrize("chart", ["hala-serving", "hala-mlflow"])
def test_checkov_finds_nothing_in_any_configuration_and_each_skip_is_explained(chart, tmp_path):
    examples = sorted((CHARTS / chart / "examples").glob("*.yaml"))
    for i, values in enumerate([None, *examples]):
        out = tmp_path / f"render-{i}"
        out.mkdir()
        args = ["template", "rel", str(CHARTS / chart), "--namespace", "hala"] + (["-f", str(values)] if values else [])
        (out / "manifests.yaml").write_text(helm(*args).stdout)
        report = checkov(chart, out)
        assert report["failed"] == [], (values, report["failed"])
        assert report["passed"] > 50
    readme = (CHARTS / chart / "README.md").read_text()
    for check in skipped_checks(chart):
        assert f"`{check}`" in readme, f"{check} is skipped without a reason in {chart}/README.md"


def test_two_models_run_side_by_side_with_their_registry_identity():
    docs = _render(SERVING / "examples" / "two-models.yaml")
    deployments = _by_kind(docs, "Deployment")
    assert set(deployments) == {"rel-hala-9b-champion", "rel-hala-9b-challenger"}
    assert set(_by_kind(docs, "Service")) == set(deployments) == set(_by_kind(docs, "PodDisruptionBudget"))
    champion = deployments["rel-hala-9b-champion"]
    labels = champion["spec"]["template"]["metadata"]["labels"]
    assert labels["hala.dev/alias"] == "champion" and labels["hala.dev/registered-version"] == "3"
    assert champion["spec"]["replicas"] == 2
    (vllm,) = champion["spec"]["template"]["spec"]["containers"]
    args = vllm["args"]
    assert args[0] == "/models/model" and args[args.index("--served-model-name") + 1] == "hala-9b"
    assert args[args.index("--tensor-parallel-size") + 1] == "2" and vllm["resources"]["limits"]["nvidia.com/gpu"] == 2
    # FP8 checkpoints carry their scheme in config.json: no quantization flag unless asked.
    assert "--quantization" not in args
    challenger = deployments["rel-hala-9b-challenger"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert challenger[challenger.index("--kv-cache-dtype") + 1] == "fp8"
    (fetch,) = champion["spec"]["template"]["spec"]["initContainers"]
    assert fetch["command"][-1].startswith('aws s3 sync --only-show-errors --no-progress "$SOURCE" /models/model &&')
    assert "test -f /models/model/config.json" in fetch["command"][-1]
    source = {e["name"]: e.get("value") for e in fetch["env"]}["SOURCE"]
    assert source == "s3://hala/runs/3f2a9c0d41e84b7f/pipeline-root/merge-student/merged/t0.50"
    # Each Service selects its own model's pods only.
    selectors = {name: s["spec"]["selector"]["hala.dev/model"] for name, s in _by_kind(docs, "Service").items()}
    assert selectors == {"rel-hala-9b-champion": "hala-9b-champion", "rel-hala-9b-challenger": "hala-9b-challenger"}


def test_pods_are_locked_down_and_the_api_key_stays_in_its_secret():
    docs = _render(SERVING / "examples" / "single-model.yaml", sets={"apiKey.existingSecret": "team-key"})
    (deployment,) = _by_kind(docs, "Deployment").values()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] >= 10000
    assert pod["automountServiceAccountToken"] is False
    for c in containers(docs):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
        assert c["resources"]["limits"]["memory"]
    vllm = pod["containers"][0]
    env = {e["name"]: e for e in vllm["env"]}
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "team-key", "key": "api-key"}
    assert "--api-key" not in vllm["args"] and env["HF_HUB_OFFLINE"]["value"] == "1"
    # Writable places are volumes; shared memory for tensor parallelism is memory-backed.
    mounts = {m["mountPath"] for m in vllm["volumeMounts"]}
    assert {"/models", "/cache", "/dev/shm", "/tmp"} == mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    # A large model gets 30 minutes to load before the kubelet gives up on it.
    assert vllm["startupProbe"]["httpGet"]["path"] == "/health"
    assert vllm["startupProbe"]["periodSeconds"] * vllm["startupProbe"]["failureThreshold"] == 1800
    (policy,) = _by_kind(docs, "NetworkPolicy").values()
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http"}]


def test_ingress_autoscaling_and_metrics_when_asked():
    docs = _render(SERVING / "examples" / "ingress.yaml")
    (ingress,) = _by_kind(docs, "Ingress").values()
    assert ingress["spec"]["rules"][0]["host"] == "translate.hala.example.org"
    assert ingress["spec"]["tls"] == [{"hosts": ["translate.hala.example.org"], "secretName": "hala-serving-tls"}]
    (policy,) = _by_kind(docs, "NetworkPolicy").values()
    namespaces = [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in policy["spec"]["ingress"][0]["from"] if "namespaceSelector" in f]
    assert namespaces == ["ingress-nginx"]

    docs = _render(SERVING / "examples" / "autoscaling.yaml")
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler").values()
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_waiting"
    (deployment,) = _by_kind(docs, "Deployment").values()
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    (monitor,) = _by_kind(docs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert _by_kind(_render(), "ServiceMonitor") == {} and _by_kind(_render(), "Ingress") == {}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"models": [{"name": "m", "source": "s3://hala/m", "gpus": "two"}]}, "at '/models/0/gpus': got string, want integer"),
        ({"models": [{"name": "m"}]}, "at '/models/0': missing property 'source'"),
        ({"models": [{"name": "m", "source": "/data/m"}]}, "at '/models/0/source': '/data/m' does not match pattern"),
        ({"models": [{"name": "Hala_9B", "source": "s3://hala/m"}]}, "at '/models/0/name'"),
        ({"models": [{"name": "m", "source": "s3://hala/a"}, {"name": "m", "source": "s3://hala/b"}]}, 'models[1].name: "m" is used by two models'),
        ({"models": [{"name": "m", "source": "s3://hala/m"}], "ingress": {"enabled": True}}, "ingress.enabled: give models[].ingressHost for at least one model"),
        ({"models": [{"name": "m", "source": "s3://hala/m"}], "s3": {"endpoint": "http://user:pw@minio:9000", "existingSecret": "s"}}, "at '/s3/endpoint'"),
        ({"models": [{"name": "m", "source": "s3://hala/m", "maxModeLen": 4096}]}, "additional properties 'maxModeLen' not allowed"),
    ],
)
def test_wrong_values_fail_at_template_time_naming_the_key(values, message, tmp_path):
    path = tmp_path / "values.yaml"
    path.write_text(json.dumps(values))
    result = helm("template", "rel", str(SERVING), "-f", str(path), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize("stored", [True, False])
def test_the_weight_fetch_stops_the_pod_when_no_model_is_there(stored, tmp_path):
    """The init container's own script, with a stand-in aws that syncs a model folder or nothing."""
    import os
    import stat
    import subprocess

    docs = _render(SERVING / "examples" / "single-model.yaml")
    (deployment,) = _by_kind(docs, "Deployment").values()
    (fetch,) = deployment["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in fetch["env"] if "value" in e}
    stub = tmp_path / "bin" / "aws"
    stub.parent.mkdir()
    # aws s3 sync [flags] SOURCE DEST: the stand-in writes DEST/config.json only when a model is stored.
    stub.write_text('#!/bin/sh\nfor last; do :; done\n' + ('mkdir -p "$last" && echo "{}" > "$last/config.json"\n' if stored else "") + "exit 0\n")
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    script = fetch["command"][-1].replace("/models", str(tmp_path / "models"))
    result = subprocess.run(
        [*fetch["command"][:-1], script], env={"PATH": f"{stub.parent}:{os.environ['PATH']}", "SOURCE": env["SOURCE"]},
        capture_output=True, text=True, timeout=600,  # a hang guard
    )  # fmt: skip
    if stored:
        assert result.returncode == 0 and (tmp_path / "models" / "model" / "config.json").is_file()
    else:
        assert result.returncode == 1
        assert result.stderr.strip() == f"no config.json under {env['SOURCE']}"

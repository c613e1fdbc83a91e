"""hala submit against a stand-in Kubeflow Pipelines API on loopback: the real kfp client, a recording server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hala.recipe import load_recipe
from hala.submit import run_arguments, submit_run


class _Api(BaseHTTPRequestHandler):
    """Answers the few KFP v2beta1 calls a submission makes, and keeps what it was sent."""

    calls: list = []

    def _reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.calls.append(("GET", self.path, None, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiments": [], "total_size": 0})
        self._reply({})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.calls.append(("POST", self.path, body, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/apis/v2beta1/experiments"):
            return self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        if self.path.startswith("/apis/v2beta1/runs"):
            return self._reply({"run_id": "run-42", "display_name": body.get("display_name"), "experiment_id": "exp-1"})
        self._reply({})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_api():
    _Api.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Api.calls
    server.shutdown()


def test_submit_sends_the_compiled_pipeline_and_the_recipes_parameters(kfp_api, monkeypatch):
    host, calls = kfp_api
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "token-canary-99")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-canary-99")
    recipe = load_recipe("hala-nano")
    run_id, link = submit_run(recipe, host, tracking_uri="http://mlflow.mlflow:5000")
    assert run_id == "run-42" and link == f"{host}/#/runs/details/run-42"
    experiment = next(body for method, path, body, _ in calls if method == "POST" and "experiments" in path)
    assert experiment["display_name"] == "hala-nano"
    method, path, run, headers = next(c for c in calls if c[0] == "POST" and "/runs" in c[1])
    assert run["display_name"] == f"hala hala-nano {recipe.hash}" and run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {"tracking_uri": "http://mlflow.mlflow:5000"}
    # The pipeline and its kfp-kubernetes settings (pods, Secrets by name) travel together.
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "hala-translate-and-tune-hala-nano"
    executors = run["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-train-student"]["secretAsEnv"][0]["secretName"] == "hala-s3"
    # The token authenticates the call; neither it nor any other secret is in what was sent.
    assert headers.get("authorization") == "Bearer token-canary-99"
    sent = json.dumps([body for _, _, body, _ in calls])
    assert "token-canary-99" not in sent and "s3-canary-99" not in sent


def test_submit_needs_a_tracking_uri():
    recipe = load_recipe("hala-nano")
    assert run_arguments(recipe, "http://m:5000") == {"tracking_uri": "http://m:5000"}
    with pytest.raises(ValueError, match="no MLflow tracking URI"):
        submit_run(recipe, "http://127.0.0.1:9")


def test_a_recipe_that_does_not_fit_its_pods_is_refused_before_the_endpoint_hears_of_it(kfp_api):
    from hala.plan import PlanError
    from hala.recipe import parse_recipe

    host, calls = kfp_api
    data = load_recipe("hala-nano").model_dump(mode="json")
    data["teacher"]["generation"]["tensor_parallel_size"] = 1
    with pytest.raises(PlanError, match=r"^capacity plan: 1 stage\(s\) do not fit: 1b\. FP8 gate \(original\): CohereLabs/command-a-translate-08-2025 on vllm needs "):
        submit_run(parse_recipe(data, "one-gpu teacher"), host, tracking_uri="http://mlflow.mlflow:5000")
    assert calls == []


@pytest.mark.parametrize(
    ("option", "url", "named"),
    [("tracking_uri", "https://hala:s3cret-4711@mlflow.example.org", "--tracking-uri must not carry credentials (https://***@mlflow.example.org)"),
     ("host", "https://admin:s3cret-4711@kubeflow.example.org/pipeline", "--host must not carry credentials (https://***@kubeflow.example.org/pipeline)")],
)  # fmt: skip
def test_credentials_in_a_url_are_refused_before_anything_is_sent_and_never_repeated(kfp_api, option, url, named):
    host, calls = kfp_api
    args = {"tracking_uri": "http://mlflow.mlflow:5000", "host": host} | {option: url}
    with pytest.raises(ValueError) as err:
        submit_run(load_recipe("hala-nano"), args.pop("host"), **args)
    assert str(err.value).startswith(named) and "s3cret-4711" not in str(err.value)
    assert calls == []


def test_the_cli_refuses_credentials_in_its_url_options_in_one_line():
    import subprocess
    import sys

    url = "https://hala:s3cret-4711@mlflow.example.org"
    for args in (["preflight", "--recipe", "smoke", "--tracking-uri", url], ["submit", "--recipe", "hala-nano", "--host", "http://127.0.0.1:9", "--tracking-uri", url],
                 ["deploy", "hala-x", "--tracking-uri", url, "--dry-run"], ["chat", "hala-x", "hi", "--tracking-uri", url]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "hala", *args], capture_output=True, text=True, timeout=600)  # a hang guard
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip().startswith("error: --tracking-uri must not carry credentials (https://***@mlflow.example.org)"), done.stderr
        assert "s3cret-4711" not in done.stdout + done.stderr

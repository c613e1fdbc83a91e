"""The serving chart's vLLM container, run: `hala serve --runner podman` renders the chart with the
real helm and starts its vLLM container in the vllm image (its CPU build) on a registered version,
and the openai client talks to it, as a user of `helm install` would.

The container gets what the rendered Deployment gives it: the command and arguments, the
environment (the API key by name, as the Secret gives it), a read-only root filesystem without
capabilities and with the chart's writable mounts, the model folder where the fetcher puts it,
and the port the probes and the Service use. The one addition is VLLM_CPU_KVCACHE_SPACE, which only
vLLM's CPU build reads (the KV cache in GiB; a GPU node sizes it from GPU memory). The version is
the tiny teacher, registered as the pipeline registers one. Traffic stays on loopback; every loop
is bounded.
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helm import render

pytestmark = pytest.mark.slow
SERVED = "hala-serving-test-challenger"  # a challenger is served as NAME-ALIAS
# A loaded 2-core machine starts vLLM in 40-120 s; this guard only stops a hang.
START_S = 600
REQUESTS = 32


def _podman(*args, check=False, timeout=120):
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


class Server:
    """`hala serve --runner podman` of a registered version: the chart's vLLM container on a loopback port."""

    def __init__(self, plan, root: Path):
        self.plan = plan
        self.key = secrets.token_hex(16)
        self.port = int(plan.url.split(":")[2].split("/")[0])
        self.name = plan.argv[plan.argv.index("--name") + 1]
        self.log = root / "server.log"
        self.health = f"http://127.0.0.1:{self.port}/health"
        self.process = None

    def start(self) -> float:
        import os

        from hala.serve import ServeError, wait_until_ready

        with self.log.open("ab") as out:
            # The key reaches the container by name (--env VLLM_API_KEY), from this environment only.
            env = {**os.environ, **self.plan.env, "VLLM_API_KEY": self.key}
            self.process = subprocess.Popen(self.plan.argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            return wait_until_ready(self.plan, self.process, START_S)
        except ServeError as err:
            raise AssertionError(f"vLLM did not become ready ({err}): {self.log.read_text(errors='replace')[-3000:]}") from None

    def stop(self) -> None:
        _podman("rm", "--force", "--time", "5", self.name)
        if self.process is not None:
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def registered(tiny, tmp_path_factory):
    """The tiny teacher registered as hala's pipeline registers a version (an MLflow Model), alias challenger."""
    from hala.tracking import local_tracking_uri
    from tests.registry_helpers import register_tiny

    uri = local_tracking_uri(tmp_path_factory.mktemp("serving-registry"))
    register_tiny(uri, "hala-serving-test", tiny("teacher"))
    return uri


@pytest.fixture(scope="module")
def server(built_images, registered, tmp_path_factory, monkeypatch_module):
    from hala.containers import free_port
    from hala.serve import plan_serve
    from tests.test_vllm_engine import vllm_unavailable

    if vllm_unavailable():
        pytest.skip(vllm_unavailable())
    root = tmp_path_factory.mktemp("serving")
    monkeypatch_module.setenv("HALA_CACHE", str(root / "cache"))  # the fetched checkpoint: this test's own
    # The CPU build's KV cache in GiB: hala serve passes it on by name when it is set. Without it vLLM's CPU
    # backend reserves 92% of the machine's memory (its --gpu-memory-utilization) and refuses to start
    # where other processes hold more than 8%.
    monkeypatch_module.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    plan = plan_serve(registered, "hala-serving-test", "challenger", runner="podman", image=built_images["vllm"]["image"],
                      port=free_port(), max_model_len=512)  # fmt: skip
    running = Server(plan, root)
    running.start_s = running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_hala_serve_runs_the_charts_rendered_vllm_container(server, built_images):
    """Every argument, setting and mount of the chart's Deployment, with only the documented stand-ins."""
    docs = render("hala-serving", sets={"models[0].name": "hala", "models[0].source": "s3://hala/m", "models[0].servedModelName": SERVED,
                                          "models[0].maxModelLen": "512"}, namespace="serving")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "vllm")
    argv = server.plan.argv
    image = built_images["vllm"]["image"]
    assert argv[argv.index("--entrypoint") + 1] == json.dumps(container["command"]) == '["vllm", "serve"]'
    assert argv[argv.index(image) + 1 :] == container["args"]
    literal = [f"{e['name']}={e['value']}" for e in container["env"] if "value" in e]
    passed = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert passed[: len(literal)] == literal and not any(server.key in a for a in argv)
    assert passed[len(literal) :] == ["VLLM_API_KEY", "VLLM_CPU_KVCACHE_SPACE"]  # by name: values stay in this environment
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and "--read-only" in argv
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]} and argv[argv.index("--cap-drop") + 1] == "ALL"
    assert f"{server.plan.model_dir}:/models/model:ro" in argv
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/cache", "/dev/shm", "/tmp"}
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/health" and server.health.endswith(probe["path"])
    assert container["ports"] == [{"name": "http", "containerPort": 8000}] and f"127.0.0.1:{server.port}:8000" in argv


def _client(server, key=None):
    from openai import OpenAI

    return OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=key or server.key, timeout=60, max_retries=0)


def _chat(client, text="The weather is nice today.", tokens=24, **extra):
    prompt = f"Translate the following text into Arabic. Reply with the translation only.\n\n{text}"
    return client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": prompt}], max_tokens=tokens, temperature=0, extra_body=extra or None
    )


def test_the_charts_container_answers_the_openai_client(server):
    reply = _chat(_client(server))
    assert reply.model == SERVED and reply.choices[0].message.content.strip()
    assert any("\u0600" <= ch <= "\u06ff" for ch in reply.choices[0].message.content)  # the tiny teacher answers in Arabic
    assert [m.id for m in _client(server).models.list().data] == [SERVED]


def test_a_request_without_the_charts_key_is_refused(server):
    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    body = {"model": SERVED, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    assert requests.post(url, json=body, timeout=30).status_code == 401
    assert requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {server.key}"}, timeout=60).status_code == 200


def test_metrics_are_scraped_as_the_servicemonitor_scrapes_them(server):
    docs = render("hala-serving", sets={"serviceMonitor.enabled": "true"}, namespace="serving")
    endpoint = next(d for d in docs if d["kind"] == "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    _chat(_client(server))
    text = requests.get(f"http://127.0.0.1:{server.port}{endpoint['path']}", timeout=30).text
    samples = [line for line in text.splitlines() if line.startswith("vllm:")]
    assert any(line.startswith("vllm:num_requests_running") for line in samples)
    finished = [float(line.split()[-1]) for line in samples if line.startswith("vllm:request_success_total")]
    assert sum(finished) >= 1, samples[:20]


def test_32_concurrent_requests_are_all_answered(server, record_property):
    client = _client(server)

    def one(i: int) -> float:
        started = time.monotonic()
        reply = _chat(client, f"Sentence number {i} is about the weather.")
        assert reply.choices[0].message.content.strip()
        return time.monotonic() - started

    with ThreadPoolExecutor(REQUESTS) as pool:
        latencies = sorted(pool.map(one, range(REQUESTS)))
    assert len(latencies) == REQUESTS
    figures = {"start_s": round(server.start_s, 1), "p50_s": round(statistics.median(latencies), 2),
               "p95_s": round(latencies[int(0.95 * (REQUESTS - 1))], 2)}  # fmt: skip
    record_property("serving_load", figures)
    print(f"serving: started in {figures['start_s']} s; {REQUESTS} concurrent chats p50 {figures['p50_s']} s, p95 {figures['p95_s']} s")


def test_a_server_killed_under_load_fails_its_clients_fast_and_answers_again_after_a_restart(server):
    client = _client(server)

    def one(i: int) -> tuple[str, float]:
        started = time.monotonic()
        try:
            # Long answers (vLLM's ignore_eos: the tiny model would stop after a sentence), so that the
            # kill finds them in flight.
            _chat(client, f"Request {i} while the server goes away.", tokens=400, ignore_eos=True)
            return "answered", time.monotonic() - started
        except Exception as err:  # noqa: BLE001 -- what the client gets is the outcome under test
            return type(err).__name__, time.monotonic() - started

    with ThreadPoolExecutor(REQUESTS) as pool:
        futures = [pool.submit(one, i) for i in range(REQUESTS)]
        time.sleep(1.0)
        assert _podman("kill", "--signal", "KILL", server.name).returncode == 0
        outcomes = [f.result(timeout=120) for f in futures]
    failed = [(kind, seconds) for kind, seconds in outcomes if kind != "answered"]
    assert failed, "every request was answered before the kill: the test did not load the server"
    # Errors, not hangs: every request ended well inside the client's 60 s timeout.
    assert max(seconds for _, seconds in outcomes) < 30, outcomes
    assert {kind for kind, _ in failed} <= {"APIConnectionError", "APITimeoutError", "InternalServerError"}, failed
    server.process.wait(timeout=120)  # the container is gone (--rm); a restart is a new one, as a pod's would be
    server.start()
    assert _chat(client).choices[0].message.content.strip()

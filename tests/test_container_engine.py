"""hala.containers without an engine: who the tasks run as, and what a missing image says."""

import docker
import pytest

from hala import containers


class Engine:
    """What a Docker API engine answers about itself and its images (podman's or Docker's shape)."""

    def __init__(self, name: str, rootless: bool, images: dict[str, dict]):
        self.name, self.rootless, self.stored = name, rootless, images
        self.images = self

    def info(self):
        return {"SecurityOptions": ["name=seccomp,profile=default", *(["name=rootless"] if self.rootless else [])]}

    def version(self):
        return {"Components": [{"Name": self.name, "Version": "4.3.1"}]}

    def get(self, name):
        if name not in self.stored:
            raise docker.errors.ImageNotFound(name)
        return type("Image", (), {"id": "sha256:" + self.stored[name]["id"], "attrs": self.stored[name]})


def test_tasks_run_as_the_images_user_for_root_and_as_the_caller_otherwise(monkeypatch):
    monkeypatch.setattr(containers.os, "geteuid", lambda: 0)
    assert containers.task_user(Engine("Podman Engine", False, {})) == {}
    monkeypatch.setattr(containers.os, "geteuid", lambda: 1234)
    monkeypatch.setattr(containers.os, "getuid", lambda: 1234)
    assert containers.task_user(Engine("Podman Engine", True, {})) == {"user": "1234:0", "userns_mode": "keep-id"}
    # Docker has no keep-id: the caller's uid as it is.
    assert containers.task_user(Engine("Engine", False, {})) == {"user": "1234:0"}


def test_missing_images_are_all_named_with_the_command_that_builds_them():
    engine = Engine("Podman Engine", False, {"localhost/hala-base:0.1.0": {"id": "ab" * 32, "RepoDigests": []}})
    containers.check_images(engine, ["localhost/hala-base:0.1.0"])
    with pytest.raises(containers.ContainerError) as err:
        containers.check_images(engine, ["localhost/hala-base:0.1.0", "localhost/hala-train:0.1.0", "localhost/hala-train:0.1.0"])
    assert str(err.value) == "image(s) not built on this machine: localhost/hala-train:0.1.0; build them with `make images`"


def test_an_image_record_has_its_id_and_manifest_digest():
    digest = "sha256:" + "cd" * 32
    engine = Engine("Podman Engine", False, {"localhost/hala-base:0.1.0": {"id": "ab" * 32, "RepoDigests": [f"localhost/hala-base@{digest}"]}})
    assert containers.image_record(engine, "localhost/hala-base:0.1.0") == {"image": "localhost/hala-base:0.1.0", "id": "ab" * 32, "digest": digest}

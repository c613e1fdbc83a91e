"""hala.storage against a real S3 server (SeaweedFS on loopback, started by conftest)."""

import hashlib
import os
import socket
import time

import pytest

from hala import storage
from hala.sources import SourceError
from hala.storage import ObjectStore, StorageError, local_etag, split_uri

MiB = 1024 * 1024


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_parts(monkeypatch):
    # S3's smallest part is 5 MiB: a 12 MiB file then goes up as 3 parallel parts.
    monkeypatch.setattr(storage, "PART_SIZE", 5 * MiB)


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint-shaped folder: one multipart-sized weight file and small side files."""
    folder = tmp_path / "checkpoint-40"
    (folder / "nested").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(12 * MiB + 123))
    (folder / "config.json").write_text('{"model_type": "lfm2"}')
    (folder / "trainer_state.json").write_text('{"global_step": 40}')
    (folder / "nested" / "optimizer.pt").write_bytes(os.urandom(3 * MiB))
    (folder / "empty.txt").write_bytes(b"")
    return folder


def test_split_uri_names_what_is_wrong():
    assert split_uri("s3://bucket/a/b") == ("bucket", "a/b")
    assert split_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(StorageError, match="'/tmp/x' is not an s3://bucket/key URI"):
        split_uri("/tmp/x")
    with pytest.raises(StorageError, match="'My_Bucket' is not a bucket name"):
        split_uri("s3://My_Bucket/x")


def test_checkpoint_round_trip_is_verified_and_multipart(s3_env, small_parts, checkpoint, tmp_path):
    store = ObjectStore.from_env()
    uri = "s3://hala-test/runs/r1/checkpoints/checkpoint-40"
    up = store.upload_dir(checkpoint, uri)
    assert (up.files, up.skipped, up.bytes) == (5, 0, sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file()))
    stored = store.stat(f"{uri}/model.safetensors")
    assert stored.etag.strip('"').endswith("-3") and stored.etag.strip('"') == local_etag(checkpoint / "model.safetensors")
    down = store.download_dir(uri, tmp_path / "restored")
    assert down.files == 5 and down.skipped == 0
    for path in checkpoint.rglob("*"):
        if path.is_file():
            assert _digest(path) == _digest(tmp_path / "restored" / path.relative_to(checkpoint))
    # A second download finds everything in place and moves nothing.
    again = store.download_dir(uri, tmp_path / "restored")
    assert (again.skipped, again.bytes) == (5, 0)


def test_an_interrupted_upload_resumes_with_what_is_missing(s3_env, small_parts, checkpoint, monkeypatch):
    store = ObjectStore.from_env()
    uri = "s3://hala-test/runs/r2/checkpoint"
    real_upload = ObjectStore.upload_file
    done = []

    def crash_after_two(self, path, target):
        if len(done) == 2:
            raise StorageError("connection lost")
        done.append(path.name)
        return real_upload(self, path, target)

    monkeypatch.setattr(ObjectStore, "upload_file", crash_after_two)
    with pytest.raises(StorageError, match="connection lost"):
        store.upload_dir(checkpoint, uri, workers=1)
    monkeypatch.setattr(ObjectStore, "upload_file", real_upload)
    resumed = store.upload_dir(checkpoint, uri)
    assert (resumed.files, resumed.skipped) == (5, 2)
    assert sorted(name for name, _ in store.list(uri)) == [
        "config.json", "empty.txt", "model.safetensors", "nested/optimizer.pt", "trainer_state.json"
    ]  # fmt: skip
    # A file changed since is uploaded again; the others are not.
    (checkpoint / "config.json").write_text('{"model_type": "llama"}')
    third = store.upload_dir(checkpoint, uri)
    assert (third.skipped, third.bytes) == (4, len('{"model_type": "llama"}'))


def test_a_partial_download_is_replaced_by_the_whole_object(s3_env, small_parts, checkpoint, tmp_path):
    store = ObjectStore.from_env()
    uri = "s3://hala-test/runs/r3/checkpoint"
    store.upload_dir(checkpoint, uri)
    target = tmp_path / "model.safetensors"
    target.write_bytes((checkpoint / "model.safetensors").read_bytes()[: 4 * MiB])  # cut short
    # A file of the wrong size where the object should be is not a part of it: the whole object comes again.
    assert store.download_file(f"{uri}/model.safetensors", target) == (checkpoint / "model.safetensors").stat().st_size
    assert _digest(target) == _digest(checkpoint / "model.safetensors")
    assert store.download_file(f"{uri}/model.safetensors", target) is None  # in place: nothing moves


def test_a_refusing_endpoint_fails_with_its_address_after_bounded_retries(monkeypatch, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(storage, "RETRIES", 2)
    (tmp_path / "f").write_text("x")
    start = time.monotonic()
    with pytest.raises(StorageError, match=rf"S3 endpoint http://127.0.0.1:{port} failed stat of s3://hala-x/f after 2 retries"):
        ObjectStore.from_env().upload_file(tmp_path / "f", "s3://hala-x/f")
    assert time.monotonic() - start < 20


def test_wrong_keys_and_missing_settings_are_named(s3_env, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError, match="SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied"):
        ObjectStore.from_env().upload_file(tmp_path / "f", "s3://hala-test/f")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    with pytest.raises(StorageError, match="s3:// URIs need AWS_ENDPOINT_URL"):
        ObjectStore.from_env()


def test_write_check_tells_a_missing_bucket(s3_env):
    store = ObjectStore.from_env()
    store.check_writable("s3://hala-test/runs")
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.check_writable("s3://no-such-bucket-here/runs")


def test_models_and_datasets_come_from_s3(s3_env, tiny, tmp_path, monkeypatch):
    from pathlib import Path

    from hala.corpora import read_pairs
    from hala.models import ModelError, resolve_model
    from hala.recipe import DatasetRef

    monkeypatch.setenv("HALA_CACHE", str(tmp_path / "cache"))
    store = ObjectStore.from_env()
    store.upload_dir(Path(tiny("student-s")), "s3://hala-test/models/student-s")
    local = resolve_model("s3://hala-test/models/student-s")
    assert local.startswith(str(tmp_path / "cache" / "s3" / "hala-test")) and (Path(local) / "config.json").is_file()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"translation": {"en": "Good morning.", "ar": "صباح الخير."}}\n', encoding="utf-8")
    store.upload_file(pairs, "s3://hala-test/data/pairs.jsonl")
    assert read_pairs(DatasetRef(path="s3://hala-test/data/pairs.jsonl"), "en", "ar") == [("Good morning.", "صباح الخير.")]
    with pytest.raises(SourceError, match="^s3://hala-test/models/none-such: nothing is stored there$"):
        resolve_model("s3://hala-test/models/none-such")
    store.upload_file(pairs, "s3://hala-test/models/not-a-model/pairs.jsonl")
    with pytest.raises(ModelError, match="no config.json under this prefix"):
        resolve_model("s3://hala-test/models/not-a-model")


def test_a_new_pod_resumes_student_training_from_checkpoints_in_s3(s3_env, tiny, tmp_path, smoke_recipe):
    """The training stage end to end with its checkpoints in S3: crash, then resume on a blank disk."""
    import json

    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from hala.recipe import Storage, Training
    from hala.stages.train_sft import train_sft
    from hala.stages.train_student import train_student
    from tests.test_stages import CONVERSATIONS

    training = Training(epochs=2, learning_rate=1e-2, batch_size=4, max_length=64, save_steps=2)
    recipe = smoke_recipe.model_copy(
        update={"students": smoke_recipe.students.model_copy(update={"training": training})}
    )
    # Where the student component puts them for pipeline run "run-1".
    checkpoints = Storage(uri="s3://hala-test/runs").run_uri("run-1", "checkpoints", "student-nano-s")
    assert checkpoints == "s3://hala-test/runs/run-1/checkpoints/student-nano-s"
    student = recipe.students.models[0]

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt("pod preempted")

    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny("student-s"), CONVERSATIONS, training, tmp_path / "pod-1", callbacks=[Crash()], checkpoint_uri=checkpoints)
    store = ObjectStore.from_env()
    assert {name.split("/")[0] for name, _ in store.list(checkpoints)} == {"checkpoint-2", "checkpoint-4"}
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS), encoding="utf-8")
    assert student.base == "tiny:student-s"
    resumed = train_student(recipe, student.name, corpus, tmp_path / "pod-2", checkpoint_uri=checkpoints)
    assert resumed["resumed_from_step"] == 4 and resumed["train_steps"] == 6
    assert list(store.list(checkpoints)) == []  # the finished model is what stays
    train_sft(tiny("student-s"), CONVERSATIONS, training, tmp_path / "uninterrupted")
    ref, got = load_file(tmp_path / "uninterrupted" / "model.safetensors"), load_file(tmp_path / "pod-2" / "model.safetensors")
    assert all(torch.allclose(got[k], ref[k], atol=1e-5) for k in ref)

"""S3 under faults: connection resets, 503s, stalls, cut and corrupted downloads between hala and a
real S3 server (SeaweedFS), through a fault-injecting proxy. After each fault: nothing lost, nothing
duplicated, the retries counted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from hala import storage
from hala.storage import ObjectStore, StorageError
from tests.faults.proxy import FaultProxy

MiB = 1024 * 1024


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def proxy(s3_env, monkeypatch):
    """The S3 server behind a fault proxy: hala talks to the proxy; the test's own checks go direct."""
    endpoint = urlparse(s3_env["env"]["AWS_ENDPOINT_URL"])
    fault_proxy = FaultProxy(endpoint.hostname, endpoint.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    monkeypatch.setattr(storage, "PART_SIZE", 5 * MiB)  # a 12 MiB file goes up in 3 parallel parts
    yield fault_proxy
    fault_proxy.close()


def _direct(s3_env) -> ObjectStore:
    env = s3_env["env"]
    return ObjectStore(env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "checkpoint-40"
    (folder / "nested").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(12 * MiB + 7))
    (folder / "config.json").write_text('{"model_type": "lfm2"}')
    (folder / "nested" / "optimizer.pt").write_bytes(os.urandom(2 * MiB))
    (folder / "trainer_state.json").write_text('{"global_step": 40}')
    return folder


def test_a_multipart_upload_through_resets_and_503s_completes_with_its_retries_counted(proxy, s3_env, checkpoint, tmp_path, fault_record):
    uri = f"s3://{s3_env['bucket']}/faults/upload"
    proxy.plan("reset", "503", "reset", "503")
    sent = ObjectStore.from_env().upload_dir(checkpoint, uri)
    assert proxy.applied == ["reset", "503", "reset", "503"]
    # Each broken connection cost one retry, and the transfer says so.
    assert sent.retries >= 4 and (sent.files, sent.skipped) == (4, 0)
    # Nothing lost, nothing duplicated: exactly the four files, byte for byte (read back past the proxy).
    direct = _direct(s3_env)
    stored = [name for name, _ in direct.list(uri)]
    assert sorted(stored) == sorted(_tree(checkpoint))
    direct.download_dir(uri, tmp_path / "back")
    assert _tree(tmp_path / "back") == _tree(checkpoint)
    assert direct.stat(f"{uri}/model.safetensors").etag.strip('"').endswith("-3")
    fault_record("S3: 2 resets and 2 503s during a multipart upload (4 files, 14 MiB, 5 MiB parts)",
                 f"completed after {sent.retries} retries; every file verified by size and ETag",
                 lost=len(set(_tree(checkpoint)) - set(stored)), duplicated=len(stored) - len(set(stored)))  # fmt: skip


def test_a_download_through_a_stall_a_reset_and_a_503_completes(proxy, s3_env, checkpoint, tmp_path, monkeypatch, fault_record):
    uri = f"s3://{s3_env['bucket']}/faults/download"
    _direct(s3_env).upload_dir(checkpoint, uri)
    monkeypatch.setenv("HALA_S3_READ_TIMEOUT", "2")
    proxy.plan(("stall", 4), "reset", "503")
    got = ObjectStore.from_env().download_dir(uri, tmp_path / "restored")
    assert proxy.applied == [("stall", 4), "reset", "503"] and got.retries >= 3
    assert _tree(tmp_path / "restored") == _tree(checkpoint)
    assert not list((tmp_path / "restored").rglob("*.part"))
    fault_record("S3: a 4 s stall (read timeout 2 s), a reset and a 503 during a download", f"completed after {got.retries} retries",
                 lost=len(set(_tree(checkpoint)) - set(_tree(tmp_path / "restored"))))  # fmt: skip


def test_when_the_retries_run_out_the_error_counts_them(proxy, s3_env, tmp_path, monkeypatch, fault_record):
    monkeypatch.setattr(storage, "RETRIES", 2)
    proxy.plan(*["reset"] * 10)
    (tmp_path / "f").write_text("x")
    with pytest.raises(StorageError) as err:
        ObjectStore.from_env().upload_file(tmp_path / "f", f"s3://{s3_env['bucket']}/faults/never")
    assert str(err.value).startswith(f"S3 endpoint {proxy.url} failed stat of s3://{s3_env['bucket']}/faults/never after 2 retries")
    assert proxy.connections == 3  # the first try and two retries, counted by the proxy too
    fault_record("S3: every connection reset (retry budget 2)", "failed naming the endpoint and the request after 2 retries, "
                 f"{proxy.connections} connections seen by the proxy")  # fmt: skip


def test_a_download_corrupted_on_the_way_fails_naming_the_object_and_keeps_nothing(proxy, s3_env, checkpoint, tmp_path, fault_record):
    uri = f"s3://{s3_env['bucket']}/faults/corrupt/model.safetensors"
    _direct(s3_env).upload_file(checkpoint / "model.safetensors", uri)
    proxy.plan("corrupt")
    target = tmp_path / "model.safetensors"
    with pytest.raises(StorageError, match=rf"^download of {uri}: {target} differs from the stored object \(size or ETag\)$"):
        ObjectStore.from_env().download_file(uri, target)
    assert proxy.applied == ["corrupt"] and not target.exists() and not list(tmp_path.glob("*.part"))
    # The next try, unharmed, brings the right bytes.
    ObjectStore.from_env().download_file(uri, target)
    assert _digest(target) == _digest(checkpoint / "model.safetensors")
    fault_record("S3: one byte of a download flipped on the way (ETag mismatch)",
                 "refused with StorageError naming the object; no file kept; the next try is whole")  # fmt: skip


def test_a_cut_download_resumes_moving_only_the_bytes_it_lacks(proxy, s3_env, checkpoint, tmp_path, fault_record):
    uri = f"s3://{s3_env['bucket']}/faults/cut/model.safetensors"
    size = (checkpoint / "model.safetensors").stat().st_size
    _direct(s3_env).upload_file(checkpoint / "model.safetensors", uri)
    proxy.plan(("cut", 5 * MiB))
    target = tmp_path / "model.safetensors"
    with pytest.raises(StorageError, match=rf"cut the download of {uri} after \d+ of {size} bytes .*; a rerun fetches the rest"):
        ObjectStore.from_env().download_file(uri, target)
    (part,) = tmp_path.glob("model.safetensors.*.part")
    kept = part.stat().st_size
    assert 0 < kept <= 5 * MiB and not target.exists()
    proxy.clear()
    moved = ObjectStore.from_env().download_file(uri, target)
    assert moved == size - kept == proxy.object_bytes < size
    assert _digest(target) == _digest(checkpoint / "model.safetensors") and not part.exists()
    fault_record(f"S3: a download cut after {kept / MiB:.1f} of {size / MiB:.1f} MiB",
                 f"the rerun asked for the rest only: {moved / MiB:.1f} MiB ({moved / size:.0%} of the object)")  # fmt: skip


def test_checkpoint_sync_survives_resets_on_the_way_up_and_a_cut_on_the_way_down(proxy, s3_env, checkpoint, tmp_path, fault_record):
    from hala.stages.train_sft import _CheckpointUpload, _restore_checkpoints

    uri = f"s3://{s3_env['bucket']}/faults/run/checkpoints"
    proxy.plan("reset", "reset")
    state = SimpleNamespace(is_world_process_zero=True, global_step=40)
    _CheckpointUpload(uri, checkpoint.parent).on_save(None, state, None)
    assert proxy.applied == ["reset", "reset"]
    assert sorted(n for n, _ in _direct(s3_env).list(uri)) == sorted(f"checkpoint-40/{n}" for n in _tree(checkpoint))
    # A new pod restores the newest checkpoint; its first download is cut, its second completes.
    restored = tmp_path / "pod"
    proxy.clear()
    proxy.plan(*[("cut", 3 * MiB)] * 8)  # every connection of the parallel download: the weights' is cut
    with pytest.raises(StorageError, match="cut the download"):
        _restore_checkpoints(uri, restored)
    # What arrived is not a checkpoint yet: a trainer starting now would not resume from it.
    assert [p.name for p in restored.iterdir()] == [".checkpoint-40.restoring"]
    proxy.clear()
    _restore_checkpoints(uri, restored)
    assert [p.name for p in restored.iterdir()] == ["checkpoint-40"]
    assert _tree(restored / "checkpoint-40") == _tree(checkpoint)
    total = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
    assert proxy.object_bytes < total  # the rest, not the whole
    fault_record("S3: checkpoint sync with 2 resets on upload, then the restore cut",
                 f"uploaded whole; the cut restore left no checkpoint to resume from; the rerun fetched {proxy.object_bytes / total:.0%} of the bytes",
                 lost=len(set(_tree(checkpoint)) - set(_tree(restored / "checkpoint-40"))))  # fmt: skip


def test_an_object_changed_under_an_upload_fails_its_verification_naming_both(proxy, s3_env, checkpoint, fault_record):
    """Another writer replaces the object between hala's upload and its check: the ETag tells."""
    import io

    uri = f"s3://{s3_env['bucket']}/faults/raced/config.json"
    store = ObjectStore.from_env()
    upload = store.client.fput_object
    path = checkpoint / "config.json"

    def then_overwritten(bucket, key, file_path, **kwargs):
        result = upload(bucket, key, file_path, **kwargs)
        other = path.read_bytes().replace(b"lfm2", b"LFM2")  # same size, other bytes
        _direct(s3_env).client.put_object(bucket, key, io.BytesIO(other), len(other))
        return result

    store.client.fput_object = then_overwritten
    with pytest.raises(StorageError, match=rf"^upload of {uri}: the stored object's size or ETag differs from {path}$"):
        store.upload_file(path, uri)
    fault_record("S3: the object replaced by another writer between upload and verification",
                 "refused with StorageError naming the object and the local file")  # fmt: skip

"""A full disk under the shard writes: the shard that did not fit leaves no marker and no partial
file, the error names the path, and a rerun with space completes the rest, reusing what was done."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from hala.corpora import read_jsonl
from hala.shards import ShardStore, run_shards


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs of its own (the test machine runs as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _process(shard):
    # ~96 KB kept per 8-row shard: a shard's file is bigger than the space a filler leaves.
    kept = [{"row": r, "text": "x" * 12_000} for r in shard if r % 5]
    rejected = [{"row": r, "reason": "multiple of five"} for r in shard if not r % 5]
    return kept, rejected, 0


def test_a_full_disk_stops_the_stage_at_the_shard_that_did_not_fit_and_a_rerun_finishes(small_fs, tmp_path, fault_record):
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 200 * 1024))  # 200 KiB left: two shards fit, the third does not
    store = ShardStore(small_fs / "shards")
    with pytest.raises(OSError) as err:
        run_shards(range(80), size=8, job="disk-full", store=store, process=_process)
    assert err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"[Errno 28] cannot write {small_fs / 'shards'}/") and "No space left on device" in str(err.value)
    files = sorted(p.name for p in (small_fs / "shards").iterdir())
    markers = [f for f in files if f.endswith(".done.json")]
    # Every shard on disk is whole (kept, rejects, marker); the one that failed left nothing behind.
    assert not [f for f in files if f.endswith(".partial")]
    assert 1 <= len(markers) < 10
    for marker in markers:
        result = json.loads((small_fs / "shards" / marker).read_text())
        key = marker.removesuffix(".done.json")
        assert len(read_jsonl(small_fs / "shards" / f"{key}.kept.jsonl")) == result["kept"]

    filler.unlink()  # space again
    rerun = run_shards(range(80), size=8, job="disk-full", store=store, process=_process)
    assert [r.reused for r in rerun].count(True) == len(markers) and len(rerun) == 10
    # The same rows as a run that never ran out of space: none lost, none twice.
    clean = run_shards(range(80), size=8, job="disk-full", store=ShardStore(tmp_path / "clean"), process=_process)
    rows = lambda s, results: [row["row"] for r in results for row in read_jsonl(s.kept_path(r.key))]  # noqa: E731
    assert rows(store, rerun) == rows(ShardStore(tmp_path / "clean"), clean) == [r for r in range(80) if r % 5]
    assert os.statvfs(small_fs).f_bavail > 0
    got = rows(store, rerun)
    fault_record(f"disk: the shard folder's filesystem full after {len(markers)} of 10 shards",
                 "stopped with ENOSPC naming the file; no marker or partial file for the shard; the rerun reused the "
                 f"{len(markers)} and completed", lost=64 - len(set(got)), duplicated=len(got) - len(set(got)))  # fmt: skip

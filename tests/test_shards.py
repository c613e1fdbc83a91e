"""Shards: atomic publication, resume after a crash, invalidation, and the checks of the join."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hala.shards import ShardStore, collect, fingerprint, run_shards

ROWS = [{"id": i, "text": f"row {i}"} for i in range(23)]


def _upper(shard):
    kept = [{**r, "text": r["text"].upper()} for r in shard if r["id"] % 7]
    rejected = [{**r, "reason": "multiple of seven"} for r in shard if not r["id"] % 7]
    return kept, rejected, len(shard)


class Crash(Exception):
    pass


def _crashing_after(n):
    done = []

    def process(shard):
        if len(done) == n:
            raise Crash
        done.append(shard[0]["id"])
        return _upper(shard)

    return process, done


def _join(store, results, tmp_path):
    counts = collect(store, results, tmp_path / "kept.jsonl", tmp_path / "rejects.jsonl", expected_shards=5)
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    return counts, kept, rejected


def test_crash_then_resume_redoes_only_missing_shards_without_duplicates_or_losses(tmp_path):
    store = ShardStore(tmp_path / "shards")
    job = fingerprint(model="m", prompt="p")
    crashing, _ = _crashing_after(2)
    with pytest.raises(Crash):
        run_shards(ROWS, size=5, job=job, store=store, process=crashing)
    assert len(list(store.root.glob("*.done.json"))) == 2 and not list(store.root.glob("*.partial"))
    process, redone = _crashing_after(99)
    results = run_shards(ROWS, size=5, job=job, store=store, process=process)
    assert [r.reused for r in results] == [True, True, False, False, False]
    assert redone == [10, 15, 20]  # the first row of each shard done on resume
    counts, kept, rejected = _join(store, results, tmp_path)
    ids = sorted(r["id"] for r in kept + rejected)
    assert ids == list(range(23))  # every row exactly once
    assert counts == {"rows_in": 23, "rows_kept": 19, "rows_rejected": 4, "shards": 5}
    assert [r["id"] for r in rejected] == [0, 7, 14, 21]


def test_changed_job_or_rows_invalidate_exactly_what_they_touch(tmp_path):
    store = ShardStore(tmp_path / "shards")
    run_shards(ROWS, size=5, job=fingerprint(prompt="p"), store=store, process=_upper)
    edited = [dict(r) for r in ROWS]
    edited[12]["text"] = "changed"  # shard 2
    results = run_shards(edited, size=5, job=fingerprint(prompt="p"), store=store, process=_upper)
    assert [r.reused for r in results] == [True, True, False, True, True]
    results = run_shards(ROWS, size=5, job=fingerprint(prompt="another prompt"), store=store, process=_upper)
    assert not any(r.reused for r in results)


def test_workers_split_the_shards_and_join_to_the_whole(tmp_path):
    store = ShardStore(tmp_path / "shards")
    parts = [run_shards(ROWS, size=5, job="j", store=store, process=_upper, worker=w, workers=2) for w in (0, 1)]
    assert [r.index for r in parts[0]] == [0, 2, 4] and [r.index for r in parts[1]] == [1, 3]
    counts, kept, rejected = _join(store, parts[0] + parts[1], tmp_path)
    assert counts["rows_in"] == 23 and [r["id"] for r in kept + rejected] != []
    with pytest.raises(RuntimeError, match=r"shards missing: \[1, 3\] of 5"):
        _join(store, parts[0], tmp_path)
    with pytest.raises(RuntimeError, match=r"shards repeated: \[0\]"):
        _join(store, parts[0] + parts[0][:1] + parts[1], tmp_path)


def test_join_refuses_a_shard_file_that_disagrees_with_its_marker(tmp_path):
    store = ShardStore(tmp_path / "shards")
    results = run_shards(ROWS, size=5, job="j", store=store, process=_upper)
    victim = store.kept_path(results[3].key)
    victim.write_text("".join(victim.read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(RuntimeError, match=r"shard 3 \(.*kept.jsonl\) holds 4 kept rows, its marker says 5"):
        _join(store, results, tmp_path)


def test_a_shard_that_loses_rows_stops_the_stage(tmp_path):
    with pytest.raises(RuntimeError, match="shard 0: 5 rows in but 4 kept \\+ 0 rejected"):
        run_shards(ROWS, size=5, job="j", store=ShardStore(tmp_path), process=lambda s: (s[1:], [], 0))


@pytest.mark.slow
def test_hala_translate_killed_mid_run_resumes_without_duplicates_or_losses(tmp_path, tiny):
    """A real process, SIGKILLed after some shards; the rerun finishes the rest."""
    tiny("teacher")
    source = Path(__file__).resolve().parents[1] / "hala" / "data" / "smoke" / "instructions_more_en.jsonl"
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "hala", "translate", str(source), "--model", "tiny:teacher", "--out", str(out),
        "--shard-size", "4", "--max-new-tokens", "48", "--engine", "transformers",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while len(list((out / "shards").glob("*.done.json"))) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").glob("*.done.json")))
    assert 4 <= done_before < 10 and not (out / "corpus.jsonl").exists()
    finished = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    assert finished.returncode == 0, finished.stderr
    rows = [json.loads(line) for line in (out / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["row"] for r in rows + rejects) == list(range(1, 41))
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sum(m["reused"] for m in manifest) == done_before and len(manifest) == 10


def test_a_damaged_marker_or_a_missing_file_means_the_shard_is_redone(tmp_path):
    store = ShardStore(tmp_path / "shards")
    first = run_shards(ROWS, size=5, job="j", store=store, process=_upper)
    store.marker_path(first[1].key).write_text("{trunc")
    store.rejects_path(first[3].key).unlink()
    again = run_shards(ROWS, size=5, job="j", store=store, process=_upper)
    assert [r.reused for r in again] == [True, False, True, False, True]
    counts, kept, rejected = _join(store, again, tmp_path)
    assert sorted(r["id"] for r in kept + rejected) == list(range(23))


def test_parts_carry_their_shards_even_from_a_shared_cache(tmp_path):
    from hala.shards import join_parts, write_part

    cache = ShardStore(tmp_path / "cache")
    for w in (0, 1):
        run = run_shards(ROWS, size=5, job="j", store=cache, process=_upper, worker=w, workers=2)
        write_part(tmp_path / f"part{w}", cache, "j", run, w, 2)
    cache_files = list(cache.root.iterdir())
    for f in cache_files:
        f.unlink()  # the joining task cannot see the cache
    results, counts = join_parts([tmp_path / "part0", tmp_path / "part1"], tmp_path / "out", "kept.jsonl")
    assert counts == {"rows_in": 23, "rows_kept": 19, "rows_rejected": 4, "shards": 5}
    (tmp_path / "part1" / "shards" / f"{results[-1].key}.kept.jsonl").unlink()
    with pytest.raises(RuntimeError, match=r"part .*part1: shard \d has no file .*kept.jsonl"):
        join_parts([tmp_path / "part0", tmp_path / "part1"], tmp_path / "out2", "kept.jsonl")

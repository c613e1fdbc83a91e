"""Content-addressed shards: the unit of work, of resume and of fan-out for the data stages.

A stage cuts its input stream into shards of ``size`` rows. Each shard's key hashes the job's
fingerprint (model, quantization, prompt, generation settings: whatever changes the output)
with the shard's rows, so a rerun finds the shards it already did and redoes only the missing
ones, and a changed prompt or model invalidates exactly the shards it touches. A shard is
published atomically: its kept and rejected rows first, its done-marker (with the counts)
last; a shard without a marker does not exist. Workers of a fan-out take every
``workers``-th shard, so the same code serves one process and a ``dsl.ParallelFor``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hala.corpora import iter_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

SHARD_FORMAT = "1"  # bump when the rows a shard holds change shape: old shards are then redone
CANARY = -1  # the worker number of a fan-out's canary task: the stream's first shard, checked before any worker starts
EXAMPLE_CHARS = 300  # how much of a rejected row an error message quotes


class KeepRateError(RuntimeError):
    """A stage keeps too few of its rows (or none): a broken model, prompt or input, found before the rest is paid for."""


def reason_family(reason: str) -> str:
    """A reject reason without the turn it happened in: "translation cut at max_new_tokens (turn 1)" counts with (turn 0)."""
    return re.sub(r" \(turn \d+\)$", "", reason)


def top_reject(counts: Counter, rows: Iterable[dict]) -> tuple[str, int, str]:
    """The most common reject reason family in ``counts``, its count, and one rejected row of it from ``rows`` (clipped)."""
    reason, count = counts.most_common(1)[0]
    for row in rows:
        if reason_family(row.get("reason", "")) == reason:
            example = json.dumps({k: v for k, v in row.items() if k != "reason"}, ensure_ascii=False, default=str)
            return reason, count, example if len(example) <= EXAMPLE_CHARS else example[:EXAMPLE_CHARS] + "..."
    return reason, count, "(none kept)"


def _explain(what: str, kept: int, rows_in: int, counts: Counter, rows: Iterable[dict]) -> str:
    if not counts:
        return f"{what}: kept {kept} of {rows_in} rows"
    reason, count, example = top_reject(counts, rows)
    return f"{what}: kept {kept} of {rows_in} rows; top reject reason: {reason!r} ({count} rows); example: {example}"


def empty_output_error(stage: str, rows_in: int, rejects: Path) -> KeepRateError:
    """The error for a stage that kept nothing: its top reject reason, how often, and an example, from its rejects file."""
    counts = Counter(reason_family(r.get("reason", "")) for r in iter_jsonl(rejects)) if Path(rejects).is_file() else Counter()
    where = "; nothing to pass on" if rows_in else "; its input is empty"
    return KeepRateError(_explain(f"{stage}: empty output{where}", 0, rows_in, counts, iter_jsonl(rejects) if counts else []))


@dataclass(frozen=True)
class KeepRate:
    """A stage's lowest acceptable share of kept rows, checked on its shards as they finish."""

    stage: str
    minimum: float

    def check(self, results: Sequence[ShardResult], store: ShardStore, what: str) -> None:
        rows_in = sum(r.rows_in for r in results)
        kept = sum(r.kept for r in results)
        if not self.minimum or not rows_in or kept / rows_in >= self.minimum:
            return
        counts: Counter = Counter()
        for r in results:
            for reason, n in r.rejected_by_reason.items():
                counts[reason_family(reason)] += n
        rows = (row for r in results for row in iter_jsonl(store.rejects_path(r.key)))
        share = f"{kept / rows_in:.0%} kept, under min_keep_rate {self.minimum:g}"
        raise KeepRateError(_explain(f"{self.stage}: {what} ({share}); stopped", kept, rows_in, counts, rows))


def fingerprint(**parts: object) -> str:
    """A stable hash of everything that decides a job's output."""
    text = json.dumps({"format": SHARD_FORMAT, **parts}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_fingerprint(model_path: str) -> str:
    """Identify a local model folder by its configs and tokenizer (contents) and its weight files (names, sizes).

    Hashing every weight byte of a 9B model would take minutes; a retrained or requantised
    model changes config.json or the size of its weight files.
    """
    folder = Path(model_path)
    if not folder.is_dir():
        return model_path
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(folder)).encode())
        if f.suffix in (".json", ".txt", ".model", ".jinja") and f.stat().st_size < 50_000_000:
            digest.update(f.read_bytes())
        else:
            digest.update(str(f.stat().st_size).encode())
    return digest.hexdigest()[:16]


def shard_key(job: str, rows: Sequence[object]) -> str:
    digest = hashlib.sha256(job.encode())
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:24]


def cut(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@dataclass
class ShardResult:
    """What one shard held and what became of it; the done-marker is this, as JSON."""

    index: int
    key: str
    rows_in: int
    kept: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0
    reused: bool = False


class ShardStore:
    """A folder of shards: ``KEY.kept.jsonl``, ``KEY.rejects.jsonl`` and ``KEY.done.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def kept_path(self, key: str) -> Path:
        return self.root / f"{key}.kept.jsonl"

    def rejects_path(self, key: str) -> Path:
        return self.root / f"{key}.rejects.jsonl"

    def marker_path(self, key: str) -> Path:
        return self.root / f"{key}.done.json"

    def done(self, key: str) -> ShardResult | None:
        """The shard's record, or None when it must be (re)done: no marker, a damaged one, or a data file gone."""
        marker = self.marker_path(key)
        if not marker.is_file():
            return None
        try:
            result = ShardResult(**json.loads(marker.read_text(encoding="utf-8")))
        except (ValueError, TypeError):
            log.warning("shard marker %s is damaged; the shard will be redone", marker)
            return None
        if not (self.kept_path(key).is_file() and self.rejects_path(key).is_file()):
            return None
        return result

    def save(self, result: ShardResult, kept: Iterable[dict], rejected: Iterable[dict]) -> None:
        write_jsonl(self.kept_path(result.key), kept)
        write_jsonl(self.rejects_path(result.key), rejected)
        # The marker last: a crash before this line leaves a shard that will simply be redone.
        write_json(self.marker_path(result.key), asdict(result))

    def files(self, key: str) -> tuple[Path, Path, Path]:
        return self.kept_path(key), self.rejects_path(key), self.marker_path(key)


# A shard's work: its rows in, (kept rows, rejected rows each with a "reason", tokens generated) out.
Process = Callable[[list], tuple[list[dict], list[dict], int]]


class ShardRun(list):
    """The shards one worker did or found done (ShardResult), and how many shards the whole stream has."""

    total_shards: int = 0


def run_shards(
    rows: Iterable,
    *,
    size: int,
    job: str,
    store: ShardStore,
    process: Process,
    encode: Callable[[object], object] = lambda row: row,
    worker: int = 0,
    workers: int = 1,
    on_shard: Callable[[ShardResult], None] | None = None,
    keep_rate: KeepRate | None = None,
    canary: bool = False,
) -> ShardRun:
    """Do every shard of ``rows`` that belongs to ``worker`` and is not already in ``store``.

    ``encode`` turns a row into the JSON-able value its shard key hashes. Each shard must
    account for every row it got (kept + rejected = in) or the stage stops: rows are never
    lost in silence. ``keep_rate`` is checked after every shard on this worker's running
    count, so a single worker's first check is its canary. ``canary`` does only the stream's
    first shard (the task a fan-out waits for), whatever ``worker`` is.
    """
    if not 0 <= worker < workers:
        raise ValueError(f"worker {worker} is not in 0..{workers - 1}")
    results = ShardRun()
    for index, shard in enumerate(cut(rows, size)):
        results.total_shards = index + 1  # every worker walks the whole stream, so each knows the total
        if canary and index > 0:
            break
        if index % workers != worker and not canary:
            continue
        key = shard_key(job, [encode(r) for r in shard])
        result = store.done(key)
        if result is not None:
            result.index, result.reused = index, True
        else:
            started = time.perf_counter()
            kept, rejected, tokens = process(shard)
            if len(kept) + len(rejected) != len(shard):
                raise RuntimeError(f"shard {index}: {len(shard)} rows in but {len(kept)} kept + {len(rejected)} rejected")
            by_reason = Counter(r["reason"] for r in rejected)
            result = ShardResult(
                index, key, len(shard), len(kept), len(rejected), dict(by_reason), tokens, time.perf_counter() - started
            )
            store.save(result, kept, rejected)
        results.append(result)
        if on_shard is not None:
            on_shard(result)
        if keep_rate is not None:
            first = len(results) == 1 and index == 0
            keep_rate.check(results, store, "canary shard" if first else f"worker {worker}'s first {len(results)} shards")
    return results


def write_manifest(path: Path, job: str, results: Sequence[ShardResult]) -> None:
    write_jsonl(Path(path), [{"job": job[:24], **asdict(r)} for r in sorted(results, key=lambda r: r.index)])


def read_manifest(path: Path) -> list[ShardResult]:
    return [ShardResult(**{k: v for k, v in row.items() if k != "job"}) for row in iter_jsonl(path)]


def collect(
    store: ShardStore,
    results: Sequence[ShardResult],
    kept_path: Path,
    rejects_path: Path,
    *,
    expected_shards: int | None = None,
    earlier_rejects: tuple[Path, int] | None = None,
    stage: str = "stage",
) -> dict[str, int]:
    """Join the shards, in order, into one kept and one rejects file, checking every count.

    ``earlier_rejects`` (a file and its row count) are rows a stage rejected before sharding
    (the filter's heuristics); they lead the rejects file and count as rows in.

    Stops when a shard is missing or repeated, or when a shard file holds another number of
    rows than its marker says: a corpus with holes or duplicates must not reach training.
    """
    ordered = sorted(results, key=lambda r: r.index)
    indices = [r.index for r in ordered]
    if len(set(indices)) != len(indices):
        raise RuntimeError(f"shards repeated: {sorted(i for i, n in Counter(indices).items() if n > 1)}")
    if expected_shards is not None and indices != list(range(expected_shards)):
        missing = sorted(set(range(expected_shards)) - set(indices))
        raise RuntimeError(f"shards missing: {missing[:20]} of {expected_shards}")

    def stream(kind: str) -> Iterator[dict]:
        if kind == "rejects" and earlier_rejects is not None:
            yield from iter_jsonl(earlier_rejects[0])
        for r in ordered:
            path = store.kept_path(r.key) if kind == "kept" else store.rejects_path(r.key)
            count = 0
            for row in iter_jsonl(path):
                count += 1
                yield row
            expected = r.kept if kind == "kept" else r.rejected
            if count != expected:
                raise RuntimeError(f"shard {r.index} ({path.name}) holds {count} {kind} rows, its marker says {expected}")

    kept = write_jsonl(Path(kept_path), stream("kept"))
    rejected = write_jsonl(Path(rejects_path), stream("rejects"))
    rows_in = sum(r.rows_in for r in ordered) + (earlier_rejects[1] if earlier_rejects else 0)
    if kept + rejected != rows_in:
        raise RuntimeError(f"{rows_in} rows in but {kept} kept + {rejected} rejected")
    if not kept:
        # Never an input to the next stage: the rejects (kept on disk for reading) say why.
        raise empty_output_error(stage, rows_in, Path(rejects_path))
    return {"rows_in": rows_in, "rows_kept": kept, "rows_rejected": rejected, "shards": len(ordered)}


def _place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` atomically, replacing what is there: a hard link, else a copy."""
    if target.exists() and target.samefile(source):
        return
    tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)
    try:
        tmp.hardlink_to(source)
    except OSError:  # another file system
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def write_part(out_dir: Path, store: ShardStore, job: str, run: ShardRun, worker: int, workers: int) -> None:
    """Make ``out_dir`` a self-contained part for :func:`join_parts`: its shards, manifest and ``part.json``.

    Shards found in a shared cache are placed in the part too, so that the task that joins the
    parts needs no access to the cache (on a cluster it only gets the parts' artifacts).
    """
    out_dir = Path(out_dir)
    local = ShardStore(out_dir / "shards")
    for result in run:
        for source, target in zip(store.files(result.key), local.files(result.key), strict=True):
            _place(source, target)
    write_manifest(out_dir / "manifest.jsonl", job, run)
    write_json(out_dir / "part.json", {"worker": worker, "workers": workers, "total_shards": run.total_shards})


def join_parts(
    part_dirs: Sequence[Path], out_dir: Path, kept_name: str, *, earlier_rejects: tuple[Path, int] | None = None,
    stage: str = "stage",
) -> tuple[list[ShardResult], dict[str, int]]:
    """Join the workers' parts into ``out_dir``: one kept file, one rejects file, one manifest.

    Every worker must be there once and every shard exactly once.
    """
    parts = [(Path(d), json.loads((Path(d) / "part.json").read_text(encoding="utf-8"))) for d in part_dirs]
    if not parts:
        raise RuntimeError("no parts to join")
    workers = {p["workers"] for _, p in parts}
    totals = {p["total_shards"] for _, p in parts}
    seen = sorted(p["worker"] for _, p in parts)
    if len(workers) != 1 or len(totals) != 1 or seen != list(range(min(workers))):
        raise RuntimeError(f"parts do not add up: workers {seen}, declared {sorted(workers)}, shard totals {sorted(totals)}")
    out_dir = Path(out_dir)
    joined = ShardStore(out_dir / "shards")
    results: list[ShardResult] = []
    for part_dir, _ in parts:
        store = ShardStore(part_dir / "shards")
        for result in read_manifest(part_dir / "manifest.jsonl"):
            for source, target in zip(store.files(result.key), joined.files(result.key), strict=True):
                if not source.is_file():
                    raise RuntimeError(f"part {part_dir}: shard {result.index} has no file {source.name}")
                _place(source, target)
            results.append(result)
    counts = collect(
        joined,
        results,
        out_dir / kept_name,
        out_dir / "rejects.jsonl",
        expected_shards=min(totals),
        earlier_rejects=earlier_rejects,
        stage=stage,
    )
    write_manifest(out_dir / "manifest.jsonl", "", results)
    return results, counts

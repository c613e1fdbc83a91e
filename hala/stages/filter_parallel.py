"""Stage 3: filter a parallel corpus: heuristic checks first, then an LLM judge (ACCEPT/REJECT).

Three steps, so that the expensive one can fan out:
1. :func:`screen_pairs` streams the corpus once through the heuristics and the duplicate
   check (cheap, and deduplication needs the whole stream in order): survivors go to
   ``survivors.jsonl``, the others to ``heuristic_rejects.jsonl`` with their reason.
2. :func:`judge_pairs` judges the survivors in shards; with several workers each takes every
   n-th shard (one GPU pod each on a cluster). A crash costs at most the shard in flight.
3. :func:`collect_pairs` joins the parts: every candidate ends in exactly one of
   ``pairs.jsonl`` (kept) or ``rejects.jsonl`` with its reason (a bad row's, a heuristic's,
   "judge: REJECT", with P(ACCEPT) when the judge decides by probabilities, or "judge: unparseable
   answer" when it generates), and the counts must add up.

:func:`filter_corpus` runs the three in one process: ``hala filter`` and the tests use it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from hala.corpora import BadRow, estimate_rows, iter_jsonl, iter_pairs, local_path, write_json
from hala.engines import GenerationEngine, LazyEngine, load_engine
from hala.filters import Pair, PairFilter, reason_key
from hala.models import resolve_model
from hala.progress import progress_bar
from hala.recipe import DatasetRef, Filters, Judge, Languages, Sharding
from hala.shards import (
    CANARY,
    KeepRate,
    ShardStore,
    empty_output_error,
    fingerprint,
    join_parts,
    model_fingerprint,
    run_shards,
    write_part,
)

log = logging.getLogger(__name__)

_VERDICT = re.compile(r"\b(ACCEPT|REJECT)\b", re.IGNORECASE)
SURVIVORS = "survivors.jsonl"
EARLY_REJECTS = "heuristic_rejects.jsonl"
SCREEN = "screen.json"


def parse_verdict(answer: str) -> str | None:
    """ACCEPT or REJECT when the answer states exactly one of them, else None."""
    found = {m.upper() for m in _VERDICT.findall(answer)}
    return found.pop() if len(found) == 1 else None


def metric_key(reason: str) -> str:
    """The reason's family as a metric name: "judge: REJECT" -> judge_reject, "length ratio 3.1 ..." -> length_ratio."""
    if reason.startswith("judge: "):
        return "judge_" + reason.removeprefix("judge: ").split()[0].lower()
    return reason_key(reason)


def _screen_key(dataset: DatasetRef, filters: Filters, languages: Languages) -> str:
    # A local file is identified by size and modification time: rereading it to hash it would
    # cost as much as screening it again.
    path = local_path(dataset.path)
    stat = path.stat() if path is not None and path.is_file() else None
    return fingerprint(
        kind="screen",
        dataset=dataset.model_dump(),
        file=[stat.st_size, stat.st_mtime_ns] if stat else None,
        filters=filters.model_dump(),
        languages=languages.model_dump(),
    )


def screen_pairs(dataset: DatasetRef, filters: Filters, languages: Languages, out_dir: Path) -> dict[str, float]:
    """Step 1: the heuristics and the duplicate check over the whole corpus, streamed.

    A rerun on the same local file with the same settings reuses the finished screen.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = iter_pairs(dataset, languages.source, languages.target)  # a missing or wrong file stops here
    key = _screen_key(dataset, filters, languages)
    record = out_dir / SCREEN
    if record.is_file() and (out_dir / SURVIVORS).is_file() and local_path(dataset.path) is not None:
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        if previous.get("key") == key:
            log.info("screen: reusing the finished screen of %s", dataset.path)
            return previous["metrics"]
    # The record goes first and comes back last: files of a screen that did not finish are never reused.
    record.unlink(missing_ok=True)
    src, tgt = languages.source, languages.target
    check = PairFilter(filters, src, tgt)
    counts = Counter()
    started = time.perf_counter()
    survivors_tmp = out_dir / (SURVIVORS + ".partial")
    rejects_tmp = out_dir / (EARLY_REJECTS + ".partial")
    with (
        survivors_tmp.open("w", encoding="utf-8") as survivors,
        rejects_tmp.open("w", encoding="utf-8") as rejects,
        progress_bar("filter: checking pairs", total=estimate_rows(dataset), unit="pair") as bar,
    ):
        for item in rows:
            bar.update(1)
            counts["rows_in"] += 1
            if isinstance(item, BadRow):
                rejected = item.reject(dataset.path)
            else:
                out = {"translation": {src: item.source, tgt: item.target}, "row": item.row}
                reason = check(Pair(item.source, item.target))
                if reason is None:
                    survivors.write(json.dumps({"source": item.source, "target": item.target, "out": out}, ensure_ascii=False) + "\n")
                    counts["survivors"] += 1
                    continue
                rejected = {**out, "reason": reason}
            rejects.write(json.dumps(rejected, ensure_ascii=False) + "\n")
            counts["rejected"] += 1
        for fh in (survivors, rejects):
            fh.flush()
            os.fsync(fh.fileno())
    # Both files appear only once the whole stream has passed.
    survivors_tmp.replace(out_dir / SURVIVORS)
    rejects_tmp.replace(out_dir / EARLY_REJECTS)
    if not counts["survivors"]:
        # Nothing for the judge: stop here, not after its pods have started (the rejects stay for reading).
        raise empty_output_error("filter: heuristic checks", counts["rows_in"], out_dir / EARLY_REJECTS)
    seconds = time.perf_counter() - started
    metrics = {
        "screen_rows_in": float(counts["rows_in"]),
        "screen_survivors": float(counts["survivors"]),
        "screen_rejected": float(counts["rejected"]),
        "screen_pairs_per_s": counts["rows_in"] / seconds if seconds else 0.0,
    }
    write_json(record, {"key": key, "metrics": metrics})
    return metrics


VERDICTS = ("ACCEPT", "REJECT")


def p_accept(logprobs: list[float]) -> float:
    """P(ACCEPT) of the two answers alone: the softmax of their log-probabilities."""
    accept, reject = logprobs
    # (written so that neither exp can overflow, however far apart the two are)
    gap = reject - accept
    return 1.0 / (1.0 + math.exp(gap)) if gap <= 0 else math.exp(-gap) / (1.0 + math.exp(-gap))


def _judge_shard(rows: list[dict], judge: Judge, engine: GenerationEngine) -> tuple[list[dict], list[dict], int]:
    conversations = [
        [{"role": "user", "content": judge.prompt.format(source=r["source"], target=r["target"])}] for r in rows
    ]
    kept, rejected = [], []
    if judge.decision == "probability":
        # The model's own odds of the two answers: nothing to parse, so a model that would answer in a sentence decides too.
        scores = engine.choice_logprobs(conversations, VERDICTS, desc="judging pairs")
        for row, logprobs in zip(rows, scores, strict=True):
            p = p_accept(logprobs)
            if p >= judge.threshold:
                kept.append(row["out"])
            else:
                rejected.append({**row["out"], "reason": "judge: REJECT", "judge_p_accept": round(p, 6)})
        return kept, rejected, 0
    completions = engine.complete(conversations, judge.generation, desc="judging pairs")
    for row, completion in zip(rows, completions, strict=True):
        verdict = parse_verdict(completion.text)
        if verdict == "ACCEPT":
            kept.append(row["out"])
        else:
            reason = "judge: REJECT" if verdict == "REJECT" else "judge: unparseable answer"
            rejected.append({**row["out"], "reason": reason, "judge_answer": completion.text})
    return kept, rejected, sum(c.tokens for c in completions)


def judge_pairs(
    screen_dir: Path,
    judge: Judge | None,
    engine: str,
    out_dir: Path,
    shards: Sharding,
    *,
    worker: int = 0,
    workers: int = 1,
) -> dict[str, float]:
    """Step 2: this worker's shards of the survivors, judged (or all kept when there is no judge).

    ``worker`` -1 is the canary a fan-out waits for: the first shard alone, checked against
    ``judge.min_keep_rate`` (a single worker checks its own first shard the same way).
    """
    started = time.perf_counter()
    canary = worker == CANARY
    out_dir = Path(out_dir)
    if judge is not None:
        judge_path = resolve_model(judge.model, judge.revision)
        generation = judge.generation.model_dump(exclude={"batch_size", "tensor_parallel_size"})
        decision = {"decision": judge.decision} | ({"threshold": judge.threshold} if judge.decision == "probability" else {})
        job = fingerprint(kind="judge", model=model_fingerprint(judge_path), prompt=judge.prompt, generation=generation, **decision)
    else:
        job = fingerprint(kind="heuristics only")
    store = ShardStore(Path(shards.cache) if shards.cache else out_dir / "shards")
    lazy = LazyEngine(lambda: load_engine(judge_path, engine, judge.generation))

    def process(shard: list[dict]) -> tuple[list[dict], list[dict], int]:
        if judge is None:
            return [r["out"] for r in shard], [], 0
        return _judge_shard(shard, judge, lazy.get())

    survivors = json.loads((Path(screen_dir) / SCREEN).read_text(encoding="utf-8"))["metrics"]["screen_survivors"]
    try:
        desc = ("filter: judging pairs" if judge else "filter: sharding kept pairs") + (" (canary)" if canary else "")
        total = min(int(survivors), shards.size) if canary else -(-int(survivors) // workers)
        with progress_bar(desc, total=total, unit="pair") as bar:

            def report(result) -> None:
                bar.update(result.rows_in)
                state = "reused" if result.reused else f"{result.seconds:.1f}s"
                log.info("judge shard %d: %d pairs, %d kept, %d rejected (%s)", result.index, result.rows_in, result.kept, result.rejected, state)

            run = run_shards(
                iter_jsonl(Path(screen_dir) / SURVIVORS),
                size=shards.size,
                job=job,
                store=store,
                process=process,
                worker=0 if canary else worker,
                workers=workers,
                on_shard=report,
                keep_rate=KeepRate("filter: judge", judge.min_keep_rate) if judge else None,
                canary=canary,
            )
    finally:
        lazy.close()
    if not canary:
        write_part(out_dir, store, job, run, worker, workers)
    fresh = [r for r in run if not r.reused]
    seconds = sum(r.seconds for r in fresh)
    metrics = {
        "judged": float(sum(r.rows_in for r in run)),
        "shards": float(len(run)),
        "shards_reused": float(len(run) - len(fresh)),
        "judge_tokens_per_s": sum(r.tokens for r in fresh) / seconds if seconds and judge else 0.0,
        "wall_time_s": time.perf_counter() - started,
    }
    if canary:
        write_json(out_dir / "canary.json", {**metrics, "kept": float(sum(r.kept for r in run))})
    return metrics


def collect_pairs(screen_dir: Path, part_dirs: Sequence[Path], out_dir: Path) -> dict[str, float]:
    """Step 3: kept pairs and every reject in one place; rows in = kept + rejected, or the stage fails."""
    started = time.perf_counter()
    screen_dir, out_dir = Path(screen_dir), Path(out_dir)
    screened = json.loads((screen_dir / SCREEN).read_text(encoding="utf-8"))["metrics"]
    early = (screen_dir / EARLY_REJECTS, int(screened["screen_rejected"]))
    results, counts = join_parts(part_dirs, out_dir, "pairs.jsonl", earlier_rejects=early, stage="filter")
    if counts["rows_in"] != screened["screen_rows_in"]:
        raise RuntimeError(f"filter: {screened['screen_rows_in']:.0f} rows screened but {counts['rows_in']} accounted for")
    by_reason = Counter(metric_key(row["reason"]) for row in iter_jsonl(out_dir / "rejects.jsonl"))
    fresh = [r for r in results if not r.reused]
    seconds = sum(r.seconds for r in fresh)
    metrics = {
        "rows_in": float(counts["rows_in"]),
        "rows_kept": float(counts["rows_kept"]),
        "rows_rejected": float(counts["rows_rejected"]),
        "shards": float(len(results)),
        "shards_reused": float(len(results) - len(fresh)),
        "judge_tokens_per_s": sum(r.tokens for r in fresh) / seconds if seconds else 0.0,
        "screen_pairs_per_s": screened["screen_pairs_per_s"],
        "wall_time_s": time.perf_counter() - started,
    }
    metrics.update({f"rejected_{key}": float(n) for key, n in sorted(by_reason.items())})
    return metrics


def filter_corpus(
    dataset: DatasetRef,
    filters: Filters,
    languages: Languages,
    out_dir: Path,
    *,
    judge: Judge | None,
    engine: str = "auto",
    shards: Sharding | None = None,
) -> dict[str, float]:
    """Filter ``dataset`` into ``out_dir`` in one process: heuristics always, the judge when given."""
    started = time.perf_counter()
    screen_pairs(dataset, filters, languages, out_dir)
    judge_pairs(out_dir, judge, engine, out_dir, shards or Sharding())
    metrics = collect_pairs(out_dir, [out_dir], out_dir)
    return {**metrics, "wall_time_s": time.perf_counter() - started}

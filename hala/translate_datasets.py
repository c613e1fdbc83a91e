"""Translating conversation datasets at corpus scale: streamed, sharded, resumable, faithful.

The bootstrap stage (teacher), the corpus stage (translator) and ``hala translate`` all run
:func:`translate_datasets`. Each output row keeps its source turns next to the translated
ones, the dataset and row it came from; each reject says why. A rerun with the same model,
prompt and settings reuses every finished shard (see :mod:`hala.shards`).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from hala.corpora import ROLES, BadRow, ConversationRow, estimate_rows, iter_conversations, write_json
from hala.engines import Completion, GenerationEngine, LazyEngine, load_engine
from hala.filters import answered_instead, reason_key, source_problem
from hala.progress import progress_bar
from hala.recipe import DatasetRef, Filters, Languages, TranslationJob
from hala.shards import (
    CANARY,
    KeepRate,
    ShardResult,
    ShardStore,
    fingerprint,
    join_parts,
    model_fingerprint,
    run_shards,
    write_part,
)
from hala.translation import (
    RULES_VERSION,
    Budget,
    Plan,
    UnfaithfulTranslation,
    assemble,
    plan_text,
    translation_conversations,
)

log = logging.getLogger(__name__)

Item = tuple[str, ConversationRow | BadRow]  # (dataset path, row)


def _encode(item: Item) -> object:
    dataset, row = item
    if isinstance(row, BadRow):
        return [dataset, row.row, "bad", row.reason]
    return [dataset, row.row, row.messages]


def plan_turns(
    messages: Sequence[dict], job: TranslationJob, budget: Budget, checks: Filters, languages: Languages
) -> list[tuple[dict, Plan | None]]:
    """Each turn of a conversation with the pieces it is sent to the model in (None: kept as it is;
    dropped system turns are left out). Raises UnfaithfulTranslation for a turn the stage rejects.
    The stages and the job-size estimate (:mod:`hala.job_size`) both cut conversations here."""
    turns: list[tuple[dict, Plan | None]] = []
    for i, message in enumerate(messages):
        if message["role"] not in ROLES:  # a tool or function turn the dataset keeps: data, not language
            turns.append((message, None))
            continue
        if message["role"] == "system" and job.system_prompt != "translate":
            if job.system_prompt == "keep":
                turns.append((message, None))
            continue
        if len(message["content"]) > job.max_turn_chars:
            raise UnfaithfulTranslation(f"turn too long: {len(message['content'])} chars > {job.max_turn_chars} (turn {i})")
        problem = source_problem(message["content"], checks, languages.source)
        if problem:
            raise UnfaithfulTranslation(f"{problem} (turn {i})")
        turns.append((message, plan_text(message["content"], budget)))
    return turns


def _translate_shard(
    items: list[Item], engine: GenerationEngine, prompt: str, job: TranslationJob, languages: Languages
) -> tuple[list[dict], list[dict], int]:
    """Translate every turn of every conversation of one shard; one engine call for all its pieces."""
    checks = Filters()
    budget = Budget(job.source_budget, engine.count_tokens, languages.source)
    kept: list[dict] = []
    rejected: list[dict] = []
    planned: list[tuple[str, ConversationRow, list[tuple[dict, Plan | None]]]] = []
    for dataset, row in items:
        if isinstance(row, BadRow):
            rejected.append(row.reject(dataset))
            continue
        try:
            turns = plan_turns(row.messages, job, budget, checks, languages)
        except UnfaithfulTranslation as err:
            rejected.append({"dataset": dataset, "row": row.row, "source_messages": row.messages, "reason": str(err)})
            continue
        planned.append((dataset, row, turns))
    requests = [text for _, _, turns in planned for _, plan in turns if plan for text in plan.requests]
    completions = iter(
        engine.complete(translation_conversations(requests, prompt), job.generation, desc="translating pieces")
        if requests
        else []
    )
    tokens = 0
    for dataset, row, turns in planned:
        messages, reason = [], None
        for i, (message, plan) in enumerate(turns):
            if plan is None:
                messages.append(dict(message))
                continue
            answers: list[Completion] = list(itertools.islice(completions, len(plan.requests)))
            tokens += sum(a.tokens for a in answers)
            if reason is not None:
                continue
            try:
                text = assemble(plan, answers)
            except UnfaithfulTranslation as err:
                reason = f"{err} (turn {i})"
                continue
            if " ".join(text.casefold().split()) == " ".join(message["content"].casefold().split()) and plan.requests:
                reason = f"untranslated copy (turn {i})"
                continue
            if answered_instead(message["content"], text):
                reason = f"answered instead of translated (turn {i})"
                continue
            messages.append({"role": message["role"], "content": text})
        if reason is None and not any(m["role"] != "system" for m in messages):
            reason = "no user or assistant turn to translate"
        out = {"messages": messages, "source_messages": row.messages, "dataset": dataset, "row": row.row}
        if reason is None:
            kept.append(out)
        else:
            rejected.append({**out, "reason": reason})
    return kept, rejected, tokens


def _job_key(model_path: str, prompt: str, job: TranslationJob, languages: Languages) -> str:
    # Batch size and tensor parallelism change how the work is run, not what it produces.
    generation = job.generation.model_dump(exclude={"batch_size", "tensor_parallel_size"})
    import pysbd

    return fingerprint(
        kind="translate",
        rules=[RULES_VERSION, pysbd.__version__, Filters().model_dump(), job.max_turn_chars],
        model=model_fingerprint(model_path),
        prompt=prompt,
        generation=generation,
        system_prompt=job.system_prompt,
        source_budget=job.source_budget,
        languages=languages.model_dump(),
    )


def translate_datasets(
    datasets: Sequence[DatasetRef],
    model_path: str,
    prompt: str,
    job: TranslationJob,
    languages: Languages,
    engine: str,
    out_dir: Path,
    *,
    worker: int = 0,
    workers: int = 1,
    kept_name: str = "corpus.jsonl",
    stage: str = "translate",
) -> dict[str, float]:
    """Translate ``datasets`` into ``out_dir``: ``kept_name``, ``rejects.jsonl`` and ``manifest.jsonl``.

    With ``workers`` > 1 this call does only its share of the shards and leaves a part
    (``part.json``, its manifest and shards); :func:`collect_parts` joins the parts. ``worker``
    -1 is the canary a fan-out waits for: the first shard alone, checked against
    ``job.min_keep_rate`` (a single worker checks its own first shard the same way).
    """
    canary = worker == CANARY
    out_dir = Path(out_dir)
    started = time.perf_counter()
    # Opening every stream first: a file that is missing or has no usable rows stops the job here.
    streams = [(ds.path, iter_conversations(ds)) for ds in datasets]
    items: Iterator[Item] = itertools.chain.from_iterable(((path, row) for row in rows) for path, rows in streams)
    totals = [estimate_rows(ds) for ds in datasets]
    total = None if None in totals else min(sum(totals), job.shards.size) if canary else -(-sum(totals) // workers)
    store = ShardStore(Path(job.shards.cache) if job.shards.cache else out_dir / "shards")
    key = _job_key(model_path, prompt, job, languages)
    backend = engine
    lazy = LazyEngine(lambda: load_engine(model_path, backend, job.generation))
    timing = {"tokens": 0, "seconds": 0.0}
    with progress_bar(f"{stage}: translating conversations{' (canary)' if canary else ''}", total=total, unit="row") as bar:

        def on_shard(result: ShardResult) -> None:
            bar.update(result.rows_in)
            if not result.reused:
                timing["tokens"] += result.tokens
                timing["seconds"] += result.seconds
                bar.set_postfix(tok_s=f"{timing['tokens'] / max(timing['seconds'], 1e-9):.0f}", refresh=False)
            state = "reused" if result.reused else f"{result.tokens / max(result.seconds, 1e-9):.0f} tok/s"
            log.info("shard %d: %d rows, %d kept, %d rejected (%s)", result.index, result.rows_in, result.kept, result.rejected, state)

        try:
            results = run_shards(
                items,
                size=job.shards.size,
                job=key,
                store=store,
                process=lambda shard: _translate_shard(shard, lazy.get(), prompt, job, languages),
                encode=_encode,
                worker=0 if canary else worker,
                workers=workers,
                on_shard=on_shard,
                keep_rate=KeepRate(stage, job.min_keep_rate),
                canary=canary,
            )
        finally:
            lazy.close()
    if canary:
        metrics = _metrics(results, None, time.perf_counter() - started)
        write_json(out_dir / "canary.json", metrics)
        return metrics
    write_part(out_dir, store, key, results, worker, workers)
    if workers > 1:
        return _metrics(results, None, time.perf_counter() - started)
    return collect_parts([out_dir], out_dir, kept_name, stage)


def collect_parts(part_dirs: Sequence[Path], out_dir: Path, kept_name: str = "corpus.jsonl", stage: str = "translate") -> dict[str, float]:
    """Join the workers' parts into one dataset, checking that every shard is there exactly once; an empty one is an error."""
    started = time.perf_counter()
    results, counts = join_parts(part_dirs, out_dir, kept_name, stage=stage)
    return _metrics(results, counts, time.perf_counter() - started)


def _metrics(results: Sequence[ShardResult], counts: dict | None, wall: float) -> dict[str, float]:
    """Totals over shards; tokens/s counts only shards generated now, not those reused from a past run."""
    fresh = [r for r in results if not r.reused]
    tokens, seconds = sum(r.tokens for r in fresh), sum(r.seconds for r in fresh)
    by_reason: Counter[str] = Counter()
    for r in results:
        for reason, n in r.rejected_by_reason.items():
            by_reason[reason_key(reason)] += n
    metrics = {
        "rows_in": float(sum(r.rows_in for r in results)),
        "rows_kept": float(sum(r.kept for r in results)),
        "rows_rejected": float(sum(r.rejected for r in results)),
        "shards": float(len(results)),
        "shards_reused": float(sum(r.reused for r in results)),
        "tokens_generated": float(tokens),
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "wall_time_s": wall,
    }
    if counts is not None and counts["rows_in"] != metrics["rows_in"]:
        raise RuntimeError(f"collected {counts['rows_in']} rows but the shards hold {metrics['rows_in']:.0f}")
    metrics.update({f"rejected_{k}": float(n) for k, n in sorted(by_reason.items())})
    return metrics

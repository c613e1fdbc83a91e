"""Throughput and peak memory of the filter stage without the LLM judge, on one core.

Writes a JSONL file of synthetic EN-AR pairs (the bundled sentences with numbers mixed in so
that most are distinct, plus planted problems: copies, duplicates, lost placeholders, bad
rows), then runs the filter stage's own function on it: streamed reading, heuristics,
exact and near-duplicate removal, shards, the joined output files. Prints the figures and
writes them as JSON.

    .venv/bin/python benchmarks/filter_throughput.py --pairs 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target is stated

from report import emit  # benchmarks/report.py (scripts run from benchmarks/)
from hala.recipe import DatasetRef, Filters, Languages, Sharding  # noqa: E402
from hala.stages.filter_parallel import filter_corpus  # noqa: E402
from hala.tiny import teacher_pairs  # noqa: E402


def write_synthetic_pairs(path: Path, n: int, seed: int = 0) -> None:
    base = teacher_pairs()
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            en, ar = base[rng.randrange(len(base))]
            roll = rng.random()
            if roll < 0.001:
                fh.write('{"translation": {"en": "broken row\n')  # malformed JSON
                continue
            if roll < 0.02:
                en, ar = en, en  # untranslated copy
            elif roll < 0.04:
                en, ar = f"Use {{name}} in line {i}. {en}", f"{ar} {i}"  # lost placeholder
            elif roll >= 0.06 or i == 0:  # else: likely an exact duplicate of an earlier row
                en, ar = f"{en} (item {i})", f"{ar} (البند {i})"
            fh.write(json.dumps({"translation": {"en": en, "ar": ar}}, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--no-near-duplicates", action="store_true", help="exact duplicates only (no MinHash)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/filter_throughput.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        write_synthetic_pairs(data, args.pairs)
        settings = Filters(near_duplicates=not args.no_near_duplicates)
        start = time.perf_counter()
        metrics = filter_corpus(
            DatasetRef(path=str(data)), settings, Languages(), Path(tmp) / "out", judge=None, shards=Sharding(size=8192)
        )
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "filter_throughput",
        "pairs": args.pairs,
        "near_duplicates": settings.near_duplicates,
        "seconds": round(seconds, 1),
        "pairs_per_second": round(args.pairs / seconds, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "kept": int(metrics["rows_kept"]),
        "rejected": {k.removeprefix("rejected_"): int(v) for k, v in metrics.items() if k.startswith("rejected_")},
        "conserved": metrics["rows_in"] == metrics["rows_kept"] + metrics["rows_rejected"] == args.pairs,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

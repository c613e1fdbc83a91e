"""Throughput and peak memory of the heuristic pair filters (no LLM judge), on one core.

Synthetic EN-AR pairs are built from the bundled sentences with numbers mixed in so that most
are distinct, plus a share of planted problems (copies, duplicates, lost placeholders). Prints
the figures and writes them as JSON.

    .venv/bin/python benchmarks/filter_throughput.py --pairs 100000 --out benchmarks/results/filter_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target is stated

from hala.filters import Pair, filter_pairs  # noqa: E402
from hala.recipe import Filters  # noqa: E402
from hala.stages.filter_parallel import metric_key  # noqa: E402
from hala.tiny import teacher_pairs  # noqa: E402


def synthetic_pairs(n: int, seed: int = 0):
    base = teacher_pairs()
    rng = random.Random(seed)
    for i in range(n):
        en, ar = base[rng.randrange(len(base))]
        roll = rng.random()
        if roll < 0.02:
            yield Pair(en, en)  # untranslated copy
        elif roll < 0.04:
            yield Pair(f"Use {{name}} in line {i}. {en}", f"{ar} {i}")  # lost placeholder
        elif roll < 0.06 and i > 0:
            yield Pair(en, ar)  # likely an exact duplicate of an earlier row
        else:
            yield Pair(f"{en} (item {i})", f"{ar} (البند {i})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--no-near-duplicates", action="store_true", help="exact duplicates only (no MinHash)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/filter_throughput.json"))
    args = parser.parse_args()

    settings = Filters(near_duplicates=not args.no_near_duplicates)
    reasons: Counter = Counter()
    start = time.perf_counter()
    for _, reason in filter_pairs(synthetic_pairs(args.pairs), settings, "en", "ar"):
        reasons[metric_key(reason) if reason else "kept"] += 1
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "filter_throughput",
        "pairs": args.pairs,
        "near_duplicates": settings.near_duplicates,
        "seconds": round(seconds, 2),
        "pairs_per_second": round(args.pairs / seconds, 1),
        "peak_rss_mb": round(peak_mb, 1),
        "outcomes": dict(reasons),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

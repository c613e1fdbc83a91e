"""What the canary costs at the real recipes' scale: its rows against each generating stage's rows.

    .venv/bin/python benchmarks/canary_share.py [--recipe hala-nano]

Rows come from the recipe (shard sizes, workers, limits) and from the datasets' cards (README,
"The paper's data mix"). A stage with one worker checks its own first shard, so its canary
costs no extra rows; a fan-out's canary task translates or judges the first shard, which a
worker does again unless ``shards.cache`` is shared. The judge's rows are the pairs that pass
the heuristics, not known before a run; the bound used is the 439,592 pairs the report kept
after the judge (the judge sees at least those). Writes benchmarks/results/canary_share.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "canary_share.json"
JUDGE_KEPT_IN_REPORT = 439_592  # OPUS-100 ar-en pairs the report's judge kept (a lower bound on those it judged)


def shares(recipe) -> dict[str, dict]:
    stages = {
        "bootstrap": (recipe.bootstrap.shards, recipe.bootstrap.dataset.limit),
        "judge": (recipe.judge.shards, JUDGE_KEPT_IN_REPORT),
        "corpus": (recipe.corpus.shards, sum(ds.limit or 0 for ds in recipe.corpus.datasets)),
    }
    out = {}
    for stage, (shards, rows) in stages.items():
        canary = min(shards.size, rows)
        extra = 0 if shards.workers < 2 or shards.cache else canary
        out[stage] = {
            "rows": rows,
            "workers": shards.workers,
            "canary_rows": canary,
            "canary_share": canary / rows,
            "extra_rows": extra,
            "extra_share": extra / rows,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", help="recipes to size (default: hala-nano and hala-9b)")
    args = parser.parse_args()
    from hala.recipe import load_recipe

    result = {name: shares(load_recipe(name)) for name in args.recipe or ["hala-nano", "hala-9b"]}
    for name, stages in result.items():
        for stage, row in stages.items():
            print(
                f"{name:10s} {stage:9s} rows {row['rows']:>9,}  workers {row['workers']}  canary {row['canary_rows']:>5,} rows "
                f"({row['canary_share']:.2%})  extra rows {row['extra_rows']:>5,} ({row['extra_share']:.2%})"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

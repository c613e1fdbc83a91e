"""OALL v2 evaluation on the CPU fixtures with lm-eval's HF backend: items per second, and model rows per item.

    .venv/bin/python benchmarks/eval_throughput.py [--model PATH] [--repeat 2]

Every fixture subset of the six tasks (96 items, 3.9 choices on average) is scored by
hala.stages.evaluate.evaluate_benchmarks, twice: with lm-eval's logits cache (its default: choices
that share a context and are one token long are read from one forward pass of the context) and
without it (one sequence per choice). A forward hook counts the sequences the model reads.
Prints the figures and writes benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "eval_throughput.json"


def measure(model: str, logits_cache: bool) -> dict:
    from lm_eval.models.huggingface import HFLM

    from hala.recipe import Evaluation
    from hala.stages import evaluate

    rows = {"n": 0, "calls": 0}

    def counted(model_path, backend, batch_size):
        lm = HFLM(pretrained=model_path, batch_size=batch_size, device="cpu", dtype="float32", logits_cache=logits_cache)

        def hook(_module, args, kwargs):
            ids = args[0] if args else kwargs["input_ids"]
            rows["n"] += int(ids.shape[0])
            rows["calls"] += 1

        lm.model.register_forward_pre_hook(hook, with_kwargs=True)
        return lm

    evaluation = Evaluation(source="fixtures", batch_size=16)
    counts = evaluate.check_benchmark_data(evaluation)
    original, evaluate._lm_eval_model = evaluate._lm_eval_model, counted
    try:
        started = time.monotonic()
        result = evaluate.evaluate_benchmarks(model, evaluation, "transformers", counts, items=True)
        wall = time.monotonic() - started
    finally:
        evaluate._lm_eval_model = original
    items = [i for t in result["tasks"].values() for s in t["subsets"].values() for i in s["items"]]
    choices = sum(len(i["choices"]) for i in items)
    return {
        "logits_cache": logits_cache,
        "items": len(items),
        "choices": choices,
        "model_rows": rows["n"],
        "forward_calls": rows["calls"],
        "rows_per_item": round(rows["n"] / len(items), 2),
        "scoring_s": result["seconds"],
        "wall_s": round(wall, 2),
        "items_per_s": round(len(items) / result["seconds"], 1),
        "average": result["average"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (default: the smoke world's tiny student-m)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting; the fastest is kept")
    args = parser.parse_args()
    from hala.tiny import tiny_model_path

    model = args.model or str(tiny_model_path("student-m"))
    runs = {}
    for cache in (True, False):
        tries = [measure(model, cache) for _ in range(args.repeat)]
        runs["cached" if cache else "uncached"] = min(tries, key=lambda r: r["scoring_s"])
    cached, uncached = runs["cached"], runs["uncached"]
    assert cached["average"] == uncached["average"], "the logits cache changed the scores"
    result = {"model": model, **runs, "speedup_cached": round(uncached["scoring_s"] / cached["scoring_s"], 2)}
    for name, r in runs.items():
        print(f"{name:9s} {r['items']} items, {r['choices']} choices: {r['items_per_s']} items/s, "
              f"{r['model_rows']} model rows ({r['rows_per_item']} per item) in {r['forward_calls']} forward calls")  # fmt: skip
    print(f"logits cache: {result['speedup_cached']}x faster, same scores (average {cached['average']:.2f})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

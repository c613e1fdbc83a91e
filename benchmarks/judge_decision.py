"""The judge's two ways on the CPU tiny judge: pairs/s deciding by probabilities vs generating 8 tokens.

    .venv/bin/python benchmarks/judge_decision.py [--pairs 180] [--repeat 2]

Both ways score the same pairs of the smoke world's candidates with the recipe's default prompt,
in batches of 8; the agreement of their decisions is printed too. Writes
benchmarks/results/judge_decision.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "judge_decision.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=2, help="runs per way; the fastest is kept")
    args = parser.parse_args()
    from hala.corpora import read_pairs
    from hala.engines import TransformersEngine
    from hala.recipe import DatasetRef, Generation, Judge
    from hala.stages.filter_parallel import VERDICTS, p_accept, parse_verdict
    from hala.tiny import tiny_model_path

    prompt = Judge.model_fields["prompt"].default
    pairs = read_pairs(DatasetRef(path="bundled:smoke/parallel_candidates_en_ar.jsonl", limit=args.pairs), "en", "ar")
    conversations = [[{"role": "user", "content": prompt.format(source=en, target=ar)}] for en, ar in pairs]
    engine = TransformersEngine(str(tiny_model_path("judge")))
    generation = Generation(max_new_tokens=8, batch_size=8)

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(args.repeat):
            started = time.monotonic()
            out = fn()
            best = min(best, time.monotonic() - started)
        return best, out

    gen_s, answers = timed(lambda: engine.complete(conversations, generation))
    prob_s, scores = timed(lambda: engine.choice_logprobs(conversations, VERDICTS, batch_size=8))
    generated = [parse_verdict(a.text) for a in answers]
    decided = ["ACCEPT" if p_accept(s) >= 0.5 else "REJECT" for s in scores]
    result = {
        "pairs": len(pairs),
        "generate_8_tokens": {"seconds": round(gen_s, 2), "pairs_per_s": round(len(pairs) / gen_s, 1),
                              "unparseable": sum(v is None for v in generated)},
        "probability": {"seconds": round(prob_s, 2), "pairs_per_s": round(len(pairs) / prob_s, 1)},
        "speedup_probability": round(gen_s / prob_s, 2),
        "agreement": round(sum(a == b for a, b in zip(generated, decided, strict=True)) / len(pairs), 3),
    }  # fmt: skip
    print(f"{len(pairs)} pairs: generating 8 tokens {result['generate_8_tokens']['pairs_per_s']} pairs/s, "
          f"probabilities {result['probability']['pairs_per_s']} pairs/s ({result['speedup_probability']}x); "
          f"same decision for {result['agreement']:.1%}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

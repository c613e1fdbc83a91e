"""CPU translation: length-sorted batched generation against a one-at-a-time loop, in one run.

Both use the same tiny model (the smoke world's teacher), the same inputs (every turn of
the bundled smoke conversations) and greedy decoding; the figure is the ratio of the two
wall times. Prints the figures and writes them as JSON.

    .venv/bin/python benchmarks/translate_batching.py --batch-size 16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from report import emit, translation_texts  # benchmarks/report.py (scripts run from benchmarks/)
from hala.engines import TransformersEngine
from hala.recipe import Generation
from hala.tiny import tiny_model_path
from hala.translation import translation_conversations

PROMPT = "Translate from English to Arabic: {text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/translate_batching.json"))
    args = parser.parse_args()

    texts = translation_texts()
    conversations = translation_conversations(texts, PROMPT)
    engine = TransformersEngine(str(tiny_model_path("teacher")))
    engine.complete(conversations[:4], Generation(max_new_tokens=8, batch_size=4))  # warm-up, not timed

    batched_gen = Generation(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    start = time.perf_counter()
    batched = engine.complete(conversations, batched_gen, desc="batched")
    batched_s = time.perf_counter() - start

    single_gen = Generation(max_new_tokens=args.max_new_tokens, batch_size=1)
    start = time.perf_counter()
    single = [engine.complete([c], single_gen, desc="one at a time")[0] for c in conversations]
    single_s = time.perf_counter() - start

    same = sum(a.text == b.text for a, b in zip(batched, single, strict=True))
    tokens = sum(c.tokens for c in single)
    result = {
        "benchmark": "translate_batching",
        "model": "tiny:teacher (smoke world)",
        "texts": len(texts),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "batched_seconds": round(batched_s, 2),
        "one_at_a_time_seconds": round(single_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "batched_tokens_per_s": round(sum(c.tokens for c in batched) / batched_s, 1),
        "one_at_a_time_tokens_per_s": round(tokens / single_s, 1),
        "identical_outputs": f"{same}/{len(texts)}",
        "torch_threads": __import__("torch").get_num_threads(),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

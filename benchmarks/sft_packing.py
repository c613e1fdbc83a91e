"""SFT throughput with sequence packing against padded batches, same data and model, in one run.

Trains the same model twice with hala's SFT stage (``hala.stages.train_sft``): once packing
conversations into ``max_length`` rows without padding, once in padded batches. Reports trained
tokens per second for each, their ratio, and the share of padding the padded batches carry
(estimated over a random batch order, as the trainer's sampler draws them). The data are the
bundled smoke conversations (translation pairs and multi-turn chats) repeated to ``--rows``.

    .venv/bin/python benchmarks/sft_packing.py                      # CPU: a small Llama, built here
    python benchmarks/sft_packing.py --hidden-size 1024 --layers 12 # GPU: a larger one, bf16
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

from report import emit  # benchmarks/report.py (scripts run from benchmarks/)
from hala.corpora import read_conversations
from hala.recipe import DatasetRef, Training
from hala.stages.train_sft import train_sft
from hala.tiny import build_attention_only, teacher_pairs

PROMPT = "Translate from English to Arabic: {text}"


def conversations(rows: int) -> list[list[dict[str, str]]]:
    pool = [[{"role": "user", "content": PROMPT.format(text=en)}, {"role": "assistant", "content": ar}] for en, ar in teacher_pairs()]
    for name in ("instructions_more_en.jsonl", "instructions_features_en.jsonl"):
        pool += [list(c) for c in read_conversations(DatasetRef(path=f"bundled:smoke/{name}"))]
    random.Random(0).shuffle(pool)
    return [pool[i % len(pool)] for i in range(rows)]


def padding_fraction(model: str, convs, training: Training) -> float:
    """Share of pad tokens in padded batches of ``batch_size`` drawn in a random order."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = [min(len(tokenizer.apply_chat_template(c, tokenize=True, return_dict=False)), training.max_length) for c in convs]
    random.Random(training.seed).shuffle(lengths)
    real = padded = 0
    for start in range(0, len(lengths), training.batch_size):
        batch = lengths[start : start + training.batch_size]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / padded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512, help="training conversations")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--attention", default="default", help="attention kernel (Training.attention)")
    parser.add_argument("--model", help="train this model instead of building a Llama")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sft_packing.json"))
    args = parser.parse_args()

    import torch

    convs = conversations(args.rows)
    with tempfile.TemporaryDirectory(prefix="hala-bench-") as tmp:
        model = args.model or build_attention_only(Path(tmp) / "model", args.hidden_size, args.layers)
        figures = {}
        for packing in ("always", "never"):
            training = Training(
                epochs=1, learning_rate=1e-4, batch_size=args.batch_size, max_length=args.max_length, packing=packing, attention=args.attention
            )
            figures[packing] = train_sft(model, convs, training, Path(tmp) / f"out-{packing}")
        pad = padding_fraction(model, convs, training)
    packed, padded = figures["always"], figures["never"]
    emit(
        {
            "benchmark": "sft_packing",
            "model": args.model or f"random Llama, hidden {args.hidden_size}, {args.layers} layers",
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "attention": args.attention,
            "precision": "bf16 autocast" if torch.cuda.is_available() else "float32",
            "conversations": len(convs),
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "trained_tokens": int(packed["train_tokens"]),
            "packed_rows": int(packed["train_rows"]),
            "packed_steps": int(packed["train_steps"]),
            "padded_steps": int(padded["train_steps"]),
            "packed_tokens_per_s": round(packed["train_tokens_per_second"], 1),
            "padded_tokens_per_s": round(padded["train_tokens_per_second"], 1),
            "speedup": round(packed["train_tokens_per_second"] / padded["train_tokens_per_second"], 2),
            "padding_fraction_padded": round(pad, 3),
            "packing_leak": packed["packing_leak"],
            "packed_final_loss": round(packed["train_loss"], 4),
            "padded_final_loss": round(padded["train_loss"], 4),
            "torch_threads": torch.get_num_threads(),
        },
        args.out,
    )


if __name__ == "__main__":
    main()

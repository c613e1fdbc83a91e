"""The capacity plan's memory estimates against measured peak memory, and the plan's own speed.

    .venv/bin/python benchmarks/plan_memory.py

On this machine (CPU) each case runs in a fresh process: it builds a random model from a config
(LFM2 hybrid conv/attention and an attention-only Llama, at two sizes each), then either takes
two training steps as hala's SFT does on CPU (fp32 weights, AdamW, no checkpointing) or
generates a batch greedily. Measured is the peak resident memory above the process's memory
after imports; the estimate is hala.plan's for the same shape and settings. Then it times
``plan_recipe`` on the shipped recipes offline. Writes benchmarks/results/plan_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "plan_memory.json"
VOCAB = 16384

MODELS = {
    "lfm2-s": {"model_type": "lfm2", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
               "num_key_value_heads": 4, "layer_types": ["conv", "full_attention"] * 4, "block_auto_adjust_ff_dim": False},
    "lfm2-m": {"model_type": "lfm2", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
               "num_key_value_heads": 8, "layer_types": ["conv", "full_attention"] * 6, "block_auto_adjust_ff_dim": False},
    "llama-s": {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
                "num_key_value_heads": 4},
    "llama-m": {"model_type": "llama", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 16,
                "num_key_value_heads": 8},
}  # fmt: skip
TRAIN = {"batch_size": 4, "max_length": 512}
GENERATE = {"batch_size": 8, "prompt": 256, "new": 64}


def _rss() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def _peak() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def measure(name: str, mode: str) -> dict:
    """Runs in a child process: peak RSS above the post-import baseline for one case."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = AutoConfig.for_model(**MODELS[name], vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=4096)
    # The baseline: everything imported and warmed (one tiny op), no model yet.
    torch.ones(1) @ torch.ones(1)
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM to the current RSS
        fh.write("5")
    base = _rss()
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    started = time.monotonic()
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        ids = torch.randint(3, VOCAB, (TRAIN["batch_size"], TRAIN["max_length"]))
        for _ in range(2):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # the Trainer keeps gradient buffers between steps
    else:
        model.eval()
        ids = torch.randint(3, VOCAB, (GENERATE["batch_size"], GENERATE["prompt"]))
        with torch.no_grad():
            model.generate(ids, max_new_tokens=GENERATE["new"], min_new_tokens=GENERATE["new"], do_sample=False)
    return {"measured_bytes": _peak() - base, "seconds": round(time.monotonic() - started, 1)}


def estimate(name: str, mode: str) -> tuple[int, dict]:
    from hala.plan import _transformers_need, shape_from_config, training_need
    from hala.recipe import Training

    shape = shape_from_config({**MODELS[name], "vocab_size": VOCAB, "tie_word_embeddings": True, "max_position_embeddings": 4096})
    if mode == "train":
        parts = training_need(shape, Training(batch_size=TRAIN["batch_size"], max_length=TRAIN["max_length"], strategy="single"), 1, "CPU")
    else:
        parts = _transformers_need(shape, "fp32", GENERATE["batch_size"], GENERATE["prompt"], GENERATE["new"], "CPU")
    return sum(parts.values()), parts


def plan_speed() -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = {}
    for recipe in ("hala-nano", "hala-9b"):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "hala", "plan", "--recipe", recipe], env=env, capture_output=True, text=True, cwd=ROOT)
        out[recipe] = {"seconds": round(time.monotonic() - started, 2), "exit": done.returncode}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    sys.path.insert(0, str(ROOT))
    cases = []
    for name in MODELS:
        for mode in ("train", "generate"):
            child = subprocess.run([sys.executable, __file__, "--child", name, mode], capture_output=True, text=True, check=True)
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            need, parts = estimate(name, mode)
            error = need / measured["measured_bytes"] - 1
            cases.append({"model": name, "mode": mode, "estimate_bytes": need, **measured, "error": round(error, 3),
                          "parts": parts})  # fmt: skip
            print(f"{name:8} {mode:8} estimate {need / 2**20:8.0f} MiB  measured {measured['measured_bytes'] / 2**20:8.0f} MiB  "
                  f"error {error:+.0%}  ({measured['seconds']} s)", flush=True)  # fmt: skip
    speed = plan_speed()
    for recipe, result in speed.items():
        print(f"hala plan --recipe {recipe}: {result['seconds']} s (exit {result['exit']})")
    worst = max(abs(c["error"]) for c in cases)
    print(f"largest estimate error: {worst:.0%} over {len(cases)} cases")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cases": cases, "largest_error": worst, "plan_seconds": speed, "train": TRAIN, "generate": GENERATE,
                                   "vocab": VOCAB}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()

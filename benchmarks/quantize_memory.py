"""Peak memory of FP8 quantization: the whole model in memory (llm-compressor's oneshot) against
hala's shard-by-shard path (model_free_ptq), and the capacity plan's estimate of the latter.

    .venv/bin/python benchmarks/quantize_memory.py [--hidden 1024] [--layers 12] [--shard-mb 100]

A random attention-only Llama in bf16 is saved in shards of ``--shard-mb``; each path then runs in
a fresh process on the CPU and writes the same FP8_DYNAMIC checkpoint. Measured: the peak
resident memory above the process's memory after its imports. The plan's row counts 2.5 times the
largest shard plus a fixed 2 GiB for the runtime; the shard part is compared here. Writes
benchmarks/results/quantize_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quantize_memory.json"


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key))


def _child(path: str, way: str, out: str) -> None:
    """One quantization in this process; prints its peak memory above the baseline as JSON."""
    import torch
    from llmcompressor import oneshot  # noqa: F401 - imported before the baseline in both ways
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    from hala.stages.quantize_teacher import compress_fp8

    baseline = _status("VmRSS:")
    started = time.monotonic()
    if way == "oneshot":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"]))
        model.save_pretrained(out, save_compressed=True)
    else:
        compress_fp8(path, Path(out), "FP8_DYNAMIC", ["lm_head"])
    print(json.dumps({"peak_bytes": _status("VmHWM:") - baseline, "seconds": time.monotonic() - started}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--shard-mb", type=int, default=100)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    import torch
    from transformers import AutoModelForCausalLM

    from hala.plan import GIB, shape_from_config
    from hala.tiny import build_attention_only

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model"
        build_attention_only(Path(tmp) / "fp32", hidden_size=args.hidden, layers=args.layers)
        model = AutoModelForCausalLM.from_pretrained(Path(tmp) / "fp32", dtype=torch.bfloat16)
        model.save_pretrained(source, max_shard_size=f"{args.shard_mb}MB")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (source / name).write_bytes((Path(tmp) / "fp32" / name).read_bytes())
        shards = sorted(source.glob("*.safetensors"))
        largest = max(f.stat().st_size for f in shards)
        total = sum(f.stat().st_size for f in shards)
        shape = shape_from_config(json.loads((source / "config.json").read_text()))
        results = {"model": {"parameters": shape.parameters, "bf16_bytes": total, "shards": len(shards), "largest_shard_bytes": largest}}
        for way in ("oneshot", "model_free"):
            out = Path(tmp) / way
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(source), way, str(out)], capture_output=True, text=True, check=True
            )
            results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[way]["fp8_bytes"] = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        estimate = int(2.5 * largest)
        results["plan_shard_estimate_bytes"] = estimate
        results["plan_error"] = estimate / results["model_free"]["peak_bytes"] - 1
        results["plan_runtime_allowance_bytes"] = 2 * GIB
    mib = 2**20
    print(f"model: {shape.parameters / 1e6:.0f}M parameters, {total / mib:.0f} MiB in bf16, {len(shards)} shards, largest {largest / mib:.0f} MiB")
    for way in ("oneshot", "model_free"):
        r = results[way]
        print(f"{way:>10}: peak {r['peak_bytes'] / mib:.0f} MiB above imports, {r['seconds']:.1f} s, FP8 files {r['fp8_bytes'] / mib:.0f} MiB")
    print(f"plan: 2.5 x largest shard = {estimate / mib:.0f} MiB vs measured {results['model_free']['peak_bytes'] / mib:.0f} MiB "
          f"({results['plan_error']:+.0%}), plus a 2 GiB runtime allowance")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""FP8 against BF16 matrix products at the teacher's layer shapes, with torch's scaled matmul.

    python benchmarks/fp8_gemm.py                      # on the GPU, Command A's shapes, 4,096 and 16,384 tokens
    python benchmarks/fp8_gemm.py --device cpu --scale 96 --tokens 32 --iters 1   # the same code, tiny, on a CPU

The FP8 side is what the FP8_DYNAMIC scheme computes: weights quantized per output channel,
activations per token at run time (that quantization is timed too), ``torch._scaled_mm`` with
row-wise scales and a bf16 result. Each product's result is compared with bf16's; the script
exits 1 when the relative error of any exceeds ``--max-error``. Writes
benchmarks/results/fp8_gemm.json (``--out``). The layer shapes come from the model's config
(``--model``: a shipped model of hala's plan, or a folder with config.json), divided by
``--scale`` for a small run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max


def layer_shapes(config: dict, scale: int = 1) -> dict[str, tuple[int, int]]:
    """(in features, out features) of one decoder layer's linear layers, as the model builds them."""
    hidden = config["hidden_size"]
    heads, kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    shapes = {
        "qkv_proj": (hidden, (heads + 2 * kv) * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_up_proj": (hidden, 2 * config["intermediate_size"]),
        "down_proj": (config["intermediate_size"], hidden),
    }
    return {name: (max(16, k // scale // 16 * 16), max(16, n // scale // 16 * 16)) for name, (k, n) in shapes.items()}


def _rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _timed(fn, iters: int, device: str) -> float:
    fn()  # warm-up: kernels chosen, memory allocated
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iters):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / iters


def measure(k: int, n: int, m: int, device: str, iters: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) / k**0.5
    qw, sw = _rowwise(w)  # once, offline, as llm-compressor stores it

    def bf16():
        return x @ w.t()

    def fp8():
        qx, sx = _rowwise(x)  # per token, at run time
        return torch._scaled_mm(qx, qw.t(), scale_a=sx, scale_b=sw.t(), out_dtype=torch.bfloat16)

    reference, result = bf16().float(), fp8().float()
    error = ((result - reference).norm() / reference.norm()).item()
    t_bf16, t_fp8 = _timed(bf16, iters, device), _timed(fp8, iters, device)
    flops = 2 * m * n * k
    return {
        "tokens": m, "in": k, "out": n, "relative_error": round(error, 5),
        "bf16_tflops": round(flops / t_bf16 / 1e12, 3), "fp8_tflops": round(flops / t_fp8 / 1e12, 3),
        "speedup": round(t_bf16 / t_fp8, 3),
    }  # fmt: skip


def model_config(model: str) -> dict:
    folder = Path(model)
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text())
    from hala.plan import shipped_models

    shipped = shipped_models()
    if model not in shipped:
        raise SystemExit(f"fp8_gemm: {model} is neither a folder with config.json nor a shipped model ({', '.join(sorted(shipped))})")
    return shipped[model]["config"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="CohereLabs/command-a-translate-08-2025")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384], help="rows of the activations (batched tokens)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=int, default=1, help="divide every dimension by this (a small run)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--max-error", type=float, default=0.08, help="largest relative error of an FP8 product against bf16")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fp8_gemm.json")
    args = parser.parse_args()

    shapes = layer_shapes(model_config(args.model), args.scale)
    results, failed = [], []
    for name, (k, n) in shapes.items():
        for m in args.tokens:
            row = {"layer": name, **measure(k, n, m, args.device, args.iters)}
            results.append(row)
            print(f"{name:13s} {m:6d} x {k:6d} x {n:6d}: bf16 {row['bf16_tflops']:8.2f} TFLOP/s, fp8 {row['fp8_tflops']:8.2f} "
                  f"TFLOP/s ({row['speedup']:.2f}x), relative error {row['relative_error']:.4f}")  # fmt: skip
            if not row["relative_error"] <= args.max_error:
                failed.append(f"{name} at {m} tokens: relative error {row['relative_error']} > {args.max_error}")
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    out = {
        "model": args.model, "scale": args.scale, "device": device, "torch": torch.__version__,
        "max_error": args.max_error, "results": results, "failed": failed,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for line in failed:
        print(f"fp8_gemm: FAILED: {line}", file=sys.stderr)
    print(f"fp8_gemm: {len(results)} products on {device}; wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

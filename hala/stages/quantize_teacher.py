"""Stage 1a: compress the translation teacher to FP8 with llm-compressor.

The teacher of the shipped recipes (Command-A, 111B parameters, 222 GB in bf16) is larger than
any one accelerator and than most pods' memory, so it is never loaded whole: llm-compressor's
``model_free_ptq`` quantizes the checkpoint one safetensors shard at a time (on the pod's GPU when
it has one), which its documentation prescribes for data-free schemes on models too large for
``oneshot``. FP8_DYNAMIC quantizes activations at run time, so no calibration data is needed.
The FP8 gate (stage 1b, :mod:`hala.stages.gate_teacher`) then proves the copy lost no quality.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hala.corpora import read_pairs
from hala.models import resolve_model
from hala.recipe import Recipe

log = logging.getLogger(__name__)


def _checkpoint_weights(model_path: str) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint's safetensors files and its shape, read from their headers only."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    files = sorted(Path(model_path).glob("*.safetensors"))
    if not files:
        raise ValueError(f"teacher {model_path}: no .safetensors weights (llm-compressor's model-free path reads only those)")
    for file in files:
        with safe_open(str(file), "pt") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def kept_modules(model_path: str) -> list[str]:
    """The modules whose weights stay as they are: all but the Linear layers, as ``oneshot(targets="Linear")`` keeps them.

    model_free_ptq sees only tensor names, so it would quantize every 2-D weight, embeddings
    included, and refuse a convolution's 3-D one (LFM2's short convolutions). Which weights belong
    to Linear layers comes from the model as transformers builds it, on the meta device (no memory).
    Norms are left out: model_free_ptq itself never quantizes a module whose name ends in "norm".
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    kept = []
    for tensor, shape in _checkpoint_weights(model_path).items():
        module, _, param = tensor.rpartition(".")
        if param != "weight" or module in linear or module.endswith("norm"):
            continue
        kept.append(module)
        if len(shape) >= 2 and not module.endswith("embed_tokens"):
            log.info("kept unquantized: %s %s (not a Linear layer of %s)", tensor, shape, type(model).__name__)
    return sorted(kept)


def compress_fp8(model_path: str, out_dir: Path, scheme: str, ignore: list[str]) -> dict[str, float]:
    """Quantize every Linear layer but ``ignore`` with ``scheme``, one shard at a time, into compressed-tensors files.

    Returns the compression's figures (seconds, bytes before and after, their ratio).
    """
    from llmcompressor import model_free_ptq

    started = time.monotonic()
    keep = kept_modules(model_path)
    # Every shard's non-weight files (config, tokenizer, chat template) are copied by model_free_ptq.
    model_free_ptq(model_stub=model_path, save_directory=str(out_dir), scheme=scheme, ignore=[*ignore, *keep])
    before = sum(f.stat().st_size for f in Path(model_path).glob("*.safetensors"))
    after = sum(f.stat().st_size for f in Path(out_dir).glob("*.safetensors"))
    return {
        "quantize_seconds": time.monotonic() - started,
        "teacher_bytes": float(before),
        "fp8_bytes": float(after),
        "compression_ratio": before / after if after else 0.0,
    }


def quantize_teacher(recipe: Recipe, out_dir: Path) -> dict[str, float]:
    """Write the FP8 teacher to ``out_dir``; returns the compression's figures."""
    section = recipe.teacher
    # The gate's data is read first: a bad file should fail before the compression, not after it.
    read_pairs(section.gate_dataset, recipe.languages.source, recipe.languages.target)
    source = resolve_model(section.model, section.revision)
    metrics = compress_fp8(source, Path(out_dir), section.scheme, section.ignore)
    log.info(
        "FP8 teacher: %.1f GB -> %.1f GB (%.2fx) in %.0f s",
        metrics["teacher_bytes"] / 1e9, metrics["fp8_bytes"] / 1e9, metrics["compression_ratio"], metrics["quantize_seconds"],
    )  # fmt: skip
    return metrics

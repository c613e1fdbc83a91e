"""Stage 1: compress the translation teacher to FP8 with llm-compressor, and prove it lost no quality.

The gate translates a held-out sample with the original and the FP8 model and compares chrF;
the stage fails when the FP8 copy loses more than the recipe allows.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hala.corpora import read_pairs
from hala.engines import load_engine
from hala.metrics import translation_scores
from hala.models import resolve_model
from hala.recipe import Recipe
from hala.translation import translate_texts

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """The FP8 teacher translates measurably worse than the original."""


def compress_fp8(model_path: str, out_dir: Path, scheme: str, ignore: list[str]) -> None:
    """Quantize every Linear layer but ``ignore`` with ``scheme`` and save in compressed-tensors format."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # FP8_DYNAMIC quantizes activations at run time, so no calibration data is needed.
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme=scheme, ignore=list(ignore)))
    model.save_pretrained(str(out_dir), save_compressed=True)
    tokenizer.save_pretrained(str(out_dir))


def _translation_chrf(model_path: str, sources: list[str], references: list[str], recipe: Recipe, desc: str) -> dict:
    engine = load_engine(model_path, recipe.engine, recipe.teacher.generation)
    try:
        hyps = translate_texts(engine, sources, recipe.bootstrap.prompt, recipe.teacher.generation, desc=desc)
    finally:
        engine.close()
    return translation_scores(hyps, references)


def quantize_teacher(recipe: Recipe, out_dir: Path) -> dict[str, float]:
    """Write the FP8 teacher to ``out_dir``; returns the gate's scores. Raises QualityGateError."""
    section = recipe.teacher
    source = resolve_model(section.model, section.revision)
    out_dir = Path(out_dir)
    # Read the gate's data first: a bad file should fail before minutes of compression, not after.
    pairs = read_pairs(section.gate_dataset, recipe.languages.source, recipe.languages.target)
    compress_fp8(source, out_dir, section.scheme, section.ignore)
    sources, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    original = _translation_chrf(source, sources, refs, recipe, "gate: original teacher")
    fp8 = _translation_chrf(str(out_dir), sources, refs, recipe, "gate: FP8 teacher")
    drop = original["chrf"] - fp8["chrf"]
    metrics = {
        "gate_samples": float(len(pairs)),
        "chrf_original": original["chrf"],
        "chrf_fp8": fp8["chrf"],
        "chrf_drop": drop,
        "bleu_original": original["bleu"],
        "bleu_fp8": fp8["bleu"],
    }
    log.info("FP8 gate on %d pairs: chrF %.2f -> %.2f (drop %.2f, allowed %.2f)", len(pairs), original["chrf"], fp8["chrf"], drop, section.max_chrf_drop)
    if drop > section.max_chrf_drop:
        raise QualityGateError(
            f"FP8 teacher lost {drop:.2f} chrF on {len(pairs)} held-out pairs "
            f"({original['chrf']:.2f} -> {fp8['chrf']:.2f}); teacher.max_chrf_drop is {section.max_chrf_drop}"
        )
    return metrics

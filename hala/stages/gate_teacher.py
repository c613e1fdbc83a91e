"""Stage 1b: the FP8 gate. The original and the FP8 teacher translate the same held-out pairs; the
stage fails when the FP8 copy loses more chrF than the recipe allows.

On a cluster it runs in the vLLM image with the teacher's tensor parallelism (``teacher.generation``):
both teachers are far larger than one GPU. Each engine is closed before the next one starts.
"""

from __future__ import annotations

import logging

from hala.corpora import read_pairs
from hala.engines import load_engine
from hala.metrics import translation_scores
from hala.models import resolve_model
from hala.recipe import Recipe
from hala.translation import translate_texts

log = logging.getLogger(__name__)


class QualityGateError(RuntimeError):
    """The FP8 teacher translates measurably worse than the original."""


def _translation_scores(model_path: str, sources: list[str], references: list[str], recipe: Recipe, desc: str) -> dict:
    engine = load_engine(model_path, recipe.engine, recipe.teacher.generation)
    try:
        hyps = translate_texts(engine, sources, recipe.bootstrap.prompt, recipe.teacher.generation, desc=desc)
    finally:
        engine.close()
    return translation_scores(hyps, references)


def gate_teacher(recipe: Recipe, fp8_dir: str) -> dict[str, float]:
    """The gate's scores for the FP8 teacher in ``fp8_dir``. Raises QualityGateError."""
    section = recipe.teacher
    pairs = read_pairs(section.gate_dataset, recipe.languages.source, recipe.languages.target)
    source = resolve_model(section.model, section.revision)
    sources, refs = [p[0] for p in pairs], [p[1] for p in pairs]
    original = _translation_scores(source, sources, refs, recipe, "gate: original teacher")
    fp8 = _translation_scores(str(fp8_dir), sources, refs, recipe, "gate: FP8 teacher")
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

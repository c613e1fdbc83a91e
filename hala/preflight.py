"""Checks that run before any stage: every local file and model the recipe names must exist."""

from __future__ import annotations

from hala.corpora import check_readable
from hala.models import check_model_ref
from hala.recipe import DatasetRef, Recipe, classify_ref


def recipe_datasets(recipe: Recipe) -> list[tuple[str, DatasetRef]]:
    out = [
        ("teacher.gate_dataset", recipe.teacher.gate_dataset),
        ("bootstrap.dataset", recipe.bootstrap.dataset),
        ("judge.dataset", recipe.judge.dataset),
        ("translator.eval_dataset", recipe.translator.eval_dataset),
    ]
    out += [(f"corpus.datasets[{i}]", ds) for i, ds in enumerate(recipe.corpus.datasets)]
    return out


def recipe_models(recipe: Recipe) -> list[tuple[str, str]]:
    out = [("teacher.model", recipe.teacher.model), ("judge.model", recipe.judge.model), ("translator.base", recipe.translator.base)]
    out += [(f"students.models[{i}].base", s.base) for i, s in enumerate(recipe.students.models)]
    return out


def preflight(recipe: Recipe) -> None:
    """Raise with one line naming the recipe key of the first missing local dataset or model."""
    for key, ds in recipe_datasets(recipe):
        try:
            check_readable(ds)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    for key, ref in recipe_models(recipe):
        try:
            check_model_ref(ref)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None


def is_offline(recipe: Recipe) -> bool:
    """True when the recipe names nothing that lives on a hub or in object storage."""
    refs = [ds.path for _, ds in recipe_datasets(recipe)] + [ref for _, ref in recipe_models(recipe)]
    return recipe.evaluation.source == "fixtures" and all(classify_ref(r) in ("tiny", "bundled", "local") for r in refs)

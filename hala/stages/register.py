"""Stage 9: register the FP8 teacher, the translator and every merged student in the MLflow registry.

Each new version carries its lineage as tags (recipe hash, data hashes, source run, the version
of every model and dataset the run read, merge configuration, evaluation metrics) and the alias ``challenger``; promotion is a separate act.
"""

from __future__ import annotations

import json

from hala.recipe import Recipe
from hala.sources import run_sources
from hala.tracking import register_model


def registered_name(recipe: Recipe, role: str) -> str:
    return f"{recipe.tracking.registry_prefix}-{role}"


def register_models(
    recipe: Recipe,
    tracking_uri: str,
    parent_run_id: str,
    teacher: dict,
    translator: dict,
    students: list[dict],
    data_hashes: dict[str, str],
) -> dict[str, dict]:
    """Register every model; ``teacher``/``translator``/``students`` give ``uri`` and ``metrics`` (students also ``merge``).

    Returns, per registered name, the version and its source.
    """
    lineage = {"hala.recipe": recipe.name, "hala.recipe_hash": recipe.hash, "hala.source_run": parent_run_id}
    lineage.update({f"hala.data_hash.{k}": v for k, v in data_hashes.items()})
    # The exact version of every model and dataset the run's stages read (hub commit, S3 ETag, content hash).
    lineage.update(run_sources(tracking_uri, parent_run_id))
    entries = [
        ("teacher-fp8", teacher, {"hala.quantization": recipe.teacher.scheme}),
        ("translator", translator, {}),
    ]
    for student in students:
        merge = student["merge"]
        extra = {"hala.student": student["name"], "hala.merge": json.dumps({k: merge[k] for k in ("base", "other", "t", "sweep") if k in merge})}
        # The published OALL v2 figures of the matching Hala model and of the base, to read beside hala.metric.*.
        for which, row in student.get("published", {}).items():
            prefix = "hala.paper" if which == "hala" else "hala.paper.base"
            extra.update({f"{prefix}.{k}": (f"{v:.1f}" if isinstance(v, float) else str(v)) for k, v in row.items()})
        entries.append((student["name"], student, extra))
    registered = {}
    for role, model, extra in entries:
        name = registered_name(recipe, role)
        metrics = {f"hala.metric.{k}": f"{v:.4f}" for k, v in model.get("metrics", {}).items() if isinstance(v, (int, float))}
        version, source = register_model(tracking_uri, name, model["uri"], parent_run_id, {**lineage, **extra, **metrics})
        registered[name] = {"version": version, "source": source, "artifact": model["uri"], "alias": "challenger"}
    return registered

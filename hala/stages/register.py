"""Stage 9: register the FP8 teacher, the translator and every merged student in the MLflow registry.

Each new version is an MLflow Model (:mod:`hala.registry`): the checkpoint with the
transformers flavor, its evaluation logged as metrics of the model, and its lineage (recipe
hash, data hashes, source run, the version of every model and dataset the run read, base model,
merge, quantization) in its model card, its parameters and the version's tags. Every version
gets the alias ``challenger``; promotion is a separate act.
"""

from __future__ import annotations

import json
from pathlib import Path

from hala.recipe import Recipe, classify_ref
from hala.registry import log_checkpoint, register_version, requirements
from hala.sources import tag_key
from hala.tracking import image_tags, registry_client

CHALLENGER = "challenger"


def registered_name(recipe: Recipe, role: str) -> str:
    return f"{recipe.tracking.registry_prefix}-{role}"


def original_teacher(recipe: Recipe, sources: dict[str, str]) -> dict:
    """The teacher the FP8 copy was made from: its reference, the revision asked and the version read."""
    teacher = recipe.teacher
    return {
        "model": teacher.model,
        "revision": teacher.revision,
        # The hub commit, S3 ETag digest or content hash the quantize stage recorded; None for a reused FP8 copy.
        "version": sources.get(tag_key(teacher.model)),
        "reused_fp8": recipe.reuse.fp8_teacher,
    }


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _card(name: str, role: str, lineage: dict[str, str], metrics: dict[str, float], base: str) -> str:
    hub_base = f"base_model: {base}\n" if classify_ref(base) == "hub" else ""
    rows = "\n".join(f"| {k} | `{v}` |" for k, v in lineage.items())
    scores = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())) or "| (none) | |"
    return (
        f"---\nlanguage: [ar, en]\nlibrary_name: transformers\n{hub_base}tags: [hala, translate-and-tune, {role}]\n---\n"
        f"# {name}\n\nRegistered by hala's translate-and-tune pipeline. The checkpoint is the stage's output as it was "
        "written; load it with `mlflow.transformers.load_model` or serve the `model/` folder with vLLM.\n\n"
        f"## Lineage\n\n| | |\n|---|---|\n{rows}\n\n## Evaluation\n\n| metric | value |\n|---|---|\n{scores}\n"
    )


def _license(base: str) -> str:
    where = f"https://huggingface.co/{base}" if classify_ref(base) == "hub" else base
    return f"This model is derived from {base}; the licence of that model applies to it ({where}).\n"


def register_models(
    recipe: Recipe,
    tracking_uri: str,
    parent_run_id: str,
    teacher: dict,
    translator: dict,
    students: list[dict],
    data_hashes: dict[str, str],
    sources: dict[str, str],
) -> dict[str, dict]:
    """Log and register every model.

    ``teacher``/``translator``/``students`` give ``path`` (the checkpoint folder here), ``uri``
    (the pipeline's artifact) and ``metrics``; students also ``name``, ``base``, ``merge`` and
    ``published``. ``sources`` are the ``hala.source.*`` versions the run's stages recorded.
    Returns, per registered name, the version, its model and where the registry stores it.
    """
    import mlflow

    client = registry_client(tracking_uri)
    lineage = {"hala.recipe": recipe.name, "hala.recipe_hash": recipe.hash, "hala.source_run": parent_run_id}
    lineage.update({f"hala.data_hash.{k}": v for k, v in data_hashes.items()})
    # The exact version of every model and dataset the run's stages read (hub commit, S3 ETag, content hash).
    lineage.update(sources)
    origin = original_teacher(recipe, sources)
    entries = [
        ("teacher-fp8", teacher, recipe.teacher.model, {
            "hala.quantization": recipe.teacher.scheme, "hala.teacher": origin["model"],
            "hala.teacher.version": origin["version"] or f"reused FP8 copy {origin['reused_fp8']}",
        }, ("compressed-tensors",)),
        ("translator", translator, recipe.translator.base, {"hala.base_model": recipe.translator.base}, ()),
    ]  # fmt: skip
    for student in students:
        merge = student["merge"]
        extra = {
            "hala.student": student["name"], "hala.base_model": student["base"],
            "hala.merge": json.dumps({k: merge[k] for k in ("base", "other", "t", "sweep") if k in merge}),
        }  # fmt: skip
        # The published OALL v2 figures of the matching Hala model and of the base, to read beside the scores.
        for which, row in student.get("published", {}).items():
            prefix = "hala.paper" if which == "hala" else "hala.paper.base"
            extra.update({f"{prefix}.{k}": (f"{v:.1f}" if isinstance(v, float) else str(v)) for k, v in row.items()})
        entries.append((student["name"], student, student["base"], extra, ()))

    # The stage's own run holds the logged models (MLflow ties a model to the run that logged it).
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    registered = {}
    with mlflow.start_run(experiment_id=experiment_id, run_name="register_models", parent_run_id=parent_run_id, nested=True,
                          tags={"hala.stage": "register_models", "hala.recipe_hash": recipe.hash, **image_tags()}) as run:  # fmt: skip
        for role, model, base, extra, needs in entries:
            name = registered_name(recipe, role)
            metrics = {k: float(v) for k, v in model.get("metrics", {}).items() if _number(v)}
            tags = {**lineage, **extra, **{f"hala.metric.{k}": f"{v:.4f}" for k, v in metrics.items()}}
            card_lineage = {k.removeprefix("hala."): v for k, v in {**lineage, **extra}.items() if not k.startswith("hala.paper")}
            model_id, location = log_checkpoint(
                Path(model["path"]), role, run.info.run_id, card=_card(name, role, card_lineage, metrics, base),
                source_name=base, license_text=_license(base), params={**lineage, **extra}, metrics=metrics,
                pip=requirements(needs),
            )  # fmt: skip
            version = register_version(name, model_id, run.info.run_id, tags, CHALLENGER)
            registered[name] = {
                "version": version, "source": f"models:/{model_id}", "model_id": model_id, "artifact_location": location,
                "artifact": model["uri"], "alias": CHALLENGER,
            }  # fmt: skip
    return registered

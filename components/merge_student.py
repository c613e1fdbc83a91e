from kfp import dsl

from components import stage_component


@stage_component("merge")
def merge_student(
    recipe_json: str,
    tracking_uri: str,
    student: str,
    checkpoint: dsl.Input[dsl.Model],
    merged: dsl.Output[dsl.Model],
):
    """Stage 7: slerp of the fine-tuned student with its base (mergekit), once per t of the recipe."""
    from pathlib import Path

    import mlflow

    from hala.storage import artifact_path
    from hala.models import resolve_model
    from hala.stages.merge_slerp import merge_sweep
    from hala.stages.train_student import student_by_name
    from hala.tracking import pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, f"merge_student[{student}]", "merge") as recipe:
        chosen = student_by_name(recipe, student)
        base = resolve_model(chosen.base, chosen.revision)
        merges = merge_sweep(base, str(artifact_path(checkpoint.uri, checkpoint.path)), recipe.merge, Path(merged.path))
        for m in merges:
            mlflow.log_dict(m["config"], f"mergekit_config_{m['folder']}.json")
    merged.metadata.update(
        {"student": student, "base": merges[0]["base"], "other": merges[0]["other"], "candidates": {m["folder"]: m["t"] for m in merges}}
    )

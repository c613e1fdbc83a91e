from kfp import dsl

from hala.images import image


@dsl.component(base_image=image("merge"))
def merge_student(
    recipe_json: str,
    tracking_uri: str,
    mlflow_run: dsl.Input[dsl.Artifact],
    student: str,
    checkpoint: dsl.Input[dsl.Model],
    merged: dsl.Output[dsl.Model],
):
    """Stage 7: slerp of the fine-tuned student with its base (mergekit)."""
    from pathlib import Path

    import mlflow

    from hala.models import local_model_dir
    from hala.stages.merge_slerp import merge_slerp
    from hala.stages.train_student import student_by_name
    from hala.tracking import pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, mlflow_run.metadata["run_id"], f"merge_student[{student}]", "merge") as recipe:
        base = local_model_dir(student_by_name(recipe, student).base)
        description = merge_slerp(base, checkpoint.path, recipe.merge, Path(merged.path))
        mlflow.log_dict(description["config"], "mergekit_config.json")
    merged.metadata.update({"student": student, "base": description["base"], "other": description["other"], "t": description["t"]})

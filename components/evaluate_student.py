from kfp import dsl

from components import stage_component


@stage_component("vllm")
def evaluate_student(
    recipe_json: str,
    tracking_uri: str,
    student: str,
    checkpoint: dsl.Input[dsl.Model],
    merged: dsl.Input[dsl.Model],
    results: dsl.Output[dsl.Artifact],
):
    """Stage 8: the Arabic benchmark suite for a student's base, SFT checkpoint and every merge; the best merge wins."""
    import json
    from pathlib import Path

    import mlflow

    from hala.storage import artifact_path
    from hala.models import resolve_model
    from hala.stages.evaluate import compare_student
    from hala.stages.train_student import student_by_name
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, f"evaluate_student[{student}]", "evaluation") as recipe:
        merges = {float(t): str(Path(merged.path) / folder) for folder, t in merged.metadata["candidates"].items()}
        chosen = student_by_name(recipe, student)
        base = resolve_model(chosen.base, chosen.revision)
        table = compare_student(base, str(artifact_path(checkpoint.uri, checkpoint.path)), merges, recipe)
        log_stage_metrics(table["metrics"])
        mlflow.log_dict(table, "benchmark_results.json")
    with open(results.path, "w", encoding="utf-8") as fh:
        json.dump({"student": student, **table}, fh, indent=2)
    results.metadata.update({"student": student, **table["metrics"]})

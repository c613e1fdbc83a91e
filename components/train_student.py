from kfp import dsl

from hala.images import image


@dsl.component(base_image=image("train"))
def train_student(
    recipe_json: str,
    tracking_uri: str,
    mlflow_run: dsl.Input[dsl.Artifact],
    student: str,
    corpus: dsl.Input[dsl.Dataset],
    checkpoint: dsl.Output[dsl.Model],
):
    """Stage 6: SFT of one student on the Arabic corpus."""
    from pathlib import Path

    from hala.storage import artifact_path
    from hala.stages.train_student import train_student as run
    from hala.tracking import log_stage_metrics, pipeline_stage
    from hala.trainjob import target_for

    parent = mlflow_run.metadata["run_id"]
    with pipeline_stage(recipe_json, tracking_uri, parent, f"train_student[{student}]", "students") as recipe:
        # Checkpoints in S3 (when the recipe has storage) survive a retried pod, which resumes from them.
        checkpoints = recipe.storage.run_uri(parent, "checkpoints", f"student-{student}") if recipe.storage else None
        # With training.nodes > 1 this pod only creates and follows a TrainJob.
        trainjob = target_for(recipe, recipe.students.training, parent, f"student-{student}", tracking_uri)
        corpus_file = artifact_path(corpus.uri, corpus.path) / "corpus.jsonl"
        metrics = run(recipe, student, corpus_file, Path(checkpoint.path), checkpoints, trainjob)
        log_stage_metrics(metrics)
    checkpoint.metadata.update({**metrics, "student": student})

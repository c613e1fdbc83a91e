from kfp import dsl

from components import stage_component


@stage_component("train")
def train_student(
    recipe_json: str,
    tracking_uri: str,
    student: str,
    corpus: dsl.Input[dsl.Dataset],
    checkpoint: dsl.Output[dsl.Model],
):
    """Stage 6: SFT of one student on the Arabic corpus."""
    from pathlib import Path

    from hala.storage import artifact_path
    from hala.stages.train_student import train_student as run
    from hala.recipe import recipe_from_json
    from hala.tracking import find_parent_run, log_stage_metrics, pipeline_stage
    from hala.trainjob import target_for

    parent = find_parent_run(tracking_uri, recipe_from_json(recipe_json))
    with pipeline_stage(recipe_json, tracking_uri, f"train_student[{student}]", "students", parent_run_id=parent) as recipe:
        # Checkpoints in S3 (when the recipe has storage) survive a retried pod, which resumes from them.
        checkpoints = recipe.storage.run_uri(parent, "checkpoints", f"student-{student}") if recipe.storage else None
        # With training.nodes > 1 this pod only creates and follows a TrainJob.
        trainjob = target_for(recipe, recipe.students.training, parent, f"student-{student}", tracking_uri)
        corpus_file = artifact_path(corpus.uri, corpus.path) / "corpus.jsonl"
        metrics = run(recipe, student, corpus_file, Path(checkpoint.path), checkpoints, trainjob)
        log_stage_metrics(metrics)
    checkpoint.metadata.update({**metrics, "student": student})

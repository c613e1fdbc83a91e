from kfp import dsl

from components import stage_component


@stage_component("train")
def train_translator(
    recipe_json: str,
    tracking_uri: str,
    bilingual: dsl.Input[dsl.Dataset],
    pairs: dsl.Input[dsl.Dataset],
    translator: dsl.Output[dsl.Model],
):
    """Stage 4: SFT of the lightweight translator on the bootstrap tuples and the judged pairs."""
    from pathlib import Path

    from hala.storage import artifact_path
    from hala.stages.train_translator import train_translator as run
    from hala.recipe import recipe_from_json
    from hala.tracking import find_parent_run, log_stage_metrics, pipeline_stage
    from hala.trainjob import target_for

    parent = find_parent_run(tracking_uri, recipe_from_json(recipe_json))
    with pipeline_stage(recipe_json, tracking_uri, "train_translator", "translator", parent_run_id=parent) as recipe:
        # Checkpoints in S3 (when the recipe has storage) survive a retried pod, which resumes from them.
        checkpoints = recipe.storage.run_uri(parent, "checkpoints", "translator") if recipe.storage else None
        # With training.nodes > 1 this pod only creates and follows a TrainJob.
        trainjob = target_for(recipe, recipe.translator.training, parent, "translator", tracking_uri)
        metrics = run(
            recipe,
            artifact_path(bilingual.uri, bilingual.path) / "bilingual.jsonl",
            artifact_path(pairs.uri, pairs.path) / "pairs.jsonl",
            Path(translator.path),
            checkpoints,
            trainjob,
        )
        log_stage_metrics(metrics)
    translator.metadata.update(metrics)

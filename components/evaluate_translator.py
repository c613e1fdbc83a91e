from kfp import dsl

from components import stage_component


@stage_component("vllm")
def evaluate_translator(
    recipe_json: str,
    tracking_uri: str,
    translator: dsl.Input[dsl.Model],
    results: dsl.Output[dsl.Metrics],
):
    """Stage 8 (translation): chrF++/BLEU of the translator before and after training, on held-out pairs."""
    import json

    import mlflow

    from hala.storage import artifact_path
    from hala.models import resolve_model
    from hala.stages.evaluate import evaluate_translation
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "evaluate_translator", "translator") as recipe:
        before = evaluate_translation(resolve_model(recipe.translator.base, recipe.translator.revision), recipe, recipe.translator.chat_template)
        after = evaluate_translation(str(artifact_path(translator.uri, translator.path)), recipe)
        scores = {f"{k}_before": v for k, v in before.items()} | {f"{k}_after": v for k, v in after.items()}
        log_stage_metrics(scores)
        mlflow.log_dict({"before": before, "after": after}, "translation_scores.json")
    for key, value in scores.items():
        results.log_metric(key, value)
    with open(results.path, "w", encoding="utf-8") as fh:
        json.dump({"before": before, "after": after}, fh, indent=2)

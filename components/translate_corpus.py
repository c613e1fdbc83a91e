from kfp import dsl

from hala.images import image


@dsl.component(base_image=image("vllm"))
def translate_corpus(
    recipe_json: str,
    tracking_uri: str,
    mlflow_run: dsl.Input[dsl.Artifact],
    translator: dsl.Input[dsl.Model],
    corpus: dsl.Output[dsl.Dataset],
):
    """Stage 5: the translator turns the English instruction sets into an Arabic conversational corpus."""
    from pathlib import Path

    from hala.stages.translate_corpus import translate_corpus as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, mlflow_run.metadata["run_id"], "translate_corpus", "corpus") as recipe:
        metrics = run(recipe, translator.path, Path(corpus.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(corpus.path) / "corpus.jsonl", "samples/corpus.jsonl")
        log_jsonl_sample(Path(corpus.path) / "rejects.jsonl", "samples/rejects.jsonl")
    corpus.metadata.update(metrics)

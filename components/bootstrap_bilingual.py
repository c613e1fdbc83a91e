from kfp import dsl

from hala.images import image


@dsl.component(base_image=image("vllm"))
def bootstrap_bilingual(
    recipe_json: str,
    tracking_uri: str,
    mlflow_run: dsl.Input[dsl.Artifact],
    fp8_teacher: dsl.Input[dsl.Model],
    bilingual: dsl.Output[dsl.Dataset],
):
    """Stage 2: the FP8 teacher translates English instruction pairs into bilingual tuples."""
    from pathlib import Path

    from hala.stages.bootstrap_bilingual import bootstrap_bilingual as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, mlflow_run.metadata["run_id"], "bootstrap_bilingual", "bootstrap") as recipe:
        metrics = run(recipe, fp8_teacher.path, Path(bilingual.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(bilingual.path) / "bilingual.jsonl", "samples/bilingual.jsonl")
        log_jsonl_sample(Path(bilingual.path) / "rejects.jsonl", "samples/rejects.jsonl")
    bilingual.metadata.update(metrics)

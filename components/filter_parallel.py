from kfp import dsl

from hala.images import image


@dsl.component(base_image=image("vllm"))
def filter_parallel(recipe_json: str, tracking_uri: str, mlflow_run: dsl.Input[dsl.Artifact], pairs: dsl.Output[dsl.Dataset]):
    """Stage 3: an LLM judge keeps the faithful pairs of a parallel corpus; rejects keep their reason."""
    from pathlib import Path

    from hala.stages.filter_parallel import filter_parallel as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, mlflow_run.metadata["run_id"], "filter_parallel", "judge") as recipe:
        metrics = run(recipe, Path(pairs.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(pairs.path) / "pairs.jsonl", "samples/kept.jsonl")
        log_jsonl_sample(Path(pairs.path) / "rejects.jsonl", "samples/rejects.jsonl")
    pairs.metadata.update(metrics)

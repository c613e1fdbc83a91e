from kfp import dsl

from components import stage_component


@stage_component("quantize")
def quantize_teacher(recipe_json: str, tracking_uri: str, fp8_teacher: dsl.Output[dsl.Model]):
    """Stage 1a: compress the teacher to FP8 (llm-compressor, one checkpoint shard at a time)."""
    from pathlib import Path

    from hala.stages.quantize_teacher import quantize_teacher as run
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "quantize_teacher", "teacher") as recipe:
        metrics = run(recipe, Path(fp8_teacher.path))
        log_stage_metrics(metrics)
    fp8_teacher.metadata.update(metrics)

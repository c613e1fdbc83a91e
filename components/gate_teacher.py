from kfp import dsl

from components import stage_component


@stage_component("vllm")
def gate_teacher(recipe_json: str, tracking_uri: str, fp8_teacher: dsl.Input[dsl.Model], gate: dsl.Output[dsl.Metrics]):
    """Stage 1b: the FP8 gate. Original and FP8 teacher translate the held-out pairs (vLLM, the teacher's
    tensor parallelism); the task fails when the FP8 copy loses more chrF than teacher.max_chrf_drop."""
    import json

    from hala.stages.gate_teacher import gate_teacher as run
    from hala.storage import artifact_path
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "gate_teacher", "teacher") as recipe:
        metrics = run(recipe, str(artifact_path(fp8_teacher.uri, fp8_teacher.path)))
        log_stage_metrics(metrics)
    for key, value in metrics.items():
        gate.log_metric(key, value)
    # The scores as a file too: a stored artifact, which the registry step reads like any other.
    with open(gate.path, "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2)

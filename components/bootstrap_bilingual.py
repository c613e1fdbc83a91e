from kfp import dsl

from components import stage_component


@stage_component("vllm")
def bootstrap_bilingual(
    recipe_json: str,
    tracking_uri: str,
    fp8_teacher: dsl.Input[dsl.Model],
    worker: int,
    part: dsl.Output[dsl.Dataset],
):
    """Stage 2 (one worker, or with worker -1 the canary shard the workers wait for): the FP8 teacher translates this worker's shards of the English conversations."""
    from pathlib import Path

    from hala.storage import artifact_path
    from hala.stages.bootstrap_bilingual import bootstrap_bilingual as run
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, f"bootstrap_bilingual[{worker if worker >= 0 else 'canary'}]", "bootstrap") as recipe:
        metrics = run(recipe, str(artifact_path(fp8_teacher.uri, fp8_teacher.path)), Path(part.path), worker=worker)
        log_stage_metrics(metrics)
    part.metadata.update({**metrics, "worker": worker})


@stage_component("base")
def collect_bilingual(
    recipe_json: str,
    tracking_uri: str,
    parts: dsl.Input[list[dsl.Dataset]],
    bilingual: dsl.Output[dsl.Dataset],
):
    """Stage 2 (join): one bilingual dataset from the workers' shards, every shard exactly once."""
    from pathlib import Path

    from hala.stages.bootstrap_bilingual import collect_bilingual as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "bootstrap_bilingual", "bootstrap"):
        metrics = run([Path(p.path) for p in parts], Path(bilingual.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(bilingual.path) / "bilingual.jsonl", "samples/bilingual.jsonl")
        log_jsonl_sample(Path(bilingual.path) / "rejects.jsonl", "samples/rejects.jsonl")
    bilingual.metadata.update(metrics)

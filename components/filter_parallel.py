from kfp import dsl

from components import stage_component


@stage_component("base")
def screen_pairs(recipe_json: str, tracking_uri: str, screened: dsl.Output[dsl.Dataset]):
    """Stage 3 (screen): heuristic checks and duplicate removal over the whole parallel corpus."""
    from pathlib import Path

    from hala.stages.filter_parallel import screen_pairs as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "screen_pairs", "judge") as recipe:
        section = recipe.judge
        metrics = run(section.dataset, section.filters, recipe.languages, Path(screened.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(screened.path) / "heuristic_rejects.jsonl", "samples/heuristic_rejects.jsonl")
    screened.metadata.update(metrics)


@stage_component("vllm")
def judge_pairs(
    recipe_json: str,
    tracking_uri: str,
    screened: dsl.Input[dsl.Dataset],
    worker: int,
    part: dsl.Output[dsl.Dataset],
):
    """Stage 3 (judge, one worker, or with worker -1 the canary shard the workers wait for): an LLM judges this worker's shards of the surviving pairs."""
    from pathlib import Path

    from hala.stages.filter_parallel import judge_pairs as run
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, f"judge_pairs[{worker if worker >= 0 else 'canary'}]", "judge") as recipe:
        section = recipe.judge
        metrics = run(
            Path(screened.path), section, recipe.engine, Path(part.path), section.shards, worker=worker, workers=section.shards.workers
        )
        log_stage_metrics(metrics)
    part.metadata.update({**metrics, "worker": worker})


@stage_component("base")
def collect_pairs(
    recipe_json: str,
    tracking_uri: str,
    screened: dsl.Input[dsl.Dataset],
    parts: dsl.Input[list[dsl.Dataset]],
    pairs: dsl.Output[dsl.Dataset],
):
    """Stage 3 (join): kept pairs and every reject with its reason; the counts must add up."""
    from pathlib import Path

    from hala.stages.filter_parallel import collect_pairs as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "filter_parallel", "judge"):
        metrics = run(Path(screened.path), [Path(p.path) for p in parts], Path(pairs.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(pairs.path) / "pairs.jsonl", "samples/kept.jsonl")
        log_jsonl_sample(Path(pairs.path) / "rejects.jsonl", "samples/rejects.jsonl")
    pairs.metadata.update(metrics)

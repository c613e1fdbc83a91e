from kfp import dsl

from components import stage_component


@stage_component("vllm")
def translate_corpus(
    recipe_json: str,
    tracking_uri: str,
    translator: dsl.Input[dsl.Model],
    worker: int,
    part: dsl.Output[dsl.Dataset],
):
    """Stage 5 (one worker, or with worker -1 the canary shard the workers wait for): translate this worker's shards of the English instruction sets."""
    from pathlib import Path

    from hala.storage import artifact_path
    from hala.stages.translate_corpus import translate_corpus as run
    from hala.tracking import log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, f"translate_corpus[{worker if worker >= 0 else 'canary'}]", "corpus") as recipe:
        metrics = run(recipe, str(artifact_path(translator.uri, translator.path)), Path(part.path), worker=worker)
        log_stage_metrics(metrics)
    part.metadata.update({**metrics, "worker": worker})


@stage_component("base")
def collect_corpus(
    recipe_json: str,
    tracking_uri: str,
    parts: dsl.Input[list[dsl.Dataset]],
    corpus: dsl.Output[dsl.Dataset],
):
    """Stage 5 (join): one Arabic corpus from the workers' shards, every shard exactly once."""
    from pathlib import Path

    from hala.stages.translate_corpus import collect_corpus as run
    from hala.tracking import log_jsonl_sample, log_stage_metrics, pipeline_stage

    with pipeline_stage(recipe_json, tracking_uri, "translate_corpus", "corpus"):
        metrics = run([Path(p.path) for p in parts], Path(corpus.path))
        log_stage_metrics(metrics)
        log_jsonl_sample(Path(corpus.path) / "corpus.jsonl", "samples/corpus.jsonl")
        log_jsonl_sample(Path(corpus.path) / "rejects.jsonl", "samples/rejects.jsonl")
    corpus.metadata.update(metrics)

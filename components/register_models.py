from kfp import dsl

from components import stage_component


# The merge image: logging an MLflow Model with the transformers flavor needs transformers (the base image has none).
@stage_component("merge")
def register_models(
    recipe_json: str,
    tracking_uri: str,
    mlflow_run: dsl.Input[dsl.Artifact],
    fp8_teacher: dsl.Input[dsl.Model],
    bilingual: dsl.Input[dsl.Dataset],
    pairs: dsl.Input[dsl.Dataset],
    translator: dsl.Input[dsl.Model],
    translator_eval: dsl.Input[dsl.Metrics],
    corpus: dsl.Input[dsl.Dataset],
    checkpoints: dsl.Input[list[dsl.Model]],
    merged: dsl.Input[list[dsl.Model]],
    evaluations: dsl.Input[list[dsl.Artifact]],
    summary: dsl.Output[dsl.Artifact],
    gate: dsl.Input[dsl.Metrics] = None,
):
    """Stage 9: register teacher, translator and merged students with lineage; write the run summary."""
    from hala.storage import artifact_path
    from hala.summary import Artifact, finish_pipeline

    def art(a) -> Artifact:
        return Artifact(uri=a.uri, path=str(artifact_path(a.uri, a.path)), metadata=dict(a.metadata))

    finish_pipeline(
        recipe_json,
        tracking_uri,
        mlflow_run.metadata["run_id"],
        fp8_teacher=art(fp8_teacher),
        gate=art(gate) if gate is not None else None,
        bilingual=art(bilingual),
        pairs=art(pairs),
        translator=art(translator),
        translator_eval=art(translator_eval),
        corpus=art(corpus),
        checkpoints=[art(a) for a in checkpoints],
        merged=[art(a) for a in merged],
        evaluations=[art(a) for a in evaluations],
        summary_path=summary.path,
    )

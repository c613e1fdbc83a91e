import mlflow
import pytest

from hala.tracking import (
    TrackingError,
    adopt_parent_run,
    end_parent_run,
    find_parent_run,
    local_tracking_uri,
    pipeline_stage,
    stage_run,
    start_parent_run,
)


def test_failed_stage_marks_its_run_failed(smoke_recipe, tmp_path):
    uri = local_tracking_uri(tmp_path)
    parent = start_parent_run(smoke_recipe, uri)
    with stage_run(smoke_recipe, uri, parent, "train_translator", smoke_recipe.translator) as ok_id:
        mlflow.log_metric("train_loss", 1.25)
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run(smoke_recipe, uri, parent, "translate_corpus", smoke_recipe.corpus):
            raise RuntimeError("boom")
    end_parent_run(uri, parent, "FAILED")

    client = mlflow.MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_run(parent).info.experiment_id])}
    assert runs["translate_corpus"].info.status == "FAILED"
    assert runs["train_translator"].info.status == "FINISHED"
    assert runs["train_translator"].data.metrics["train_loss"] == 1.25
    assert runs["train_translator"].data.params["training.learning_rate"] == "0.003"
    assert runs["train_translator"].data.tags["mlflow.parentRunId"] == parent
    assert runs["train_translator"].info.run_id == ok_id
    assert runs["smoke-pipeline"].info.status == "FAILED"
    assert runs["smoke-pipeline"].data.tags["hala.recipe_hash"] == smoke_recipe.hash
    recipe_yaml = mlflow.artifacts.load_text(f"{runs['smoke-pipeline'].info.artifact_uri}/recipe.yaml")
    assert "name: smoke" in recipe_yaml


def test_stages_find_their_run_by_the_run_key_in_their_environment(smoke_recipe, tmp_path, monkeypatch):
    uri = local_tracking_uri(tmp_path)
    first = start_parent_run(smoke_recipe, uri, "hala-translate-and-tune-7xk2p")
    second = start_parent_run(smoke_recipe, uri)
    adopt_parent_run(uri, second, "hala-translate-and-tune-q9w4z")
    monkeypatch.setenv("HALA_RUN_KEY", "hala-translate-and-tune-q9w4z")
    with pipeline_stage(smoke_recipe.to_json(), uri, "screen_pairs", "judge"):
        mlflow.log_metric("rows_in", 7)
    assert find_parent_run(uri, smoke_recipe, "hala-translate-and-tune-7xk2p") == first
    client = mlflow.MlflowClient(uri)
    (child,) = client.search_runs([client.get_run(second).info.experiment_id], f"tags.mlflow.parentRunId = '{second}'")
    assert child.info.run_name == "screen_pairs" and child.data.metrics["rows_in"] == 7

    with pytest.raises(TrackingError, match="no pipeline run tagged hala.run_key=other-run in experiment 'hala-smoke'"):
        find_parent_run(uri, smoke_recipe, "other-run")
    monkeypatch.delenv("HALA_RUN_KEY")
    with pytest.raises(TrackingError, match="HALA_RUN_KEY is not set: pipeline pods get it from their workflows.argoproj.io/workflow label"):
        find_parent_run(uri, smoke_recipe)


def test_a_student_version_carries_the_published_figures_beside_its_own(tmp_path, tiny):
    from hala.paper import published_for
    from hala.recipe import load_recipe
    from hala.registry import model_metrics
    from hala.stages.register import register_models

    recipe = load_recipe("hala-9b")
    uri = local_tracking_uri(tmp_path)
    parent = start_parent_run(recipe, uri)
    folder = tiny("student-s")
    published = {w: {"model": p.model, "average": p.average, **p.tasks} for w, p in published_for("QCRI/Fanar-1-9B-Instruct").items()}
    model = {"uri": folder, "path": folder, "metrics": {}}
    student = {"name": "hala-9b", "base": "QCRI/Fanar-1-9B-Instruct", "uri": folder, "path": folder, "merge": {"t": 0.5},
               "metrics": {"average": 70.25, "aratrust": 90.0}, "published": published}  # fmt: skip
    register_models(recipe, uri, parent, teacher=model, translator=model, students=[student], data_hashes={}, sources={})
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("hala-hala-9b", "challenger")
    tags = version.tags
    assert model_metrics(client, version) == {"average": 70.25, "aratrust": 90.0}
    assert (tags["hala.metric.average"], tags["hala.paper.model"], tags["hala.paper.average"]) == ("70.2500", "hammh0a/Hala-9B", "69.9")
    assert (tags["hala.paper.aratrust"], tags["hala.paper.base.model"], tags["hala.paper.base.average"]) == ("89.6", "QCRI/Fanar-1-9B-Instruct", "69.2")

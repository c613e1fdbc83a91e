"""MLflow tracking for a pipeline run: one parent run, one nested run per stage, the model registry.

Stages run in separate processes (pipeline tasks), so the parent run is created once and its
id travels through the pipeline as a parameter; each stage opens a nested run under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hala.recipe import Recipe

LOCAL_STORE = "mlflow.db"


def local_tracking_uri(folder: Path) -> str:
    """A file-backed MLflow store (SQLite + an artifact folder) inside ``folder``; no server needed."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / LOCAL_STORE}"


def _artifact_location(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def _quiet_mlflow() -> None:
    # MLflow would otherwise probe git for source info on every run; pipeline pods have no repository.
    os.environ.setdefault("MLFLOW_TRACKING_SOURCE_GIT_DISABLED", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def use_store(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at ``tracking_uri`` and return the id of ``experiment`` (created if new)."""
    import mlflow

    _quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(experiment, artifact_location=_artifact_location(tracking_uri))


def start_parent_run(recipe: Recipe, tracking_uri: str) -> str:
    """Create the pipeline's parent run, log the recipe (YAML, with its hash) and return its id."""
    import mlflow

    experiment_id = use_store(tracking_uri, recipe.tracking.experiment)
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"{recipe.name}-pipeline",
        tags={"hala.recipe": recipe.name, "hala.recipe_hash": recipe.hash, "hala.kind": "pipeline"},
    )
    client.log_text(run.info.run_id, recipe.to_yaml(), "recipe.yaml")
    client.log_param(run.info.run_id, "recipe_hash", recipe.hash)
    return run.info.run_id


def end_parent_run(tracking_uri: str, run_id: str, status: str) -> None:
    import mlflow

    _quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.MlflowClient().set_terminated(run_id, status=status)


def _flat_params(prefix: str, value: object) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:500]}


@contextmanager
def stage_run(recipe: Recipe, tracking_uri: str, parent_run_id: str, stage: str, section: object = None) -> Iterator[str]:
    """A nested MLflow run for one stage; it is marked FAILED if the body raises."""
    import mlflow

    experiment_id = use_store(tracking_uri, recipe.tracking.experiment)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        parent_run_id=parent_run_id,
        nested=True,
        tags={"hala.stage": stage, "hala.recipe_hash": recipe.hash},
    ) as run:
        if section is not None:
            params = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
            mlflow.log_params(_flat_params("", params))
        yield run.info.run_id


def log_stage_metrics(metrics: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})


def registry_client(tracking_uri: str):
    """An MLflow client on ``tracking_uri`` for both tracking and the model registry."""
    import mlflow

    _quiet_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register_model(
    tracking_uri: str, name: str, source: str, run_id: str, tags: dict[str, str], alias: str = "challenger"
) -> str:
    """Register ``source`` (a model folder or URI) as a new version of ``name`` and give it ``alias``."""
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()})
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


@contextmanager
def pipeline_stage(
    recipe_json: str, tracking_uri: str, parent_run_id: str, stage: str, section: str | None = None
) -> Iterator[Recipe]:
    """What every pipeline component does around its stage: parse the recipe, open the nested run.

    ``section`` names the recipe section logged as the stage's parameters.
    """
    from hala.recipe import recipe_from_json

    recipe = recipe_from_json(recipe_json)
    params = getattr(recipe, section) if section else None
    with stage_run(recipe, tracking_uri, parent_run_id, stage, params):
        yield recipe


def log_jsonl_sample(path: Path, artifact_file: str, rows: int = 50) -> None:
    """Log the first ``rows`` lines of a JSONL file to the active run: enough to eyeball, bounded at corpus scale."""
    import mlflow

    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        head = [line for _, line in zip(range(rows), fh, strict=False)]
    mlflow.log_text("".join(head), artifact_file)

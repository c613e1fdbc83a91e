"""MLflow tracking for a pipeline run: one parent run, one nested run per stage, the model registry.

Stages run in separate processes (pipeline tasks). The parent run is created once, tagged with
the run's key, and each stage finds it by that key and opens a nested run under it. The key
reaches every task in its environment (``HALA_RUN_KEY``): on a cluster it is the Argo workflow
label of the task's pod, locally ``hala run`` sets it. It is deliberately not a task input: KFP's
cache key covers a task's inputs, and a per-run input would make every stage miss the cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hala.recipe import Recipe

LOCAL_STORE = "mlflow.db"
RUN_KEY_ENV = "HALA_RUN_KEY"
# Argo labels every pod of a workflow with its name, which is unique per pipeline run.
RUN_KEY_LABEL = "workflows.argoproj.io/workflow"


class TrackingError(RuntimeError):
    """The pipeline's parent run cannot be found; the message says what is missing."""


def run_key() -> str:
    key = os.environ.get(RUN_KEY_ENV)
    if not key:
        raise TrackingError(
            f"{RUN_KEY_ENV} is not set: pipeline pods get it from their {RUN_KEY_LABEL} label (compile with hala), and hala run sets it"
        )
    return key


def local_tracking_uri(folder: Path) -> str:
    """A file-backed MLflow store (SQLite + an artifact folder) inside ``folder``; no server needed."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / LOCAL_STORE}"


def _artifact_location(tracking_uri: str) -> str | None:
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


# Bounded retries against the tracking server: with backoff 1, 2, 4, 8 and 16 s a stage rides out
# a server that restarts within about half a minute, then fails with MLflow's error, which names
# the server's URL. (MLflow's own defaults, 7 retries at backoff 2, wait over four minutes.)
MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
INTERRUPTED = "hala.interrupted"


def _quiet_mlflow() -> None:
    # MLflow would otherwise probe git for source info on every run; pipeline pods have no repository.
    os.environ.setdefault("MLFLOW_TRACKING_SOURCE_GIT_DISABLED", "true")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for name, value in MLFLOW_RETRIES.items():
        os.environ.setdefault(name, value)


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


def start_parent_run(recipe: Recipe, tracking_uri: str, key: str | None = None) -> str:
    """Create the pipeline's parent run, log the recipe (YAML, with its hash) and return its id.

    ``key`` (the run's key) lets the stages find it; see ``find_parent_run``.
    """
    import mlflow

    experiment_id = use_store(tracking_uri, recipe.tracking.experiment)
    client = mlflow.MlflowClient()
    tags = {"hala.recipe": recipe.name, "hala.recipe_hash": recipe.hash, "hala.kind": "pipeline"}
    run = client.create_run(experiment_id, run_name=f"{recipe.name}-pipeline", tags={**tags, **({"hala.run_key": key} if key else {})})
    client.log_text(run.info.run_id, recipe.to_yaml(), "recipe.yaml")
    client.log_param(run.info.run_id, "recipe_hash", recipe.hash)
    return run.info.run_id


def adopt_parent_run(tracking_uri: str, run_id: str, key: str) -> None:
    """Tag a parent run opened elsewhere (``hala run``, or a run id given to the pipeline) with the run's key."""
    import mlflow

    _quiet_mlflow()
    mlflow.MlflowClient(tracking_uri).set_tag(run_id, "hala.run_key", key)


def find_parent_run(tracking_uri: str, recipe: Recipe, key: str | None = None) -> str:
    """The id of the pipeline's parent run, found by the run's key."""
    import mlflow

    key = key or run_key()
    experiment_id = use_store(tracking_uri, recipe.tracking.experiment)
    runs = mlflow.MlflowClient().search_runs(
        [experiment_id], f"tags.`hala.run_key` = '{key}' and tags.`hala.kind` = 'pipeline'", max_results=2
    )
    if len(runs) != 1:
        found = "no" if not runs else "more than one"
        raise TrackingError(f"{found} pipeline run tagged hala.run_key={key} in experiment {recipe.tracking.experiment!r} at {tracking_uri}")
    return runs[0].info.run_id


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


def image_tags() -> dict[str, str]:
    """Which image a stage ran in, from the variables every hala image sets (none outside an image)."""
    names = {"HALA_IMAGE_FAMILY": "hala.image.family", "HALA_REVISION": "hala.image.revision"}
    return {tag: os.environ[env] for env, tag in names.items() if os.environ.get(env)}


def _close_interrupted(client, experiment_id: str, parent_run_id: str, stage: str) -> None:
    """Mark FAILED any run of this stage under this parent still RUNNING: an earlier attempt that died
    (a killed pod, a tracking server that was down when it failed) and could not close its run."""
    stale = client.search_runs(
        [experiment_id],
        f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`hala.stage` = '{stage}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        client.set_tag(run.info.run_id, INTERRUPTED, "its attempt ended without closing it; closed by the next attempt")
        client.set_terminated(run.info.run_id, "FAILED")


@contextmanager
def stage_run(recipe: Recipe, tracking_uri: str, parent_run_id: str, stage: str, section: object = None) -> Iterator[str]:
    """A nested MLflow run for one stage; it is marked FAILED if the body raises."""
    import mlflow

    experiment_id = use_store(tracking_uri, recipe.tracking.experiment)
    _close_interrupted(mlflow.MlflowClient(), experiment_id, parent_run_id, stage)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        parent_run_id=parent_run_id,
        nested=True,
        tags={"hala.stage": stage, "hala.recipe_hash": recipe.hash, **image_tags()},
    ) as run:
        if section is not None:
            params = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
            mlflow.log_params(_flat_params("", params))
        yield run.info.run_id


def tag_active_run(tags: dict[str, str]) -> None:
    """Tag the active MLflow run (a stage's), if there is one."""
    import sys

    if "mlflow" not in sys.modules:  # no stage run can be open: do not pay for importing MLflow
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tags(tags)


def stage_runs(tracking_uri: str, parent_run_id: str) -> list:
    """Every nested (stage) run under ``parent_run_id``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=1000)


def tagged_stages(tracking_uri: str, parent_run_id: str, prefix: str) -> dict[str, dict[str, str]]:
    """Per stage run under ``parent_run_id`` (by run name), its tags ``prefix.KEY`` as {KEY: value}; runs without one are left out."""
    found = {}
    for run in stage_runs(tracking_uri, parent_run_id):
        tags = {k.removeprefix(prefix + "."): v for k, v in run.data.tags.items() if k.startswith(prefix + ".")}
        if tags:
            found[run.info.run_name] = tags
    return dict(sorted(found.items()))


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


@contextmanager
def pipeline_stage(
    recipe_json: str, tracking_uri: str, stage: str, section: str | None = None, parent_run_id: str | None = None
) -> Iterator[Recipe]:
    """What every pipeline component does around its stage: parse the recipe, open the nested run.

    ``section`` names the recipe section logged as the stage's parameters. The parent run is
    found by the run's key unless ``parent_run_id`` is given.
    """
    from hala.recipe import recipe_from_json

    recipe = recipe_from_json(recipe_json)
    params = getattr(recipe, section) if section else None
    parent = parent_run_id or find_parent_run(tracking_uri, recipe)
    with stage_run(recipe, tracking_uri, parent, stage, params):
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

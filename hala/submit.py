"""Submit a pipeline run to a Kubeflow Pipelines endpoint (the kfp client) and say where to watch it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hala.recipe import Recipe, refuse_credentials

MLFLOW_CREDENTIALS = "them as MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"


def run_arguments(recipe: Recipe, tracking_uri: str | None) -> dict[str, str]:
    """The run's parameters: the MLflow store only. The recipe is already the compiled default,
    and credentials travel in Secrets (cluster.secrets), never as parameters."""
    return {"tracking_uri": tracking_uri or recipe.tracking.tracking_uri or ""}


def submit_run(
    recipe: Recipe,
    host: str,
    *,
    experiment: str | None = None,
    namespace: str | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
) -> tuple[str, str]:
    """Compile the pipeline for ``recipe``, start a run on ``host``; returns (run id, link to the run).

    A bearer token for a secured endpoint comes from KF_PIPELINES_TOKEN (as the kfp client reads
    it elsewhere); it is passed to the client and never written anywhere.
    """
    import kfp

    from pipelines.translate_and_tune import compile_pipeline

    # Both would become part of the run (its parameter, the client's requests and logs); secrets come from the environment.
    refuse_credentials(tracking_uri, "--tracking-uri", MLFLOW_CREDENTIALS)
    refuse_credentials(host, "--host", "a bearer token as KF_PIPELINES_TOKEN")
    arguments = run_arguments(recipe, tracking_uri)
    if not arguments["tracking_uri"]:
        raise ValueError("no MLflow tracking URI: set tracking.tracking_uri in the recipe or pass --tracking-uri")
    with tempfile.TemporaryDirectory(prefix="hala-submit-") as tmp:
        package = str(Path(tmp) / f"{recipe.name}.pipeline.yaml")
        # Compiled (and so checked against the capacity plan) before the endpoint is contacted.
        compile_pipeline(recipe, package)
        client = kfp.Client(host=host, namespace=namespace, existing_token=os.environ.get("KF_PIPELINES_TOKEN") or None)
        result = client.create_run_from_pipeline_package(
            package,
            arguments=arguments,
            run_name=run_name or f"hala {recipe.name} {recipe.hash}",
            experiment_name=experiment or recipe.tracking.experiment,
            namespace=namespace,
            enable_caching=recipe.cluster.caching if recipe.cluster else None,
        )
    return result.run_id, f"{host.rstrip('/')}/#/runs/details/{result.run_id}"

"""Run the translate-and-tune pipeline on this machine with kfp.local (one process per task)."""

import json
import os
import time
import uuid
from pathlib import Path

from hala.preflight import is_offline, preflight
from hala.recipe import Recipe
from hala.report import write_report
from hala.tracking import RUN_KEY_ENV, end_parent_run, local_tracking_uri, start_parent_run
from pipelines.translate_and_tune import build_pipeline


def run_local(recipe: Recipe, out_dir: Path) -> dict:
    """Run the whole pipeline; artifacts go under ``out_dir/artifacts``, the summary to ``out_dir/summary.json``.

    The parent MLflow run is opened here so that it can be marked FAILED if a stage fails;
    artifacts of the stages that finished stay in place.
    """
    import warnings

    import kfp.local

    # kfp.local warns, for every task, that display names and container images do not apply
    # to local runs; both are expected here (the images are for the cluster).
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
    # Reused s3:// outputs are fetched by the stages themselves (hala.storage.artifact_path).
    warnings.filterwarnings("ignore", message=".*using the remote file.*in a 'dsl.importer'.*")

    out_dir = Path(out_dir).resolve()
    preflight(recipe)
    if is_offline(recipe):
        # Nothing needs the network; make any accidental hub lookup fail fast instead of hanging.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tracking_uri = recipe.tracking.tracking_uri or local_tracking_uri(out_dir)
    # What Argo's workflow label is on a cluster: the key by which the stages find this run.
    key = f"local-{uuid.uuid4().hex}"
    os.environ[RUN_KEY_ENV] = key  # the task processes inherit it
    parent_run_id = start_parent_run(recipe, tracking_uri, key)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(out_dir / "artifacts"))
    pipeline = build_pipeline(recipe)
    started = time.time()
    try:
        task = pipeline(recipe_json=recipe.to_json(), tracking_uri=tracking_uri, parent_run_id=parent_run_id)
    except BaseException:
        end_parent_run(tracking_uri, parent_run_id, "FAILED")
        raise
    summary = json.loads(Path(task.output.path).read_text(encoding="utf-8"))
    summary["wall_time_s"] = round(time.time() - started, 1)
    summary["artifacts_root"] = str(out_dir / "artifacts")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    write_report(summary, out_dir / "report")  # next to summary.json, now with the wall time
    return summary

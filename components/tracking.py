from kfp import dsl

from components import stage_component


@stage_component("base")
def open_run(recipe_json: str, tracking_uri: str, parent_run_id: str, compiled: str, mlflow_run: dsl.Output[dsl.Artifact]):
    """Open the pipeline's parent MLflow run (or adopt the one given); later stages nest under it.

    First it refuses a run whose recipe_json changes what the pipeline was compiled with
    (``compiled``, a constant of this task; hala.compiled).

    The stages find the run by the run's key. Only the registry task takes its id as an input, as
    an artifact, not a string output: kfp 2.17's local runner replaces
    every task-output parameter that enters a ParallelFor with the loop item
    (kfp/local/orchestrator/task_spec_utils.py, create_parameter_loop_iteration_task_spec),
    which would hand the students' stages a student name as their run id.
    """
    import json

    from hala.compiled import check_compiled
    from hala.recipe import recipe_from_json
    from hala.tracking import adopt_parent_run, run_key, start_parent_run

    check_compiled(recipe_from_json(recipe_json), compiled)
    if not tracking_uri:
        raise ValueError("no MLflow tracking URI: set tracking.tracking_uri in the recipe or the tracking_uri parameter")
    # The stages find this run by the run's key (hala.tracking), not through an input.
    key = run_key()
    if parent_run_id:
        adopt_parent_run(tracking_uri, parent_run_id, key)
    run_id = parent_run_id or start_parent_run(recipe_from_json(recipe_json), tracking_uri, key)
    mlflow_run.metadata.update({"run_id": run_id, "tracking_uri": tracking_uri})
    with open(mlflow_run.path, "w", encoding="utf-8") as fh:
        json.dump({"run_id": run_id, "tracking_uri": tracking_uri}, fh)

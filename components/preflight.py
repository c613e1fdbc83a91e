from components import stage_component


@stage_component("base")
def preflight(recipe_json: str, tracking_uri: str):
    """Stage 0: check the bucket, MLflow, the named Secrets and every model and dataset; fail in seconds with the list."""
    import logging

    from hala.preflight import check_run
    from hala.recipe import recipe_from_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_run(recipe_from_json(recipe_json), tracking_uri or None)

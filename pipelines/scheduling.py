"""Where each pipeline task runs on Kubernetes: accelerators, nodes, secrets, caching and retries.

Everything comes from the recipe's ``cluster`` section and is set with kfp-kubernetes. A recipe
without that section (the smoke recipe) gets tasks with only the run's key from their pod label. Secrets are referenced by name; their values never enter the compiled pipeline.
"""

from kfp import kubernetes

from hala.images import image
from hala.recipe import Recipe
from hala.tracking import RUN_KEY_ENV, RUN_KEY_LABEL
from hala.trainjob import IMAGE_ENV

# Tasks with side effects outside their outputs (a new MLflow run, registry versions): a cached
# result would skip them, so KFP must always run them.
NOT_CACHED = ("preflight", "open", "register")
# Long GPU work that a lost node or a transient error may cut short: retried with backoff.
RETRIED = ("quantize", "generation", "training", "evaluation")


def place(task, role: str, recipe: Recipe, gpus: int = 0, trainjob: bool = False):
    """Apply the recipe's cluster settings for ``role`` to ``task``; ``gpus`` is what the stage needs.

    ``trainjob``: the task trains on several nodes through a TrainJob, so its own pod needs no
    GPUs; it gets the training image's name to give the nodes.

    Roles: ``preflight`` (the checks), ``open`` (start the MLflow run), ``register`` (write the registry), ``light`` (CPU
    work: screening, joins), ``quantize``, ``generation``, ``training``, ``merge``, ``evaluation``.
    """
    cluster = recipe.cluster
    cached = role not in NOT_CACHED and (cluster.caching if cluster else True)
    task.set_caching_options(cached)
    # The run's key (hala.tracking) from the pod's own label: in the environment, not an input,
    # so that it stays out of KFP's cache key. Set for every recipe so that any compiled pipeline
    # runs on Kubeflow; local runs set the variable themselves.
    kubernetes.use_field_path_as_env(task, env_name=RUN_KEY_ENV, field_path=f"metadata.labels['{RUN_KEY_LABEL}']")
    if cluster is None:
        return task
    if cluster.s3_endpoint:
        task.set_env_variable("AWS_ENDPOINT_URL", cluster.s3_endpoint)
    for secret in cluster.secrets:
        # Optional for preflight only: its pod must start without a Secret to report it missing.
        kubernetes.use_secret_as_env(
            task, secret_name=secret.name, secret_key_to_env={k: e for e, k in secret.env.items()}, optional=role == "preflight"
        )
    if cluster.model_cache:
        kubernetes.mount_pvc(task, pvc_name=cluster.model_cache, mount_path="/models")
        task.set_env_variable("HF_HOME", "/models/huggingface")
    if role in RETRIED and cluster.retries.count:
        r = cluster.retries
        task.set_retry(r.count, backoff_duration=r.backoff, backoff_factor=r.factor, backoff_max_duration=r.max_duration)
    if trainjob:
        task.set_env_variable(IMAGE_ENV, image("train"))
        return task
    # The registry task reads every model it logs, in the merge image: it gets the merge pods' size.
    resources = cluster.resources.get("merge" if role == "register" else role)
    if resources is None:
        return task
    count = gpus if resources.gpus is None else resources.gpus
    if count:
        task.set_accelerator_type(resources.accelerator)
        task.set_accelerator_limit(count)
    if resources.cpu:
        task.set_cpu_request(resources.cpu)
    if resources.memory:
        task.set_memory_request(resources.memory)
        task.set_memory_limit(resources.memory)
    if resources.shm:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=resources.shm)
    for label, value in resources.node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for t in resources.tolerations:
        kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    return task


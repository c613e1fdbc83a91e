"""Training on several nodes as a Kubeflow Trainer TrainJob, created and watched by the stage's own pod.

A training stage whose recipe asks for ``training.nodes`` > 1 does not train in its pod. It puts
the job (conversations, settings) in the run's S3 prefix, creates a TrainJob (Kubeflow Trainer
v2, ``trainer.kubeflow.org/v1alpha1``) on the ``torch-distributed`` runtime and follows it until
it completes. The runtime starts ``training.nodes`` pods and gives each the ``PET_*`` variables
that torchrun reads (number of nodes, node rank, rendezvous address), so every node runs
``torchrun -m hala.stages.train_sft s3://.../job.json``. Rank 0 uploads the model to S3, and the
stage downloads it into its output artifact.

The TrainJob is named after the run and the stage. A retried stage pod therefore finds its job:
it follows one that is still running, takes the result of one that completed, and replaces one
that failed. A stage pod that is stopped deletes its TrainJob, so that no GPU nodes are left
training for nobody.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hala.recipe import Cluster, Recipe, Training
from hala.storage import ObjectStore, join_uri

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
# The replicated job and container that the torch-distributed runtime names "node".
NODE = "node"
# Nodes write the model here (an emptyDir), not on the image's root filesystem.
SCRATCH = "/scratch"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# Set on training tasks at compile time (pipelines/scheduling.py): the image the nodes run.
IMAGE_ENV = "HALA_TRAIN_IMAGE"


class TrainJobError(RuntimeError):
    """The TrainJob could not be created, or it failed; the message names it and says why."""


@dataclass(frozen=True)
class TrainJobTarget:
    """Where a multi-node training job runs: the cluster settings, a shared S3 prefix and a name."""

    cluster: Cluster
    work_uri: str
    name: str
    image: str
    tracking_uri: str | None = None


def trainjob_name(run_id: str, stage: str) -> str:
    """A DNS-1035 name, the same for every retry of one stage of one run."""
    slug = re.sub(r"[^a-z0-9]+", "-", stage.lower()).strip("-")[:40]
    digest = hashlib.sha256(f"{run_id}/{stage}".encode()).hexdigest()[:10]
    return f"hala-{slug}-{digest}"


def target_for(recipe: Recipe, training: Training, run_id: str, stage: str, tracking_uri: str | None) -> TrainJobTarget | None:
    """The TrainJob target of a stage, or None when its training runs in the stage's pod."""
    if training.nodes == 1:
        return None
    # The recipe's validation guarantees cluster and storage for nodes > 1.
    image = os.environ.get(IMAGE_ENV)
    if not image:
        raise TrainJobError(f"{IMAGE_ENV} is not set: compile the pipeline with hala (it sets the training image on this task)")
    return TrainJobTarget(
        cluster=recipe.cluster,
        work_uri=recipe.storage.run_uri(run_id, "trainjob", stage),
        name=trainjob_name(run_id, stage),
        image=image,
        tracking_uri=tracking_uri,
    )


def build_trainjob(target: TrainJobTarget, training: Training, job_uri: str) -> dict:
    """The TrainJob manifest: nodes, GPUs per node, environment (Secrets by name), placement and volumes."""
    cluster = target.cluster
    env = {"HF_HOME": "/models/huggingface"} if cluster.model_cache else {}
    if cluster.s3_endpoint:
        env["AWS_ENDPOINT_URL"] = cluster.s3_endpoint
    if target.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = target.tracking_uri
    env_list = [{"name": k, "value": v} for k, v in sorted(env.items())]
    env_list += [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}}}
        for secret in cluster.secrets
        for var, key in secret.env.items()
    ]
    resources = cluster.resources.get("training")
    accelerator = resources.accelerator if resources else "nvidia.com/gpu"
    per_node: dict = {"limits": {accelerator: training.processes}}
    if resources and resources.cpu:
        per_node["requests"] = {"cpu": resources.cpu}
    if resources and resources.memory:
        per_node.setdefault("requests", {})["memory"] = resources.memory
        per_node["limits"]["memory"] = resources.memory
    volumes = [{"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "scratch", "mountPath": SCRATCH}]
    if resources and resources.shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": resources.shm}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if cluster.model_cache:
        volumes.append({"name": "model-cache", "persistentVolumeClaim": {"claimName": cluster.model_cache}})
        mounts.append({"name": "model-cache", "mountPath": "/models"})
    pod: dict = {"volumes": volumes, "containers": [{"name": NODE, "volumeMounts": mounts}]}
    if resources and resources.node_selector:
        pod["nodeSelector"] = dict(resources.node_selector)
    if resources and resources.tolerations:
        pod["tolerations"] = [t.model_dump(exclude_none=True) for t in resources.tolerations]
    settings = cluster.trainjob
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": target.name, "labels": {"app.kubernetes.io/managed-by": "hala"}},
        "spec": {
            "runtimeRef": {"name": settings.runtime},
            "trainer": {
                "image": target.image,
                "command": ["torchrun", "-m", "hala.stages.train_sft", job_uri],
                "numNodes": training.nodes,
                "numProcPerNode": training.processes,
                "resourcesPerNode": per_node,
                "env": env_list,
            },
            "runtimePatches": [
                {
                    "manager": "hala",
                    "trainingRuntimeSpec": {
                        "template": {"spec": {"replicatedJobs": [{"name": NODE, "template": {"spec": {"template": {"spec": pod}}}}]}}
                    },
                }
            ],
        },
    }


def _namespace(cluster: Cluster) -> str:
    if cluster.trainjob.namespace:
        return cluster.trainjob.namespace
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise TrainJobError("cluster.trainjob.namespace is not set and this is not a pod (no service-account namespace file)")


def _api():
    """CustomObjectsApi from the pod's service account, else from the kubeconfig (KUBECONFIG)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        # The client reads KUBECONFIG once, at import; read it now.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    return client.CustomObjectsApi()


def _state(obj: dict) -> tuple[str, str]:
    """(Complete | Failed | Suspended | Running | Created, detail) from a TrainJob's status."""
    status = obj.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed", "Suspended"):
            return cond["type"], f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
    jobs = status.get("jobsStatus") or []
    if jobs:
        counts = {k: sum(j.get(k) or 0 for j in jobs) for k in ("active", "ready", "succeeded", "failed")}
        return "Running", ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "waiting for pods"
    return "Created", "waiting for the Trainer controller"


class _Stopped(BaseException):
    """The stage pod was asked to stop (SIGTERM) while the TrainJob ran."""


def run_trainjob(manifest: dict, namespace: str, poll_seconds: float, api=None) -> None:
    """Create the TrainJob (or attach to it) and wait for it to complete; raise TrainJobError if it fails."""
    from kubernetes.client.exceptions import ApiException

    api = api or _api()
    name = manifest["metadata"]["name"]
    where = f"TrainJob {namespace}/{name}"

    def get() -> dict | None:
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise TrainJobError(f"{where}: reading it failed: {err.status} {err.reason}") from None

    existing = get()
    if existing is not None:
        state, detail = _state(existing)
        if state == "Complete":
            log.info("%s already completed (an earlier try of this stage); using its result", where)
            return
        if state == "Failed":
            log.info("%s failed in an earlier try (%s); replacing it", where, detail)
            _delete(api, namespace, name)
            existing = None
        else:
            log.info("%s is already %s; following it", where, state.lower())
    if existing is None:
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        except ApiException as err:
            hint = " (is Kubeflow Trainer installed, and may this pod's service account create trainjobs?)" if err.status in (403, 404) else ""
            raise TrainJobError(f"{where}: creating it failed: {err.status} {err.reason}{hint}") from None
        log.info("%s created: %d nodes", where, manifest["spec"]["trainer"]["numNodes"])

    def stop(signum, frame):
        raise _Stopped()

    previous = signal.signal(signal.SIGTERM, stop) if _main_thread() else None
    started, last = time.monotonic(), None
    try:
        while True:
            obj = get()
            if obj is None:
                raise TrainJobError(f"{where} was deleted while this stage waited for it")
            state, detail = _state(obj)
            if (state, detail) != last:
                log.info("%s: %s (%s) after %.0f s", where, state, detail, time.monotonic() - started)
                last = (state, detail)
            if state == "Complete":
                return
            if state == "Failed":
                raise TrainJobError(f"{where} failed: {detail}; its pods' logs say why (kubectl -n {namespace} logs -l jobset.sigs.k8s.io/jobset-name={name})")
            time.sleep(poll_seconds)
    except (_Stopped, KeyboardInterrupt):
        log.warning("%s: this stage was stopped; deleting the TrainJob so that its nodes are freed", where)
        _delete(api, namespace, name)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _delete(api, namespace: str, name: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground")
    except ApiException as err:
        if err.status != 404:
            raise TrainJobError(f"TrainJob {namespace}/{name}: deleting it failed: {err.status} {err.reason}") from None
    for _ in range(120):  # the name is reused by the next try, so wait until it is gone
        try:
            api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return
        time.sleep(1)
    raise TrainJobError(f"TrainJob {namespace}/{name} was not deleted within 120 s")


def train_on_trainjob(
    base_model: str,
    conversations: Sequence,
    training: Training,
    out_dir: Path,
    target: TrainJobTarget,
    *,
    chat_template: str | None,
    metric_prefix: str,
    mlflow_run_id: str | None,
    checkpoint_uri: str | None,
    base_revision: str | None = None,
) -> dict[str, float]:
    """Run the SFT job on ``training.nodes`` nodes and bring the model into ``out_dir``; returns its metrics."""
    from hala.corpora import write_jsonl
    from hala.stages.train_sft import job_spec

    store = ObjectStore.from_env()
    work = target.work_uri
    with tempfile.TemporaryDirectory(prefix="hala-trainjob-") as tmp:
        data = Path(tmp) / "conversations.jsonl"
        write_jsonl(data, [{"messages": list(c)} for c in conversations])
        store.upload_file(data, join_uri(work, "conversations.jsonl"))
        job = job_spec(
            base_model, join_uri(work, "conversations.jsonl"), training,
            out_uri=join_uri(work, "model"), metrics=join_uri(work, "metrics.json"),
            chat_template=chat_template, metric_prefix=metric_prefix,
            mlflow_run_id=mlflow_run_id, checkpoint_uri=checkpoint_uri, base_revision=base_revision,
        )  # fmt: skip
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        store.upload_file(Path(tmp) / "job.json", join_uri(work, "job.json"))
    manifest = build_trainjob(target, training, join_uri(work, "job.json"))
    run_trainjob(manifest, _namespace(target.cluster), target.cluster.trainjob.poll_seconds)
    store.download_dir(job["out_uri"], Path(out_dir))
    with tempfile.TemporaryDirectory(prefix="hala-trainjob-") as tmp:
        store.download_file(job["metrics"], Path(tmp) / "metrics.json")
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    # The model now lives in the stage's output artifact; the copy in the work prefix would double the bytes stored.
    store.remove_prefix(job["out_uri"])
    return metrics

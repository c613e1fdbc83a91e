"""Run the translate-and-tune pipeline on this machine with kfp.local.

Two runners: ``subprocess`` (every task a process in this Python environment) and ``docker``
(every task in its family's image, through kfp.local's DockerRunner and any engine with the
Docker API; podman's is started when none answers). In containers the run is set up as a
cluster's pods see it: services on the network (an MLflow server from the hala-mlflow image,
the S3 endpoint of the environment), settings and keys in the environment, nothing installed at
start.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hala.images import LOCAL_REGISTRY, mlflow_image, retarget
from hala.preflight import is_offline, preflight, recipe_datasets, recipe_models, reused_outputs
from hala.recipe import Recipe, classify_ref
from hala.report import write_report
from hala.tracking import RUN_KEY_ENV, end_parent_run, local_tracking_uri, start_parent_run
from pipelines.translate_and_tune import build_pipeline

RUNNERS = ("subprocess", "docker")
# What a task container gets from this environment, as a pod gets it from its Secrets and spec:
# object storage, MLflow credentials, the hub token, offline switches. Values, never baked in.
PASSED_ENV_PREFIXES = (
    "AWS_", "MLFLOW_TRACKING_", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_CPU_",
)  # fmt: skip
# GiB of KV cache per vLLM engine of a CPU task, unless VLLM_CPU_KVCACHE_SPACE says otherwise.
DEFAULT_CPU_KVCACHE_GIB = "1"
LOCAL_SHM = "1g"  # /dev/shm of each task's container


def run_local(recipe: Recipe, out_dir: Path, runner: str = "subprocess", image_registry: str = LOCAL_REGISTRY) -> dict:
    """Run the whole pipeline; artifacts go under ``out_dir/artifacts``, the summary to ``out_dir/summary.json``.

    The parent MLflow run is opened here so that it can be marked FAILED if a stage fails;
    artifacts of the stages that finished stay in place. With ``runner="docker"`` every task runs
    in ``image_registry``'s build of its family image; a missing image fails before anything runs.
    """
    import warnings

    import kfp.local

    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; known: {', '.join(RUNNERS)}")
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
    # What Argo's workflow label is on a cluster: the key by which the stages find this run.
    key = f"local-{uuid.uuid4().hex}"
    os.environ[RUN_KEY_ENV] = key  # subprocess tasks inherit it; containers get it passed
    pipeline = build_pipeline(recipe)
    artifacts_root = out_dir / "artifacts"
    with ExitStack() as stack:
        if runner == "docker":
            containers = stack.enter_context(_containers(recipe, out_dir, image_registry, pipeline))
            tracking_uri = containers.tracking_uri
            kfp_runner = containers.runner
        else:
            containers = None
            tracking_uri = recipe.tracking.tracking_uri or local_tracking_uri(out_dir)
            kfp_runner = kfp.local.SubprocessRunner(use_venv=False)
        parent_run_id = start_parent_run(recipe, tracking_uri, key)
        kfp.local.init(runner=kfp_runner, pipeline_root=str(artifacts_root))
        started = time.time()
        try:
            task = pipeline(recipe_json=recipe.to_json(), tracking_uri=tracking_uri, parent_run_id=parent_run_id)
        except BaseException:
            end_parent_run(tracking_uri, parent_run_id, "FAILED")
            raise
        summary = json.loads(Path(task.output.path).read_text(encoding="utf-8"))
        summary["wall_time_s"] = round(time.time() - started, 1)
        summary["artifacts_root"] = str(artifacts_root)
        summary["runner"] = runner
        if containers is not None:
            summary["images"] = containers.ran
            summary["mlflow"]["store"] = containers.store
        write_report(summary, out_dir / "report")  # next to summary.json, now with the wall time
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    return summary


class _ContainerRun:
    """What a containerized run is set up with: the engine, the KFP runner, the MLflow server."""

    def __init__(self, registry: str):
        self.registry = registry
        self.ran: dict[str, dict] = {}  # component -> the image it ran in, and how many containers
        self.tracking_uri = ""
        self.store: str | None = None
        self.runner = None

    def run_container(self, client, image: str, command: list[str], volumes: dict, **run_args) -> int:
        """Run one task's container and return its real exit status.

        Replaces kfp.local's own function, which runs with auto_remove and reports 0 whenever the
        engine has removed the container before its status is read, so a failed task passes
        (kubeflow/pipelines#13332; seen with podman for every failing task). The task's image is
        this run's build of its family (``retarget``).
        """
        import docker

        from hala.containers import image_record

        image = retarget(image, self.registry)
        component = command[command.index("--function_to_execute") + 1] if "--function_to_execute" in command else image
        container = client.containers.run(image=image, command=command, detach=True, volumes=volumes, **run_args)
        try:
            for line in container.logs(stream=True, follow=True):
                print(line.decode(errors="replace"), end="")
            status = container.wait()["StatusCode"]
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                pass  # already gone; the status was read
        record = self.ran.setdefault(component, {**image_record(client, image), "containers": 0})
        record["containers"] += 1
        return status


@contextmanager
def _containers(recipe: Recipe, out_dir: Path, registry: str, pipeline) -> Iterator[_ContainerRun]:
    import docker
    import kfp.local
    from kfp.local import docker_task_handler

    from hala import cache_home
    from hala.containers import STAGE_USER, check_images, engine, hand_to, image_record, mlflow_server, task_user
    from hala.tiny import cache_root

    with ExitStack() as stack:
        client = stack.enter_context(engine())
        run = _ContainerRun(registry)
        images = [retarget(i, registry) for i in _pipeline_images(pipeline)]
        server_image = mlflow_image(registry)
        check_images(client, images + ([] if recipe.tracking.tracking_uri else [server_image]))
        # The tiny world stands in for the hub: built here first, then read by the tasks. transformers
        # writes weights owner-only, and the tasks read them as the images' user.
        for model in _build_tiny_models(recipe):
            _readable_by_all(model)
        # The tasks see this machine's cache at its own path (so the paths they record hold here
        # too): the tiny world read-only, and a copy area of their own for s3:// inputs.
        hand_to(out_dir / "cache" / "s3", STAGE_USER)
        mounts = [
            docker.types.Mount(str(cache_root()), str(cache_root()), type="bind", read_only=True),
            docker.types.Mount(str(cache_home() / "s3"), str(out_dir / "cache" / "s3"), type="bind"),
        ]
        mounts += [docker.types.Mount(p, p, type="bind", read_only=True) for p in _local_inputs(recipe)]
        hand_to(out_dir / "artifacts", STAGE_USER)
        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIXES)}
        env[RUN_KEY_ENV] = os.environ[RUN_KEY_ENV]
        # The CPU vllm image's engines would reserve 90% of this machine's memory, and refuse to start
        # when less is free; the tasks run one at a time, each with this much for its KV cache.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KVCACHE_GIB)
        env["HALA_CACHE"] = str(cache_home())
        if recipe.tracking.tracking_uri:
            run.tracking_uri = recipe.tracking.tracking_uri
        else:
            artifacts, server_env = None, {}
            if recipe.storage and os.environ.get("AWS_ENDPOINT_URL"):
                # As on a cluster: the server keeps artifacts next to the run's, in the recipe's bucket.
                artifacts = f"{recipe.storage.uri.rstrip('/')}/mlflow-artifacts"
                server_env = {k: v for k, v in env.items() if k.startswith("AWS_")}
                server_env["MLFLOW_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
            server = stack.enter_context(mlflow_server(client, server_image, out_dir / "mlflow", artifacts, server_env))
            run.tracking_uri, run.store = server.uri, server.store
            run.ran["mlflow_server"] = {**image_record(client, server_image), "containers": 1}
        # Relative local paths in the recipe resolve as they do here.
        # shm_size: a container engine's default /dev/shm (64 MiB) is too small for vLLM, whose engine
        # talks to its worker through a shared-memory queue (160 MiB with the CPU build); pods get
        # theirs from the recipe's cluster.resources.*.shm.
        run.runner = kfp.local.DockerRunner(
            network_mode="host", mounts=mounts, environment=env, working_dir=os.getcwd(), shm_size=LOCAL_SHM, **task_user(client)
        )
        original = docker_task_handler.run_docker_container
        docker_task_handler.run_docker_container = run.run_container
        stack.callback(setattr, docker_task_handler, "run_docker_container", original)
        yield run


def _pipeline_images(pipeline) -> list[str]:
    """Every executor image of the compiled pipeline."""
    import tempfile

    import yaml
    from kfp import compiler

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, package_path=str(path))
        spec = next(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return sorted({e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values() if "container" in e})


def _build_tiny_models(recipe: Recipe) -> list[Path]:
    """The folders of the recipe's tiny models, built here first if they are not yet."""
    from hala.models import resolve_model

    return [Path(resolve_model(ref)) for _, ref in recipe_models(recipe) if classify_ref(ref) == "tiny"]


def _readable_by_all(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | (0o555 if path.is_dir() else 0o444))


def _local_inputs(recipe: Recipe) -> list[str]:
    """Absolute paths of the local datasets, models and reused outputs the recipe names (mounted as they are)."""
    refs = [ds.path for _, ds in recipe_datasets(recipe)] + [ref for _, ref in recipe_models(recipe)]
    paths = [str(Path(os.path.expanduser(r.removeprefix("file:"))).resolve()) for r in refs if classify_ref(r) == "local"]
    paths += [uri for _, uri in reused_outputs(recipe) if not uri.startswith("s3://")]
    return sorted(set(paths))

"""Multi-node training through a TrainJob, against a stand-in Kubernetes API that acts as the Trainer controller.

The stand-in serves the trainjobs resource on loopback. For each TrainJob created, it does what the
torch-distributed runtime does: it starts one process per node with the TrainJob's command and
environment (Secrets resolved by name), plus the PET_* variables torchrun reads. Here the nodes
are processes on this machine that train a tiny model for real with DDP, and they share data
through the test S3 server.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from hala.launch import run_sft
from hala.recipe import Cluster, RecipeError, Training, load_recipe, parse_recipe
from hala.trainjob import TrainJobError, TrainJobTarget, build_trainjob, run_trainjob, trainjob_name
from tests.test_stages import CONVERSATIONS
from tests.trained import assert_trained

PREFIX = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrainerStandIn:
    """The trainjobs API and a controller that runs each TrainJob's nodes as local processes."""

    def __init__(self, secrets: dict[tuple[str, str], str], scratch: Path):
        self.secrets, self.scratch = secrets, scratch
        self.jobs: dict[str, dict] = {}
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def start_nodes(self, key: str, job: dict) -> None:
        trainer = job["spec"]["trainer"]
        env = {**os.environ}
        for item in trainer["env"]:
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[(ref["name"], ref["key"])]
        port = _free_port()
        command = [str(Path(sys.executable).parent / trainer["command"][0]), *trainer["command"][1:]]
        procs = []
        for rank in range(trainer["numNodes"]):
            node_env = {
                **env,
                "PET_NNODES": str(trainer["numNodes"]),
                "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
                "PET_NODE_RANK": str(rank),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": str(port),
                "HALA_SCRATCH": str(self.scratch / f"{job['metadata']['name']}-node{rank}"),  # each pod's own emptyDir
            }
            log = open(self.scratch / f"{job['metadata']['name']}-node{rank}.log", "w")
            procs.append(subprocess.Popen(command, env=node_env, stdout=log, stderr=subprocess.STDOUT))
        self.procs[key] = procs

    def status(self, key: str) -> dict:
        codes = [p.poll() for p in self.procs.get(key, [])]
        if any(c not in (None, 0) for c in codes):
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            cond = {"type": "Failed", "status": "True", "reason": "JobFailed", "message": f"node {failed[0]} exited {codes[failed[0]]}"}
            return {"conditions": [cond]}
        if codes and all(c == 0 for c in codes):
            return {"conditions": [{"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "jobs completed"}]}
        active = sum(c is None for c in codes)
        return {"jobsStatus": [{"name": "node", "active": active, "ready": active, "succeeded": 0, "failed": 0, "suspended": 0}]}

    def handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _key(self) -> str | None:
                if not self.path.startswith(PREFIX):
                    return None
                parts = self.path[len(PREFIX) :].split("?")[0].split("/")
                return "/".join([parts[0], parts[2]]) if len(parts) == 3 and parts[1] == "trainjobs" else None

            def _missing(self):
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

            def do_GET(self):
                key = self._key()
                with stand_in.lock:
                    job = stand_in.jobs.get(key)
                    if job is None:
                        return self._missing()
                    self._send(200, {**job, "status": stand_in.status(key)})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ns = self.path[len(PREFIX) :].split("/")[0]
                key = f"{ns}/{body['metadata']['name']}"
                with stand_in.lock:
                    stand_in.created.append(body)
                    stand_in.jobs[key] = body
                    stand_in.start_nodes(key, body)
                self._send(201, body)

            def do_DELETE(self):
                key = self._key()
                with stand_in.lock:
                    if stand_in.jobs.pop(key, None) is None:
                        return self._missing()
                    for p in stand_in.procs.pop(key, []):
                        p.kill()
                    stand_in.deleted.append(key)
                self._send(200, {"kind": "Status", "status": "Success"})

        return Handler


@pytest.fixture
def trainer(tmp_path, s3_env, monkeypatch):
    """The stand-in on loopback, reached through a kubeconfig as the real client would reach a cluster."""
    keys = s3_env["env"]
    stand_in = TrainerStandIn(
        {("hala-s3", "accesskey"): keys["AWS_ACCESS_KEY_ID"], ("hala-s3", "secretkey"): keys["AWS_SECRET_ACCESS_KEY"]},
        tmp_path,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), stand_in.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "stage", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stage"}}],
                "current-context": "stand-in",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield stand_in
    server.shutdown()
    for procs in stand_in.procs.values():
        for p in procs:
            p.kill()


def _target(s3_env, name: str) -> TrainJobTarget:
    cluster = Cluster.model_validate(
        {
            "s3_endpoint": s3_env["env"]["AWS_ENDPOINT_URL"],
            "secrets": [{"name": "hala-s3", "env": {"AWS_ACCESS_KEY_ID": "accesskey", "AWS_SECRET_ACCESS_KEY": "secretkey"}}],
            "resources": {
                "training": {"cpu": "1", "memory": "4Gi", "shm": "1Gi", "node_selector": {"pool": "h100"}, "tolerations": [{"key": "nvidia.com/gpu"}]}
            },
            "trainjob": {"namespace": "team-a", "poll_seconds": 0.5},
        }
    )
    return TrainJobTarget(
        cluster=cluster,
        work_uri=f"s3://{s3_env['bucket']}/runs/r1/trainjob/{name}",
        name=trainjob_name("r1", name),
        image="registry.example.org/hala-train:test",
    )


TRAINING = dict(epochs=2, learning_rate=1e-2, batch_size=4, max_length=96, strategy="ddp", nodes=2, processes=1)


def test_two_nodes_train_one_model_through_a_trainjob(trainer, s3_env, tiny, tmp_path):
    target = _target(s3_env, "student-nano-s")
    metrics = run_sft(tiny("student-s"), CONVERSATIONS, Training(**TRAINING), tmp_path / "model", trainjob=target)

    # Two nodes of one process each made one DDP job: 12 rows over 2 ranks of 4 take 2 steps an epoch.
    assert metrics["processes"] == 2.0 and metrics["train_steps"] == 4.0
    assert_trained(tmp_path / "model", tiny("student-s"))
    (job,) = trainer.created
    spec = job["spec"]
    assert job["metadata"]["name"] == target.name and spec["runtimeRef"] == {"name": "torch-distributed"}
    assert spec["trainer"]["numNodes"] == 2 and spec["trainer"]["numProcPerNode"] == 1
    assert spec["trainer"]["image"] == "registry.example.org/hala-train:test"
    assert spec["trainer"]["command"] == ["torchrun", "-m", "hala.stages.train_sft", f"{target.work_uri}/job.json"]
    assert spec["trainer"]["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "4Gi"}}
    pod = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "h100"} and pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}
    # Secrets by name only: their values are nowhere in what was sent to the API.
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["trainer"]["env"] if "valueFrom" in e}
    assert secret_env["AWS_SECRET_ACCESS_KEY"] == {"name": "hala-s3", "key": "secretkey"}
    assert s3_env["env"]["AWS_SECRET_ACCESS_KEY"] not in json.dumps(job)
    # The model came home through S3, and the work prefix keeps no second copy.
    store_keys = [o.object_name for o in s3_env["client"].list_objects(s3_env["bucket"], prefix="runs/r1/trainjob/", recursive=True)]
    assert not [k for k in store_keys if "/model/" in k]
    assert {"runs/r1/trainjob/student-nano-s/job.json", "runs/r1/trainjob/student-nano-s/metrics.json"} <= set(store_keys)

    # A retried stage pod finds the completed job and creates nothing new.
    run_trainjob(build_trainjob(target, Training(**TRAINING), "unused"), "team-a", 0.5)
    assert len(trainer.created) == 1


def test_a_failed_node_fails_the_stage_naming_the_trainjob(trainer, s3_env, tmp_path):
    target = _target(s3_env, "translator")
    with pytest.raises(TrainJobError) as err:
        run_sft(str(tmp_path / "no-such-model"), CONVERSATIONS, Training(**TRAINING), tmp_path / "model", trainjob=target)
    assert f"TrainJob team-a/{target.name} failed: JobFailed: node" in str(err.value)
    assert f"kubectl -n team-a logs -l jobset.sigs.k8s.io/jobset-name={target.name}" in str(err.value)
    # The next try replaces the failed job instead of following it.
    with pytest.raises(TrainJobError):
        run_sft(str(tmp_path / "no-such-model"), CONVERSATIONS, Training(**TRAINING), tmp_path / "model", trainjob=target)
    assert trainer.deleted == [f"team-a/{target.name}"] and len(trainer.created) == 2


def test_trainjob_names_are_dns_labels_stable_per_run_and_stage():
    name = trainjob_name("0f3c9a7be1d24c6f8e5a", "student-Fanar_1-9B")
    assert name == trainjob_name("0f3c9a7be1d24c6f8e5a", "student-Fanar_1-9B")
    assert name != trainjob_name("another-run", "student-Fanar_1-9B")
    assert len(name) <= 63 and name.startswith("hala-student-fanar-1-9b-")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["students"]["training"].update(nodes=2), "students.training: nodes is 2: training on several nodes needs strategy ddp or fsdp"),
        (
            lambda d: d["students"]["training"].update(nodes=2, strategy="ddp"),
            "students.training: nodes is 2: give training.processes, the processes (GPUs) on each node",
        ),
        (
            lambda d: d["students"]["training"].update(nodes=2, strategy="ddp", processes=8),
            "students.training.nodes is 2: it runs as a Kubeflow TrainJob, which needs the recipe's cluster and storage sections",
        ),
    ],
)
def test_multi_node_settings_are_checked_when_the_recipe_loads(change, message):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    change(data)
    with pytest.raises(RecipeError) as err:
        parse_recipe(data, "test")
    assert message in str(err.value)


def _strict(schema):
    """The CRD schema refusing unknown fields: an API server prunes them without a word, so a field
    hala misspells would silently not exist."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    return [_strict(v) for v in schema] if isinstance(schema, list) else schema


def test_the_trainjob_manifest_validates_against_the_trainer_crd_schema():
    import jsonschema

    schema = _strict(json.loads((Path(__file__).parent / "fixtures" / "crds" / "trainjob-v1alpha1-trainer-v2.2.0.schema.json").read_text()))
    recipe = load_recipe("hala-9b")
    target = TrainJobTarget(cluster=recipe.cluster, work_uri="s3://hala/runs/r1/trainjob/hala-9b", name=trainjob_name("r1", "hala-9b"),
                            image="registry.example.org/hala-train:0.1.0")  # fmt: skip
    manifest = build_trainjob(target, recipe.students.training, "s3://hala/runs/r1/trainjob/hala-9b/job.json")
    jsonschema.validate(manifest, schema)  # the shipped 9B recipe's job: 2 nodes, its Secrets, placement, volumes
    # A misspelt field is refused by name (and would have been pruned by the API server).
    manifest["spec"]["trainer"]["numNode"] = 2
    with pytest.raises(jsonschema.ValidationError, match="'numNode' was unexpected"):
        jsonschema.validate(manifest, schema)

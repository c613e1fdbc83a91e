"""How a training job is started: in this process, or as one torchrun rank per GPU.

The recipe names the strategy (``training.strategy``). ``single`` trains here; ``ddp`` and
``fsdp`` start ``training.processes`` ranks with torchrun, each running the same
``hala.stages.train_sft`` code, and the trainer (through accelerate) shares the batches and,
under FSDP, shards the weights, gradients and optimizer state.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hala.corpora import write_jsonl
from hala.recipe import Training
from hala.stages.train_sft import Conversation, job_spec, train_sft
from hala.trainjob import TrainJobTarget, train_on_trainjob

log = logging.getLogger(__name__)


class LaunchError(RuntimeError):
    """A distributed training job failed; the ranks' own output says why."""


def process_count(training: Training) -> int:
    """Ranks to start: the recipe's number, else one per visible GPU (one on a CPU)."""
    if training.processes:
        return training.processes
    import torch

    return max(1, torch.cuda.device_count())


def run_sft(
    base_model: str,
    conversations: Sequence[Conversation],
    training: Training,
    out_dir: Path,
    *,
    chat_template: str | None = None,
    metric_prefix: str = "",
    checkpoint_uri: str | None = None,
    trainjob: TrainJobTarget | None = None,
    base_revision: str | None = None,
) -> dict[str, float]:
    """Train as the recipe's strategy says and return the metrics of ``train_sft``.

    With ``training.nodes`` > 1 the job runs on a Kubeflow TrainJob described by ``trainjob``;
    ``base_model`` is then a reference each node resolves (a hub id or an s3:// URI) at ``base_revision``.
    """
    # Only a process that imported mlflow can have a run open; training images may lack mlflow.
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow else None
    if training.nodes > 1:
        if trainjob is None:
            raise LaunchError(f"training.nodes is {training.nodes}: that runs as a Kubeflow TrainJob, which only a pipeline on a cluster starts")
        return train_on_trainjob(
            base_model, conversations, training, out_dir, trainjob,
            chat_template=chat_template, metric_prefix=metric_prefix, checkpoint_uri=checkpoint_uri,
            mlflow_run_id=run.info.run_id if run else None, base_revision=base_revision,
        )  # fmt: skip
    if training.strategy == "single":
        return train_sft(
            base_model, conversations, training, out_dir,
            chat_template=chat_template, metric_prefix=metric_prefix, checkpoint_uri=checkpoint_uri,
        )  # fmt: skip
    import torch

    if training.strategy == "fsdp" and not torch.cuda.is_available():
        # accelerate shards only across accelerators; on CPUs it would quietly train unsharded.
        raise LaunchError("strategy fsdp shards the model across GPUs and this machine has none; use ddp or single")
    ranks = process_count(training)
    # The job file lives outside out_dir, which is published as the model; the tracking URI goes
    # through the environment, never a file, since it may hold credentials.
    with tempfile.TemporaryDirectory(prefix="hala-sft-") as tmp:
        job = Path(tmp) / "job.json"
        write_jsonl(Path(tmp) / "conversations.jsonl", [{"messages": list(c)} for c in conversations])
        spec = job_spec(
            base_model, str(Path(tmp) / "conversations.jsonl"), training,
            out_dir=str(Path(out_dir).resolve()), metrics=str(Path(tmp) / "metrics.json"),
            chat_template=chat_template, metric_prefix=metric_prefix,
            mlflow_run_id=run.info.run_id if run else None, checkpoint_uri=checkpoint_uri,
        )  # fmt: skip
        job.write_text(json.dumps(spec))
        env = {**os.environ, **({"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()} if run else {})}
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
            "-m", "hala.stages.train_sft", str(job),
        ]  # fmt: skip
        log.info("training %s with %s on %d processes", base_model, training.strategy, ranks)
        code = subprocess.run(command, env=env).returncode
        if code != 0:
            raise LaunchError(f"{training.strategy} training of {base_model} on {ranks} processes failed (exit {code}); the ranks' errors are above")
        return json.loads((Path(tmp) / "metrics.json").read_text())

"""Stages 4 and 6: supervised fine-tuning with TRL, one code path for the translator and the students.

Training data are chat conversations; the loss covers assistant tokens only, so the model
learns to answer (or translate), not to echo the prompt.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hala.assistant_masks import tokenize_with_assistant_mask
from hala.chat_templates import apply_chat_template
from hala.recipe import Training

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


def _check_conversations(conversations: Sequence[Conversation]) -> None:
    if not conversations:
        raise ValueError("no training conversations")
    for i, conv in enumerate(conversations):
        if not any(m["role"] == "assistant" and m["content"].strip() for m in conv):
            raise ValueError(f"training conversation {i} has no assistant turn to learn from")


class _MlflowLoss:
    """Send the trainer's loss curve to an MLflow run (the main process only, under torchrun)."""

    def __new__(cls, prefix: str, run_id: str):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                from mlflow import MlflowClient
                from mlflow.entities import Metric

                if not (logs and state.is_world_process_zero):
                    return
                now = int(time.time() * 1000)
                values = [
                    Metric(f"{prefix}{k}", float(v), now, state.global_step)
                    for k, v in logs.items()
                    if isinstance(v, (int, float))
                ]
                if values:
                    MlflowClient().log_batch(run_id, metrics=values)

        return Callback()


# Relative logit change above which a model is said to mix packed sequences. A model that keeps
# them apart gives bit-identical logits in the probe below; a convolution reaching across the
# boundary moves them by far more than this, even in a tiny random model.
PACKING_LEAK_TOLERANCE = 1e-6


def packing_leak(model, pad_token_id: int, length: int = 12) -> float:
    """How much packing lets one sequence change another: 0 for a model that keeps them apart.

    Packs the same sequence B after two different sequences A1 and A2, through the padding-free
    collator training uses, and returns the largest change of B's logits relative to their scale.
    Attention layers are kept apart by the position ids; LFM2's short convolutions only by the
    causal-conv1d kernel (``seq_idx``), which transformers' torch fallback ignores.
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    a1, a2, b = (torch.randint(0, vocab, (length,), generator=generator).tolist() for _ in range(3))
    collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)
    device = next(model.parameters()).device
    was_training, attention = model.training, model.config._attn_implementation
    model.eval()
    # The model may still sit on the CPU, where flash and flex attention cannot run; sdpa applies
    # the same packed-sequence mask, so it answers the same question.
    if attention != "sdpa" and device.type == "cpu":
        model.set_attn_implementation("sdpa")
    logits = []
    try:
        with torch.no_grad():
            for a in (a1, a2):
                batch = collate([{"input_ids": a + b, "seq_lengths": [length, length]}])
                batch.pop("labels")
                batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
                # use_cache=False as in training: transformers looks for packed sequences only without a cache.
                logits.append(model(**batch, use_cache=False).logits[0, length:].float())
    finally:
        model.train(was_training)
        if model.config._attn_implementation != attention:
            model.set_attn_implementation(attention)
    return float((logits[0] - logits[1]).abs().max() / logits[0].abs().max().clamp_min(1e-6))


# Attention kernels with which packing pays, on a GPU (benchmarks/sft_packing.py): on an H100,
# sdpa trained 2.1x the tokens/s of padded batches. On a CPU, sdpa computes each packed row's
# whole masked square and packing ran at 0.28x. Eager materialises that square on a GPU too, and
# flex attention recompiled for every new row length in our runs.
PACKED_ATTENTION = ("sdpa", "flash_attention_2", "flash_attention_3")


def decide_packing(model, tokenizer, training: Training, on_gpu: bool) -> tuple[bool, float | None]:
    """Whether to pack, and the probe's figure (None when the recipe decided without probing)."""
    if training.packing == "never":
        return False, None
    attention = model.config._attn_implementation
    if training.packing == "auto" and not (on_gpu and attention in PACKED_ATTENTION):
        log.info("packing off: it is slower than padded batches with %s attention on %s", attention, "GPU" if on_gpu else "CPU")
        return False, None
    leak = packing_leak(model, tokenizer.pad_token_id)
    if training.packing == "always":
        return True, leak
    if leak > PACKING_LEAK_TOLERANCE:
        log.warning(
            "packing off: this model mixes packed sequences (relative logit change %.2g); training on padded batches",
            leak,
        )
        return False, leak
    return True, leak


def _fsdp_settings(training: Training) -> dict:
    if training.strategy != "fsdp":
        return {}
    # Full-state-dict saving gathers the shards on the main process, so the saved folder is an
    # ordinary checkpoint that merging, evaluation and serving read.
    # Each decoder layer becomes one FSDP unit (transformers' default wrap policy), resharded after
    # its forward pass: full sharding, the memory-lean setting.
    return {
        "fsdp": True,
        "fsdp_config": {"version": 2, "reshard_after_forward": True, "state_dict_type": "FULL_STATE_DICT"},
    }


def train_sft(
    base_model: str,
    conversations: Sequence[Conversation],
    training: Training,
    out_dir: Path,
    *,
    chat_template: str | None = None,
    metric_prefix: str = "",
    callbacks: Sequence[object] = (),
    mlflow_run_id: str | None = None,
    checkpoint_uri: str | None = None,
) -> dict[str, float]:
    """Fine-tune ``base_model`` on ``conversations`` and save model and tokenizer to ``out_dir``.

    Runs in this process; under torchrun (``hala.launch``) every rank calls it and the trainer
    shares the work. With ``checkpoint_uri`` (s3://...), every checkpoint is also uploaded there,
    and a run that starts without local checkpoints (a new pod) resumes from the last one there.
    Returns the final training loss, the number of optimizer steps, whether conversations were
    packed, and throughput. Refuses an empty dataset, conversations without an
    assistant turn, and a tokenizer without a chat template when the recipe gives none. The loss
    covers the assistant's tokens only, whatever the template (:mod:`hala.assistant_masks`).
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    _check_conversations(conversations)
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    apply_chat_template(tokenizer, chat_template, base_model)
    by_markers = _trl_marks_assistant_tokens(tokenizer)
    on_gpu = torch.cuda.is_available()
    # float32 master weights; on GPU, bf16 autocast does the arithmetic.
    attention = {} if training.attention == "default" else {"attn_implementation": training.attention}
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32, **attention)
    packing, leak = decide_packing(model, tokenizer, training, on_gpu)
    steps_per_epoch = math.ceil(len(conversations) / (training.batch_size * training.gradient_accumulation_steps))
    config = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=training.epochs,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.learning_rate,
        warmup_steps=int(training.warmup_ratio * steps_per_epoch * training.epochs),
        max_length=training.max_length,
        seed=training.seed,
        # TRL masks by the template's {% generation %} markers (its own, or those of the training
        # variant it has of the template); otherwise the rows come with their masks already.
        assistant_only_loss=by_markers,
        # Best-fit-decreasing packing: whole conversations fill each max_length row, none is cut in
        # two, and the batch carries no padding (position ids mark where each one starts).
        packing=packing,
        packing_strategy="bfd",
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="steps" if training.save_steps else "no",
        save_steps=training.save_steps or 500,
        save_total_limit=training.save_total_limit,
        report_to=[],
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu and training.gradient_checkpointing,
        dataloader_num_workers=0,
        **_fsdp_settings(training),
    )
    if by_markers:
        dataset = Dataset.from_list([{"messages": list(c)} for c in conversations])
    else:
        log.info("chat template of %s has no {%% generation %%} markers and TRL has no training variant of it: "
                 "the assistant's tokens are found by rendering each conversation prefix by prefix", base_model)  # fmt: skip
        dataset = Dataset.from_list([tokenize_with_assistant_mask(tokenizer, c) for c in conversations])
    mlflow = sys.modules.get("mlflow")  # a run can only be open where mlflow was imported
    if mlflow_run_id is None and mlflow is not None and mlflow.active_run() is not None:
        mlflow_run_id = mlflow.active_run().info.run_id
    loss_logger = [_MlflowLoss(metric_prefix, mlflow_run_id)] if mlflow_run_id else []
    checkpoints = out_dir / "checkpoints"
    remote = []
    if checkpoint_uri and training.save_steps:
        _restore_checkpoints(checkpoint_uri, checkpoints)
        remote = [_CheckpointUpload(checkpoint_uri, checkpoints)]
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[*loss_logger, *remote, *callbacks],
    )
    rows = trainer.train_dataset["input_ids"]
    tokens = sum(len(ids) for ids in rows)
    # A checkpoint left by an earlier, interrupted attempt (a preempted pod, a crash) is resumed:
    # weights, optimizer, scheduler, data order and step count all continue from it.
    checkpoint = _last_checkpoint(checkpoints)
    if checkpoint is not None:
        log.info("resuming %s from %s", base_model, checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        # Checkpoints (weights + optimizer state, several times the model) only serve a resume;
        # the finished model folder is what gets merged, evaluated and registered.
        shutil.rmtree(checkpoints, ignore_errors=True)
        if remote:
            from hala.storage import ObjectStore

            ObjectStore.from_env().remove_prefix(checkpoint_uri)
    runtime = float(result.metrics.get("train_runtime", 0.0))
    log.info("trainer: %s on %d processes, fsdp %s", trainer.accelerator.distributed_type, trainer.args.world_size, trainer.is_fsdp_enabled)
    log.info(
        "trained %s for %d steps (%s), final loss %.4f",
        base_model,
        result.global_step,
        "packed" if packing else "padded",
        result.training_loss,
    )
    resumed = float(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else 0.0
    metrics = {
        "train_loss": float(result.training_loss),
        "train_steps": float(result.global_step),
        "train_examples": float(len(conversations)),
        "resumed_from_step": resumed,
        "packed": float(packing),
        "train_rows": float(len(rows)),
        "train_tokens": float(tokens),
        # Only a run that trained every epoch here measures throughput.
        "train_tokens_per_second": tokens * training.epochs / runtime if runtime and not resumed else 0.0,
        "processes": float(trainer.args.world_size),
        "fsdp": float(trainer.is_fsdp_enabled),
    }
    if leak is not None:
        metrics["packing_leak"] = leak
    return metrics


def _restore_checkpoints(uri: str, folder: Path) -> None:
    """Bring the newest complete checkpoint under ``uri`` into ``folder`` when it has none of its own."""
    from hala.storage import ObjectStore

    if _last_checkpoint(folder) is not None:
        return
    store = ObjectStore.from_env()
    complete = [name.split("/")[0] for name, _ in store.list(uri) if name.endswith("/trainer_state.json")]
    steps = [int(n.removeprefix("checkpoint-")) for n in complete if n.removeprefix("checkpoint-").isdigit()]
    if steps:
        newest = f"checkpoint-{max(steps)}"
        log.info("restoring %s from %s", newest, uri)
        # Into a hidden folder first: a download cut short must not look like a checkpoint (its small
        # trainer_state.json arrives before the weights); a rerun resumes it there, then it is renamed.
        staging = folder / f".{newest}.restoring"
        store.download_dir(f"{uri.rstrip('/')}/{newest}", staging)
        target = folder / newest
        if target.exists():  # a local copy without trainer_state.json: cut short, and replaced
            shutil.rmtree(target)
        staging.rename(target)


class _CheckpointUpload:
    """Upload each checkpoint as the trainer writes it (main process only), trainer_state.json last.

    A resume takes only checkpoints with trainer_state.json, so one whose upload was cut short is passed over.
    """

    def __new__(cls, uri: str, folder: Path):
        from transformers import TrainerCallback

        from hala.storage import ObjectStore

        class Callback(TrainerCallback):
            def on_save(self, args, state, control, **kwargs):
                if not state.is_world_process_zero:
                    return
                name = f"checkpoint-{state.global_step}"
                store, local, target = ObjectStore.from_env(), folder / name, f"{uri.rstrip('/')}/{name}"
                for path in sorted(p for p in local.rglob("*") if p.is_file() and p.name != "trainer_state.json"):
                    store.upload_file(path, f"{target}/{path.relative_to(local).as_posix()}")
                store.upload_file(local / "trainer_state.json", f"{target}/trainer_state.json")

        return Callback()


def _trl_marks_assistant_tokens(tokenizer) -> bool:
    """Whether TRL can find the assistant's tokens itself: ``{% generation %}`` blocks in the template,
    or a training variant TRL keeps for a template it recognises (LFM2's, Qwen2.5's and others)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except ValueError:  # a template TRL does not know
        return False


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder``.

    The trainer writes ``trainer_state.json`` after the weights and optimizer state, so a
    checkpoint cut short by a crash lacks it and is passed over.
    """
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


def job_spec(
    base_model: str,
    conversations: str,
    training: Training,
    *,
    metrics: str,
    chat_template: str | None,
    metric_prefix: str,
    mlflow_run_id: str | None,
    checkpoint_uri: str | None,
    out_dir: str | None = None,
    out_uri: str | None = None,
    base_revision: str | None = None,
) -> dict:
    """The job ``main`` reads: local paths for ranks on this machine, s3:// URIs for a TrainJob's nodes.

    ``out_dir`` is where the ranks save the model; with ``out_uri`` they save it on their scratch
    volume and global rank 0 uploads it there.
    """
    return {
        "base_model": base_model,
        "base_revision": base_revision,
        "conversations": conversations,
        "training": training.model_dump(),
        "out_dir": out_dir,
        "out_uri": out_uri,
        "chat_template": chat_template,
        "metric_prefix": metric_prefix,
        "mlflow_run_id": mlflow_run_id,
        "checkpoint_uri": checkpoint_uri,
        "metrics": metrics,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """One rank of a torchrun launch (see ``hala.launch``): read the job, train, write metrics on rank 0."""
    import argparse
    import json

    from hala.corpora import iter_jsonl

    from hala.models import resolve_model
    from hala.storage import fetch_file
    from hala.trainjob import SCRATCH

    parser = argparse.ArgumentParser(description="one rank of a distributed SFT job written by hala.launch or hala.trainjob")
    parser.add_argument("job", help="job.json: a local file (one node) or an s3:// object (a TrainJob's nodes)")
    ref = parser.parse_args(argv).job
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    job = json.loads((fetch_file(ref) if ref.startswith("s3://") else Path(ref)).read_text())
    conversations = job["conversations"]
    # A TrainJob node has only S3 in common with the others: it fetches the data and writes the
    # model to its own scratch volume, and global rank 0 uploads it.
    out_uri = job["out_uri"]
    out_dir = Path(os.environ.get("HALA_SCRATCH", SCRATCH)) / "model" if out_uri else Path(job["out_dir"])
    metrics = train_sft(
        resolve_model(job["base_model"], job.get("base_revision")),
        [row["messages"] for row in iter_jsonl(fetch_file(conversations) if conversations.startswith("s3://") else Path(conversations))],
        Training.model_validate(job["training"]),
        out_dir,
        chat_template=job["chat_template"],
        metric_prefix=job["metric_prefix"],
        mlflow_run_id=job["mlflow_run_id"],
        checkpoint_uri=job["checkpoint_uri"],
    )
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return
    if out_uri:
        from hala.storage import ObjectStore

        store = ObjectStore.from_env()
        store.upload_dir(out_dir, out_uri)
        (out_dir.parent / "metrics.json").write_text(json.dumps(metrics))
        store.upload_file(out_dir.parent / "metrics.json", job["metrics"])  # last: its presence means the model is complete
    else:
        Path(job["metrics"]).write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()

"""Stages 4 and 6: supervised fine-tuning with TRL, one code path for the translator and the students.

Training data are chat conversations; the loss covers assistant tokens only, so the model
learns to answer (or translate), not to echo the prompt.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

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
    """Send the trainer's loss curve to the active MLflow run, if there is one."""

    def __new__(cls, prefix: str):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                import mlflow

                if logs and mlflow.active_run() is not None:
                    values = {f"{prefix}{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                    if values:
                        mlflow.log_metrics(values, step=state.global_step)

        return Callback()


def train_sft(
    base_model: str,
    conversations: Sequence[Conversation],
    training: Training,
    out_dir: Path,
    *,
    metric_prefix: str = "",
    callbacks: Sequence[object] = (),
) -> dict[str, float]:
    """Fine-tune ``base_model`` on ``conversations`` and save model and tokenizer to ``out_dir``.

    Returns the final training loss and the number of optimizer steps. Refuses an empty
    dataset and conversations without an assistant turn.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    _check_conversations(conversations)
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.chat_template:
        raise ValueError(f"model {base_model} has no chat template; give the tokenizer one before training")
    on_gpu = torch.cuda.is_available()
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
        assistant_only_loss=True,
        logging_steps=max(1, steps_per_epoch // 4),
        save_strategy="steps" if training.save_steps else "no",
        save_steps=training.save_steps or 500,
        save_total_limit=training.save_total_limit,
        report_to=[],
        use_cpu=not on_gpu,
        bf16=on_gpu,
        gradient_checkpointing=on_gpu,
        dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{"messages": list(c)} for c in conversations])
    trainer = SFTTrainer(
        model=base_model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[_MlflowLoss(metric_prefix), *callbacks],
    )
    # A checkpoint left by an earlier, interrupted attempt (a preempted pod, a crash) is resumed:
    # weights, optimizer, scheduler, data order and step count all continue from it.
    checkpoint = _last_checkpoint(out_dir / "checkpoints")
    if checkpoint is not None:
        log.info("resuming %s from %s", base_model, checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    # Checkpoints (weights + optimizer state, several times the model) only serve a resume;
    # the finished model folder is what gets merged, evaluated and registered.
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    log.info("trained %s for %d steps, final loss %.4f", base_model, result.global_step, result.training_loss)
    resumed = float(checkpoint.name.removeprefix("checkpoint-")) if checkpoint else 0.0
    return {
        "train_loss": float(result.training_loss),
        "train_steps": float(result.global_step),
        "train_examples": float(len(conversations)),
        "resumed_from_step": resumed,
    }


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under ``folder``.

    The trainer writes ``trainer_state.json`` after the weights and optimizer state, so a
    checkpoint cut short by a crash lacks it and is passed over.
    """
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)

"""Stage 6: SFT of one student model on the Arabic corpus."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import read_jsonl
from hala.models import resolve_model
from hala.recipe import Recipe
from hala.sources import pin_model
from hala.launch import run_sft
from hala.trainjob import TrainJobTarget


def student_by_name(recipe: Recipe, name: str):
    for student in recipe.students.models:
        if student.name == name:
            return student
    known = ", ".join(s.name for s in recipe.students.models)
    raise ValueError(f"no student named {name!r} in the recipe; students: {known}")


def train_student(
    recipe: Recipe, name: str, corpus_file: Path, out_dir: Path, checkpoint_uri: str | None = None,
    trainjob: TrainJobTarget | None = None,
) -> dict[str, float]:
    """SFT of student ``name``; ``checkpoint_uri`` (s3://) keeps its checkpoints beyond this pod;
    ``trainjob`` runs it on several nodes (``training.nodes`` > 1), where the nodes read the base model at the version this pod resolved."""
    student = student_by_name(recipe, name)
    conversations = [row["messages"] for row in read_jsonl(corpus_file)]
    return run_sft(
        student.base if trainjob else resolve_model(student.base, student.revision), conversations, recipe.students.training,
        Path(out_dir), chat_template=student.chat_template, checkpoint_uri=checkpoint_uri, trainjob=trainjob,
        base_revision=pin_model(student.base, student.revision) if trainjob else None,
    )  # fmt: skip

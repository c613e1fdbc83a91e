"""Stage 6: SFT of one student model on the Arabic corpus."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import read_jsonl
from hala.models import resolve_model
from hala.recipe import Recipe
from hala.launch import run_sft


def student_by_name(recipe: Recipe, name: str):
    for student in recipe.students.models:
        if student.name == name:
            return student
    known = ", ".join(s.name for s in recipe.students.models)
    raise ValueError(f"no student named {name!r} in the recipe; students: {known}")


def train_student(
    recipe: Recipe, name: str, corpus_file: Path, out_dir: Path, checkpoint_uri: str | None = None
) -> dict[str, float]:
    """SFT of student ``name``; ``checkpoint_uri`` (s3://) keeps its checkpoints beyond this pod."""
    student = student_by_name(recipe, name)
    conversations = [row["messages"] for row in read_jsonl(corpus_file)]
    return run_sft(
        resolve_model(student.base), conversations, recipe.students.training, Path(out_dir),
        chat_template=student.chat_template, checkpoint_uri=checkpoint_uri,
    )  # fmt: skip

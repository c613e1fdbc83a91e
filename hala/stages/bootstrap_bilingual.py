"""Stage 2: the FP8 teacher turns English instruction conversations into bilingual ones.

``bilingual.jsonl`` holds each conversation twice, ``source_messages`` (English) and
``messages`` (Arabic), turn by turn; the translator trains on those turn pairs. Like the
corpus stage, the work is sharded and may fan out over ``bootstrap.shards.workers`` tasks,
after a canary shard (``worker`` -1) shows the teacher keeps ``bootstrap.min_keep_rate`` of it.
System prompts are dropped unless ``bootstrap.system_prompt`` says otherwise: the report
bootstraps from question and response pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hala.recipe import Recipe
from hala.translate_datasets import collect_parts, translate_datasets

BILINGUAL_FILE = "bilingual.jsonl"


def bootstrap_bilingual(recipe: Recipe, teacher_path: str, out_dir: Path, worker: int = 0) -> dict[str, float]:
    section = recipe.bootstrap
    return translate_datasets(
        [section.dataset],
        teacher_path,
        section.prompt,
        section,
        recipe.languages,
        recipe.engine,
        Path(out_dir),
        worker=worker,
        workers=section.shards.workers,
        kept_name=BILINGUAL_FILE,
        stage="bootstrap",
    )


def collect_bilingual(part_dirs: Sequence[Path], out_dir: Path) -> dict[str, float]:
    return collect_parts(part_dirs, out_dir, kept_name=BILINGUAL_FILE, stage="bootstrap")


def turn_pairs(row: dict) -> list[tuple[str, str]]:
    """(English, Arabic) for each translated turn of a bilingual row; kept-as-is system turns are skipped."""
    source = [m for m in row["source_messages"] if m["role"] != "system"]
    target = [m for m in row["messages"] if m["role"] != "system"]
    pairs = [(s["content"], t["content"]) for s, t in zip(source, target, strict=True)]
    systems = zip(
        [m for m in row["source_messages"] if m["role"] == "system"], [m for m in row["messages"] if m["role"] == "system"]
    )
    return [(s["content"], t["content"]) for s, t in systems if s["content"] != t["content"]] + pairs

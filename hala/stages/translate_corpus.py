"""Stage 5: the translator turns English instruction datasets into an Arabic conversational corpus.

Every turn of every conversation is translated faithfully (see :mod:`hala.translation`); roles
and order are kept, and each row keeps its English turns in ``source_messages``. The work is
sharded: on a cluster, ``corpus.shards.workers`` pipeline tasks share it and
:func:`collect_corpus` joins their parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hala.recipe import Recipe
from hala.translate_datasets import collect_parts, translate_datasets


def translate_corpus(recipe: Recipe, translator_path: str, out_dir: Path, worker: int = 0) -> dict[str, float]:
    section = recipe.corpus
    return translate_datasets(
        section.datasets,
        translator_path,
        recipe.bootstrap.prompt,
        section,
        recipe.languages,
        recipe.engine,
        Path(out_dir),
        worker=worker,
        workers=section.shards.workers,
        stage="corpus",
    )


def collect_corpus(part_dirs: Sequence[Path], out_dir: Path) -> dict[str, float]:
    return collect_parts(part_dirs, out_dir, stage="corpus")

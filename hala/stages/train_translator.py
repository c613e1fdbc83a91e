"""Stage 4: SFT of the lightweight translator on the bootstrap tuples and the judged pairs."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import iter_jsonl
from hala.models import resolve_model
from hala.recipe import Recipe
from hala.sources import pin_model
from hala.stages.bootstrap_bilingual import turn_pairs
from hala.launch import run_sft
from hala.trainjob import TrainJobTarget


def translator_conversations(recipe: Recipe, bilingual_file: Path, pairs_file: Path) -> list[list[dict[str, str]]]:
    """Chat-style EN->AR examples: one per translated bootstrap turn and one per kept pair."""
    src, tgt = recipe.languages.source, recipe.languages.target
    pairs: list[tuple[str, str]] = []
    for row in iter_jsonl(bilingual_file):
        pairs += turn_pairs(row)
    pairs += [(r["translation"][src], r["translation"][tgt]) for r in iter_jsonl(pairs_file)]
    prompt = recipe.bootstrap.prompt
    return [[{"role": "user", "content": prompt.format(text=s)}, {"role": "assistant", "content": t}] for s, t in pairs]


def train_translator(
    recipe: Recipe, bilingual_file: Path, pairs_file: Path, out_dir: Path, checkpoint_uri: str | None = None,
    trainjob: TrainJobTarget | None = None,
) -> dict[str, float]:
    """SFT of the translator; ``checkpoint_uri`` (s3://) keeps its checkpoints beyond this pod;
    ``trainjob`` runs it on several nodes (``training.nodes`` > 1), where the nodes read the base model at the version this pod resolved."""
    conversations = translator_conversations(recipe, bilingual_file, pairs_file)
    section = recipe.translator
    return run_sft(
        section.base if trainjob else resolve_model(section.base, section.revision), conversations, section.training,
        Path(out_dir), chat_template=section.chat_template, checkpoint_uri=checkpoint_uri, trainjob=trainjob,
        base_revision=pin_model(section.base, section.revision) if trainjob else None,
    )  # fmt: skip

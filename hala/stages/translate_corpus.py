"""Stage 5: the translator turns English instruction datasets into an Arabic conversational corpus.

Every turn of every conversation is translated; roles and order are kept. A conversation with
an empty translated turn goes to ``rejects.jsonl`` with its reason.
"""

from __future__ import annotations

from pathlib import Path

from hala.corpora import read_conversations, write_jsonl
from hala.engines import load_engine
from hala.recipe import DatasetRef, Generation, Recipe
from hala.translation import translate_texts


def translate_corpus(recipe: Recipe, translator_path: str, out_dir: Path) -> dict[str, float]:
    return translate_conversations(
        recipe.corpus.datasets, translator_path, recipe.bootstrap.prompt, recipe.corpus.generation, recipe.engine, out_dir
    )


def translate_conversations(
    datasets: list[DatasetRef], model_path: str, prompt: str, generation: Generation, engine: str, out_dir: Path
) -> dict[str, float]:
    """Translate every turn of every conversation in ``datasets`` with ``model_path`` into ``out_dir``.

    The pipeline's corpus stage and ``hala translate`` both run this.
    """
    conversations = []
    for ds in datasets:
        conversations += [(ds.path, conv) for conv in read_conversations(ds)]
    texts = [m["content"] for _, conv in conversations for m in conv]
    backend = load_engine(model_path, engine, generation)
    try:
        translated = iter(translate_texts(backend, texts, prompt, generation, desc="translating turns"))
    finally:
        backend.close()
    kept, rejected = [], []
    for source, conv in conversations:
        messages = [{"role": m["role"], "content": next(translated)} for m in conv]
        row = {"messages": messages, "source": source}
        empty = [i for i, m in enumerate(messages) if not m["content"].strip()]
        if empty:
            rejected.append({**row, "reason": f"empty translation of turn(s) {empty}"})
        else:
            kept.append(row)
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "corpus.jsonl", kept)
    write_jsonl(out_dir / "rejects.jsonl", rejected)
    return {
        "conversations_in": float(len(conversations)),
        "conversations_kept": float(len(kept)),
        "conversations_rejected": float(len(rejected)),
        "turns_translated": float(len(texts)),
    }

"""Stage 2: the FP8 teacher turns English instruction/response pairs into bilingual tuples."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import read_conversations, write_jsonl
from hala.engines import load_engine
from hala.recipe import Recipe
from hala.translation import translate_texts


def bootstrap_bilingual(recipe: Recipe, teacher_path: str, out_dir: Path) -> dict[str, float]:
    """Write ``bilingual.jsonl`` (instruction_en/ar, response_en/ar) and ``rejects.jsonl`` to ``out_dir``.

    A row whose instruction or response came back empty is rejected with its reason.
    """
    section = recipe.bootstrap
    pairs = []
    for conv in read_conversations(section.dataset):
        user = next(m["content"] for m in conv if m["role"] == "user")
        assistant = next(m["content"] for m in conv if m["role"] == "assistant")
        pairs.append((user, assistant))
    texts = [t for pair in pairs for t in pair]
    engine = load_engine(teacher_path, recipe.engine, section.generation)
    try:
        translated = translate_texts(engine, texts, section.prompt, section.generation, desc="bootstrap: translating")
    finally:
        engine.close()
    kept, rejected = [], []
    for i, (instruction, response) in enumerate(pairs):
        row = {
            "instruction_en": instruction,
            "instruction_ar": translated[2 * i],
            "response_en": response,
            "response_ar": translated[2 * i + 1],
        }
        empty = [k for k in ("instruction_ar", "response_ar") if not row[k].strip()]
        if empty:
            rejected.append({**row, "reason": f"empty translation: {', '.join(empty)}"})
        else:
            kept.append(row)
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "bilingual.jsonl", kept)
    write_jsonl(out_dir / "rejects.jsonl", rejected)
    return {"rows_in": float(len(pairs)), "rows_kept": float(len(kept)), "rows_rejected": float(len(rejected))}

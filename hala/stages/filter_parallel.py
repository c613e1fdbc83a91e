"""Stage 3: an instruct model judges candidate parallel pairs; only ACCEPTed pairs are kept.

Every candidate ends in exactly one of two files: ``pairs.jsonl`` (kept) or ``rejects.jsonl``
with the reason (the judge said REJECT, or its answer could not be parsed).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from hala.corpora import read_pairs, write_jsonl
from hala.engines import load_engine
from hala.models import resolve_model
from hala.recipe import Recipe

_VERDICT = re.compile(r"\b(ACCEPT|REJECT)\b", re.IGNORECASE)


def parse_verdict(answer: str) -> str | None:
    """ACCEPT or REJECT when the answer states exactly one of them, else None."""
    found = {m.upper() for m in _VERDICT.findall(answer)}
    return found.pop() if len(found) == 1 else None


def filter_parallel(recipe: Recipe, out_dir: Path) -> dict[str, float]:
    section = recipe.judge
    src, tgt = recipe.languages.source, recipe.languages.target
    pairs = read_pairs(section.dataset, src, tgt)
    conversations = [[{"role": "user", "content": section.prompt.format(source=s, target=t)}] for s, t in pairs]
    engine = load_engine(resolve_model(section.model), recipe.engine, section.generation)
    try:
        answers = engine.chat(conversations, section.generation, desc="filter: judging pairs")
    finally:
        engine.close()
    kept, rejected, reasons = [], [], Counter()
    for (s, t), answer in zip(pairs, answers, strict=True):
        verdict = parse_verdict(answer)
        row = {"translation": {src: s, tgt: t}}
        if verdict == "ACCEPT":
            kept.append(row)
            continue
        reason = "judge: REJECT" if verdict == "REJECT" else "judge: unparseable answer"
        reasons[reason] += 1
        rejected.append({**row, "reason": reason, "judge_answer": answer})
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "pairs.jsonl", kept)
    write_jsonl(out_dir / "rejects.jsonl", rejected)
    if len(kept) + len(rejected) != len(pairs):  # every candidate must end in exactly one file
        raise RuntimeError(f"filter lost rows: {len(pairs)} in, {len(kept)} kept + {len(rejected)} rejected")
    metrics = {"rows_in": float(len(pairs)), "rows_kept": float(len(kept)), "rows_rejected": float(len(rejected))}
    metrics.update({f"rejected_{r.split(': ')[1].replace(' ', '_').lower()}": float(n) for r, n in reasons.items()})
    return metrics

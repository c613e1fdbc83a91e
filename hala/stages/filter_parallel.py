"""Stage 3: filter a parallel corpus: heuristic checks first, then an LLM judge (ACCEPT/REJECT).

Every candidate ends in exactly one of two files: ``pairs.jsonl`` (kept) or ``rejects.jsonl``
with its reason (a heuristic's, "judge: REJECT", or "judge: unparseable answer"). The same
function serves the pipeline stage and ``hala filter``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from hala.corpora import read_pairs, write_jsonl
from hala.engines import load_engine
from hala.filters import Pair, filter_pairs, reason_key
from hala.models import resolve_model
from hala.progress import progress_bar
from hala.recipe import DatasetRef, Filters, Judge, Languages, Recipe

_VERDICT = re.compile(r"\b(ACCEPT|REJECT)\b", re.IGNORECASE)


def parse_verdict(answer: str) -> str | None:
    """ACCEPT or REJECT when the answer states exactly one of them, else None."""
    found = {m.upper() for m in _VERDICT.findall(answer)}
    return found.pop() if len(found) == 1 else None


def metric_key(reason: str) -> str:
    """The reason's family as a metric name: "judge: REJECT" -> judge_reject, "length ratio 3.1 ..." -> length_ratio."""
    if reason.startswith("judge: "):
        return "judge_" + reason.removeprefix("judge: ").split()[0].lower()
    return reason_key(reason)


def _judge(pairs: list[Pair], judge: Judge, engine_choice: str) -> tuple[list[str | None], list[str]]:
    conversations = [[{"role": "user", "content": judge.prompt.format(source=p.source, target=p.target)}] for p in pairs]
    engine = load_engine(resolve_model(judge.model), engine_choice, judge.generation)
    try:
        answers = engine.chat(conversations, judge.generation, desc="filter: judging pairs")
    finally:
        engine.close()
    verdicts = [parse_verdict(a) for a in answers]
    reasons = [None if v == "ACCEPT" else "judge: REJECT" if v == "REJECT" else "judge: unparseable answer" for v in verdicts]
    return reasons, answers


def filter_corpus(
    dataset: DatasetRef, filters: Filters, languages: Languages, out_dir: Path, *, judge: Judge | None, engine: str = "auto"
) -> dict[str, float]:
    """Filter ``dataset`` into ``out_dir``: heuristics always, the LLM judge when ``judge`` is given."""
    src, tgt = languages.source, languages.target
    pairs = [Pair(s, t) for s, t in read_pairs(dataset, src, tgt)]
    reasons: list[str | None] = []
    with progress_bar("filter: heuristic checks", total=len(pairs)) as bar:
        for _, reason in filter_pairs(pairs, filters, src, tgt):
            reasons.append(reason)
            bar.update(1)
    answers: dict[int, str] = {}
    if judge is not None:
        survivors = [i for i, r in enumerate(reasons) if r is None]
        if survivors:
            verdicts, raw = _judge([pairs[i] for i in survivors], judge, engine)
            for i, verdict, answer in zip(survivors, verdicts, raw, strict=True):
                reasons[i] = verdict
                answers[i] = answer
    kept, rejected = [], []
    for i, (pair, reason) in enumerate(zip(pairs, reasons, strict=True)):
        row = {"translation": {src: pair.source, tgt: pair.target}}
        if reason is None:
            kept.append(row)
        else:
            extra = {"judge_answer": answers[i]} if i in answers else {}
            rejected.append({**row, "reason": reason, **extra})
    if len(kept) + len(rejected) != len(pairs):  # every candidate must end in exactly one file
        raise RuntimeError(f"filter lost rows: {len(pairs)} in, {len(kept)} kept + {len(rejected)} rejected")
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "pairs.jsonl", kept)
    write_jsonl(out_dir / "rejects.jsonl", rejected)
    by_reason = Counter(metric_key(r["reason"]) for r in rejected)
    metrics = {"rows_in": float(len(pairs)), "rows_kept": float(len(kept)), "rows_rejected": float(len(rejected))}
    metrics.update({f"rejected_{key}": float(n) for key, n in sorted(by_reason.items())})
    return metrics


def filter_parallel(recipe: Recipe, out_dir: Path) -> dict[str, float]:
    section = recipe.judge
    return filter_corpus(section.dataset, section.filters, recipe.languages, out_dir, judge=section, engine=recipe.engine)

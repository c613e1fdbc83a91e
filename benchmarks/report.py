"""What the benchmarks share: the texts they translate, and what each does with its figures (add the
machine, print them, write them as JSON)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def emit(result: dict, out: Path) -> None:
    result = {**result, "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()}}
    print(json.dumps(result, indent=2, ensure_ascii=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def translation_texts() -> list[str]:
    """The 200 benchmark texts: every turn of the bundled smoke conversations."""
    from hala.corpora import read_conversations
    from hala.recipe import DatasetRef

    return [
        m["content"]
        for name in ("instructions_more_en.jsonl", "instructions_en.jsonl")
        for conv in read_conversations(DatasetRef(path=f"bundled:smoke/{name}"))
        for m in conv
    ]

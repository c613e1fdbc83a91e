"""What every benchmark does with its figures: add the machine, print them, write them as JSON."""

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

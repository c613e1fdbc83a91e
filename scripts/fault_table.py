"""The README's fault table, from what the fault suite (tests/faults/) recorded in its latest run.

    .venv/bin/python scripts/fault_table.py      # after make test, or pytest tests/faults
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RECORDS = Path(__file__).resolve().parents[1] / "build" / "faults"


def main() -> int:
    runs = sorted(RECORDS.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    if not runs:
        print(f"no fault records under {RECORDS}: run the fault suite first (pytest tests/faults)", file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in runs[-1].read_text(encoding="utf-8").splitlines() if line.strip()]
    print("| fault tried | what the system did | rows/files lost | duplicated |")
    print("|---|---|---|---|")
    for row in sorted(rows, key=lambda r: r["test"]):
        print(f"| {row['fault']} | {row['outcome']} | {row['lost']} | {row['duplicated']} |")
    print(f"\n{len(rows)} faults, from {runs[-1].name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Each fault test records what it tried and what the system did; scripts/fault_table.py turns the
records of the latest run into the README's fault table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

RECORDS = Path(__file__).resolve().parents[2] / "build" / "faults"


@pytest.fixture
def fault_record(request):
    """record(fault, outcome, lost=0, duplicated=0, **figures): one row of the fault table, after the test's asserts."""
    rows = []

    def record(fault: str, outcome: str, lost: int = 0, duplicated: int = 0, **figures) -> None:
        rows.append({"test": request.node.nodeid, "fault": fault, "outcome": outcome, "lost": lost, "duplicated": duplicated, **figures})

    yield record
    if rows and not getattr(request.node, "failed", False):
        RECORDS.mkdir(parents=True, exist_ok=True)
        # One file per test session, shared by its xdist workers (each line appended whole).
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "single")
        with (RECORDS / f"{run}.jsonl").open("a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.failed = True

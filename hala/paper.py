"""Published OALL v2 scores to compare a run's students with: the Hala models and their bases.

Scores are on the 0-100 scale, per task (hala.benchmarks keys) and the six-task average.
Sources (README, "Evaluation"):
- averages: the Hala report (arXiv 2509.14008); Hala-9B's 69.9 is also on its model card
  (huggingface.co/hammh0a/Hala-9B). The report's table itself could not be read here, so the
  other averages are marked unverified against it.
- per-task scores: AraLingBench (arXiv 2511.14295v2, Table 4, by the same group); their six-task
  means round to the report's averages for all five rows.
No published OALL v2 figure was found for the LFM2 base models; they are left out, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hala.benchmarks import TASKS


# The data of the report (arXiv 2509.14008), as the shipped recipes reproduce it.
CORPUS_ROWS = 4_500_000  # "~4.5M" Arabic conversations; the released Hala-4.6M-SFT holds 4,060,575 rows after rejects
BOOTSTRAP_ROWS = 405_000  # Open-Orca question/response pairs the FP8 teacher translated (810K translator pairs)


@dataclass(frozen=True)
class Published:
    model: str
    average: float
    tasks: dict[str, float]
    source: str
    verified: bool  # the average was read in a source here, not only recomputed from the task scores


def _row(model, alghafa, arabic_mmlu, exams, madinah_qa, aratrust, arbmmlu_ht, average, source, verified):
    tasks = dict(zip(TASKS, (alghafa, arabic_mmlu, exams, madinah_qa, aratrust, arbmmlu_ht), strict=True))
    return Published(model, average, tasks, source, verified)


_REPORT = "Hala report arXiv 2509.14008 (average); AraLingBench arXiv 2511.14295v2 Table 4 (tasks)"
# fmt: off
HALA = {
    "hammh0a/Hala-350M": _row("hammh0a/Hala-350M", 51.4, 41.2, 36.9, 34.5, 52.1, 35.4, 41.9, _REPORT, False),
    "hammh0a/Hala-700M": _row("hammh0a/Hala-700M", 55.5, 45.9, 40.6, 34.7, 65.2, 39.4, 46.9, _REPORT, False),
    "hammh0a/Hala-1.2B": _row("hammh0a/Hala-1.2B", 59.2, 48.6, 43.4, 41.6, 71.7, 44.2, 51.4, _REPORT, False),
    "hammh0a/Hala-9B": _row("hammh0a/Hala-9B", 78.3, 65.6, 53.8, 70.4, 89.6, 61.4, 69.9, _REPORT + "; model card (average)", True),
}
BASES = {
    "QCRI/Fanar-1-9B-Instruct": _row("QCRI/Fanar-1-9B-Instruct", 76.4, 65.8, 52.7, 73.4, 88.3, 58.6, 69.2, _REPORT, False),
}
# fmt: on
# The Hala model the report trained from each base.
HALA_OF_BASE = {
    "LiquidAI/LFM2-350M": "hammh0a/Hala-350M",
    "LiquidAI/LFM2-700M": "hammh0a/Hala-700M",
    "LiquidAI/LFM2-1.2B": "hammh0a/Hala-1.2B",
    "QCRI/Fanar-1-9B-Instruct": "hammh0a/Hala-9B",
}


def published_for(base: str) -> dict[str, Published]:
    """The published rows that match a student built on ``base``: ``hala`` and ``base`` where known."""
    out = {}
    if base in HALA_OF_BASE:
        out["hala"] = HALA[HALA_OF_BASE[base]]
    if base in BASES:
        out["base"] = BASES[base]
    return out

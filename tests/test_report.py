"""The run report from a summary: tables with deltas, plots, and the command that rebuilds it."""

import json
import subprocess
import sys

SUMMARY = {
    "recipe": "demo",
    "recipe_hash": "abc123",
    "mlflow": {"tracking_uri": "sqlite:///unused.db", "parent_run_id": "run1"},
    "wall_time_s": 400.0,
    "teacher": {"model": "CohereLabs/command-a-translate-08-2025", "revision": None, "version": "3f2a9c1", "reused_fp8": None},
    "metrics": {
        "fp8_gate": {"chrf_original": 61.0, "chrf_fp8": 60.5, "chrf_drop": 0.5, "gate_samples": 30,
                     "teacher_bytes": 7.2e6, "fp8_bytes": 3.0e6, "compression_ratio": 2.4, "quantize_seconds": 1.7},
        "bootstrap": {"rows_in": 60, "rows_kept": 58, "rows_rejected": 2, "rejected_translation_cut_at_max_new_tokens": 2},
        "filter": {"rows_in": 180, "rows_kept": 165, "rows_rejected": 15, "rejected_untranslated_copy": 10, "rejected_judge_reject": 5},
        "corpus": {"rows_in": 0},
        "translation": {"before": {"chrf": 2.5, "chrf_pp": 1.9, "bleu": 0.0, "pairs": 30}, "after": {"chrf": 13.5, "chrf_pp": 13.1, "bleu": 2.2, "pairs": 30}},
        "students": {
            "s1": {
                "base": {"average": 50.0, "alghafa": 40.0, "aratrust": 60.0, "chat_template": False},
                "sft": {"average": 55.0, "alghafa": 45.0, "aratrust": 65.0, "chat_template": True},
                "merged": {"average": 56.0, "alghafa": 47.25, "aratrust": 65.0, "chat_template": True},
                "published": {
                    "hala": {"model": "hammh0a/Hala-350M", "average": 41.9, "alghafa": 51.4, "aratrust": 52.1,
                             "source": "the report", "average_verified": False},
                },
            }
        },
    },
}
SUMMARY["artifacts"] = {"students": {"s1": {"merged": {"t": 0.5, "sweep": {"0.30": 55.0, "0.50": 56.0}}}}}
CURVES = {"train_translator": [(1, 5.0), (2, 3.0)], "train_student[s1]": [(1, 6.0), (2, 5.5)]}


def test_report_tables_deltas_and_plots(tmp_path):
    from hala.report import write_report

    report = write_report(SUMMARY, tmp_path / "report", curves=CURVES).read_text(encoding="utf-8")
    # The published figures of the matching Hala model sit beside the run's own.
    assert "| task | base | SFT | merged | merged - base | hammh0a/Hala-350M (published) |" in report
    assert "| AlGhafa | 40.0 | 45.0 | 47.2 | +7.2 | 51.4 |" in report
    assert "| **average** | 50.0 | 55.0 | 56.0 | +6.0 | 41.9 |" in report
    assert "Published figures: hammh0a/Hala-350M: the report (average not verified against the report)." in report
    assert "Evaluated without a chat template (the tokenizer has none): base." in report
    assert "Merge sweep (six-task average per slerp t): t=0.30: 55.0, t=0.50: 56.0 (chosen)." in report
    assert "| chrF | 2.50 | 13.50 |" in report
    assert "chrF of the original teacher 61.00, of the FP8 copy 60.50 (drop 0.50) on 30 held-out pairs." in report
    assert "Weights: 0.01 GB -> 0.00 GB (2.40x smaller), compressed in 2 s." in report
    assert "Original teacher: `CohereLabs/command-a-translate-08-2025` at `3f2a9c1`." in report
    assert "| parallel-pair filter | 180 | 165 | 15 (untranslated copy: 10, judge reject: 5) |" in report
    assert "corpus translation" not in report  # a stage with no rows is left out
    for plot in ("benchmarks_s1.png", "translation.png", "data_funnel.png", "loss_curves.png"):
        assert (tmp_path / "report" / plot).read_bytes()[:4] == b"\x89PNG" and f"({plot})" in report


def test_report_command_rebuilds_from_a_run_folder(tmp_path):
    summary = {**SUMMARY, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/elsewhere.db", "parent_run_id": "gone"}}
    (tmp_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "hala", "report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    # The run's MLflow store is not there: the report is written all the same and says what is missing.
    assert "Loss curves unavailable: the run's MLflow store did not answer (MlflowException" in report
    assert "| **average** | 50.0 | 55.0 | 56.0 | +6.0 | 41.9 |" in report
    missing = subprocess.run([sys.executable, "-m", "hala", "report", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 2 and "summary.json does not exist" in missing.stderr

"""The table printed at the end of a run: each stage, its duration, status and key metrics (from MLflow)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

# The few numbers per stage a person looks at first; everything else is in MLflow.
KEY_METRICS = {
    "quantize_teacher": ["compression_ratio", "quantize_seconds"],
    "gate_teacher": ["chrf_original", "chrf_fp8", "chrf_drop"],
    "bootstrap_bilingual": ["rows_in", "rows_kept", "rows_rejected", "tokens_per_s"],
    "screen_pairs": ["screen_rows_in", "screen_survivors", "screen_pairs_per_s"],
    "judge_pairs": ["judged", "shards", "judge_tokens_per_s"],
    "filter_parallel": ["rows_in", "rows_kept", "rows_rejected"],
    "train_translator": ["train_examples", "train_loss"],
    "evaluate_translator": ["chrf_before", "chrf_after", "bleu_after"],
    "translate_corpus": ["rows_in", "rows_kept", "rows_rejected", "tokens_per_s"],
    "train_student": ["train_examples", "train_loss"],
    "evaluate_student": ["base_average", "sft_average", "merged_average", "merge_best_t"],
}


def stage_rows(tracking_uri: str, parent_run_id: str) -> list[dict]:
    """One row per nested stage run, in start order: name, status, seconds, key metrics."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=1000
    )
    rows = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        name = run.info.run_name
        family = name.split("[")[0]
        metrics = {k: run.data.metrics[k] for k in KEY_METRICS.get(family, []) if k in run.data.metrics}
        end = run.info.end_time or run.info.start_time
        rows.append({"stage": name, "status": run.info.status, "seconds": (end - run.info.start_time) / 1000, "metrics": metrics})
    return rows


def render(rows: list[dict]) -> Table:
    table = Table(title="Hala pipeline stages")
    for col in ("stage", "status", "time", "key metrics"):
        table.add_column(col)
    for row in rows:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items())
        table.add_row(escape(row["stage"]), row["status"], f"{row['seconds']:.1f}s", metrics)
    return table

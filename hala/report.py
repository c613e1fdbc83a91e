"""The run report: what a person reads after a run, in Markdown with plots (matplotlib).

Built from ``summary.json`` and the run's MLflow store: per-benchmark scores of base, SFT
and merged models with their deltas, loss curves, the translator's chrF/chrF++/BLEU before
and after training, and the data funnel (rows in, kept, rejected by reason) of every data
stage. The pipeline writes it at its end and logs it to MLflow; ``hala report RUN``
rebuilds it from a run folder.
"""

from __future__ import annotations

from pathlib import Path

from hala.benchmarks import TASKS

ROLES = ("base", "sft", "merged")
DATA_STAGES = (("bootstrap", "bootstrap (teacher translation)"), ("filter", "parallel-pair filter"), ("corpus", "corpus translation"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: pods and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _loss_curves(tracking_uri: str, parent_run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The ``loss`` history of every training stage of the run, by stage name."""
    from hala.tracking import registry_client

    client = registry_client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=1000)
    curves = {}
    for run in runs:
        if run.info.run_name.startswith(("train_translator", "train_student")):
            history = client.get_metric_history(run.info.run_id, "loss")
            curves[run.info.run_name] = sorted((m.step, m.value) for m in history)
    return dict(sorted(curves.items()))


def _benchmark_plot(plt, name: str, scores: dict, path: Path) -> None:
    labels = [b for b in TASKS if any(b in scores.get(r, {}) for r in ROLES)] + ["average"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(ROLES)
    for i, role in enumerate(ROLES):
        values = [scores.get(role, {}).get(label) or 0.0 for label in labels]
        ax.bar([x + (i - 1) * width for x in range(len(labels))], values, width, label=role)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylabel("OALL v2 acc_norm (0-100)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{name}: base vs SFT vs merged")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _translation_plot(plt, translation: dict, path: Path) -> None:
    metrics = ["chrf", "chrf_pp", "bleu"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, when in enumerate(("before", "after")):
        ax.bar([x + (i - 0.5) * 0.4 for x in range(3)], [translation.get(when, {}).get(m, 0.0) for m in metrics], 0.4, label=when)
    ax.set_xticks(range(3), ["chrF", "chrF++", "BLEU"])
    ax.set_title("translator on held-out pairs: before and after training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _loss_plot(plt, curves: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_title("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _funnel(metrics: dict) -> tuple[float, float, dict[str, float]]:
    reasons = {k.removeprefix("rejected_").replace("_", " "): v for k, v in metrics.items() if k.startswith("rejected_")}
    return metrics.get("rows_in", 0.0), metrics.get("rows_kept", 0.0), reasons


def _funnel_plot(plt, stages: list[tuple[str, dict]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.8 * len(stages)))
    # Kept is green; each reason keeps one colour across stages, never green.
    palette = ["tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan", "tab:blue"]
    colours: dict[str, str] = {}
    for y, (label, metrics) in enumerate(stages):
        _, kept, reasons = _funnel(metrics)
        ax.barh(y, kept, color="tab:green", label="kept" if y == 0 else None)
        left = kept
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            new = reason not in colours
            colour = colours.setdefault(reason, palette[len(colours) % len(palette)])
            ax.barh(y, n, left=left, color=colour, label=reason if new else None)
            left += n
    ax.set_yticks(range(len(stages)), [label for label, _ in stages])
    ax.set_xlabel("rows")
    ax.set_title("data funnel: kept, and rejected by reason")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_report(summary: dict, out_dir: Path, *, curves: dict | None = None) -> Path:
    """Write ``report.md`` and its plots into ``out_dir``; returns the Markdown file.

    ``curves`` (stage -> [(step, loss)]) default to the run's MLflow store named in the summary.
    """
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = summary["metrics"]
    missing_curves = None
    if curves is None:
        try:
            curves = _loss_curves(summary["mlflow"]["tracking_uri"], summary["mlflow"]["parent_run_id"])
        except Exception as err:  # noqa: BLE001 - a run folder copied away from its store still gets a report
            curves, missing_curves = {}, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    lines = [
        f"# Hala run report: recipe `{summary['recipe']}`",
        "",
        f"Recipe hash `{summary['recipe_hash']}`, MLflow parent run `{summary['mlflow']['parent_run_id']}`"
        + (f", wall time {summary['wall_time_s']:.0f} s." if "wall_time_s" in summary else "."),
        "",
        "## Students: base vs SFT vs merged",
        "",
    ]
    for name, scores in metrics["students"].items():
        published = scores.get("published", {})
        paper_columns = [w for w in ("hala", "base") if w in published]
        header = "| task | base | SFT | merged | merged - base |" + "".join(f" {published[w]['model']} (published) |" for w in paper_columns)
        lines += [f"### {name}", "", header, "|---" * (5 + len(paper_columns)) + "|"]
        for label in [*TASKS, "average"]:
            row = [scores.get(role, {}).get(label) for role in ROLES]
            if all(v is None for v in row):
                continue
            delta = None if None in (row[0], row[2]) else row[2] - row[0]
            shown = f"**{label}**" if label == "average" else TASKS[label].title
            paper = "".join(f" {_fmt(published[w].get(label))} |" for w in paper_columns)
            lines.append(f"| {shown} | " + " | ".join(_fmt(v) for v in row) + f" | {'-' if delta is None else f'{delta:+.1f}'} |" + paper)
        lines.append(
            "\nScores: OALL v2 acc_norm on a 0-100 scale; a task is the mean of its subsets, the average the mean of the tasks."
        )
        if published:
            sources = "; ".join(f"{p['model']}: {p['source']}" + ("" if p.get("average_verified") else " (average not verified against the report)") for p in published.values())
            lines.append(f"Published figures: {sources}.")
        no_template = [role for role in ROLES if scores.get(role, {}).get("chat_template") is False]
        if no_template:
            lines.append(f"Evaluated without a chat template (the tokenizer has none): {', '.join(no_template)}.")
        merge = summary.get("artifacts", {}).get("students", {}).get(name, {}).get("merged", {})
        if len(merge.get("sweep", {})) > 1:
            chosen = f"{merge['t']:.2f}"
            sweep = ", ".join(f"t={t}: {avg:.1f}" + (" (chosen)" if t == chosen else "") for t, avg in merge["sweep"].items())
            lines.append(f"\nMerge sweep (six-task average per slerp t): {sweep}.")
        plot = f"benchmarks_{name}.png"
        _benchmark_plot(plt, name, scores, out_dir / plot)
        lines += ["", f"![{name}]({plot})", ""]
    translation = metrics.get("translation", {})
    if translation:
        lines += ["## Translator", "", "| metric | before | after |", "|---|---|---|"]
        for key, label in (("chrf", "chrF"), ("chrf_pp", "chrF++"), ("bleu", "BLEU")):
            lines.append(f"| {label} | {translation['before'].get(key, 0):.2f} | {translation['after'].get(key, 0):.2f} |")
        lines += ["", f"Held-out pairs: {translation['after'].get('pairs', 0):.0f}.", "", "![translator](translation.png)", ""]
        _translation_plot(plt, translation, out_dir / "translation.png")
    gate = metrics.get("fp8_gate", {})
    if "chrf_drop" in gate:
        lines += [
            "## FP8 teacher gate",
            "",
            f"chrF of the original teacher {gate['chrf_original']:.2f}, of the FP8 copy {gate['chrf_fp8']:.2f} "
            f"(drop {gate['chrf_drop']:.2f}) on {gate['gate_samples']:.0f} held-out pairs.",
            "",
        ]
        teacher = summary.get("teacher")
        if teacher and teacher.get("version"):
            # Which model the FP8 copy was made from, at the version the quantize stage read.
            lines += [f"Original teacher: `{teacher['model']}` at `{teacher['version']}`.", ""]
        if gate.get("fp8_bytes"):
            lines += [
                f"Weights: {gate['teacher_bytes'] / 1e9:.2f} GB -> {gate['fp8_bytes'] / 1e9:.2f} GB "
                f"({gate['compression_ratio']:.2f}x smaller), compressed in {gate['quantize_seconds']:.0f} s.",
                "",
            ]
    stages = [(label, metrics[key]) for key, label in DATA_STAGES if metrics.get(key, {}).get("rows_in")]
    if stages:
        lines += ["## Data funnel", "", "| stage | rows in | kept | rejected (by reason) |", "|---|---|---|---|"]
        for label, stage in stages:
            rows_in, kept, reasons = _funnel(stage)
            detail = ", ".join(f"{r}: {n:.0f}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])) or "none"
            lines.append(f"| {label} | {rows_in:.0f} | {kept:.0f} | {rows_in - kept:.0f} ({detail}) |")
        lines += ["", "![funnel](data_funnel.png)", ""]
        _funnel_plot(plt, stages, out_dir / "data_funnel.png")
    if curves:
        lines += ["## Training loss", "", "![loss](loss_curves.png)", ""]
        _loss_plot(plt, curves, out_dir / "loss_curves.png")
    elif missing_curves:
        lines += ["## Training loss", "", f"Loss curves unavailable: the run's MLflow store did not answer ({missing_curves}).", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report

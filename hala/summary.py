"""The end of a pipeline run: register the models, write ``summary.json``, close the parent run.

``summary.json`` is the one place that says where everything a run made lives: the MLflow
run, every artifact (with each merge's base, other and t) and the headline metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hala.corpora import file_hash
from hala.engines import ENGINE_TAG
from hala.paper import published_for
from hala.recipe import recipe_from_json
from hala.report import write_report
from hala.sources import run_sources
from hala.stages.merge_slerp import candidate_folder
from hala.stages.register import original_teacher, register_models
from hala.tracking import end_parent_run, tagged_stages, use_store


@dataclass
class Artifact:
    """What a pipeline task hands on: its URI (s3://, minio://, or a local path), local path and metadata."""

    uri: str
    path: str
    metadata: dict = field(default_factory=dict)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(metadata: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metadata.items() if _number(v)}


def _scores(result: dict) -> dict:
    """One model's evaluation as the summary keeps it: task scores and average (0-100), subset scores, chat template."""
    return {
        "average": result["average"],
        **{key: task["score"] for key, task in result["tasks"].items()},
        "subsets": {key: {s: v["acc_norm"] for s, v in task["subsets"].items()} for key, task in result["tasks"].items()},
        "chat_template": result["chat_template"],
    }


def build_summary(
    recipe_json: str,
    tracking_uri: str,
    parent_run_id: str,
    *,
    fp8_teacher: Artifact,
    bilingual: Artifact,
    pairs: Artifact,
    translator: Artifact,
    translator_eval: Artifact,
    corpus: Artifact,
    checkpoints: list[Artifact],
    merged: list[Artifact],
    evaluations: list[Artifact],
    gate: Artifact | None = None,
) -> dict:
    """``gate``: the FP8 gate's scores (None for a reused teacher, checked when it was made)."""
    recipe = recipe_from_json(recipe_json)
    by_student: dict[str, dict] = {s.name: {} for s in recipe.students.models}
    reused = {uri: name for name, uri in recipe.reuse.students.items()}
    for a in checkpoints:
        # A reused checkpoint is known by its URI; a trained one names its student.
        by_student[a.metadata.get("student") or reused[a.uri]]["sft_checkpoint"] = a.uri
    merge_folders: dict[str, str] = {}
    for a in merged:
        md = a.metadata
        by_student[md["student"]]["merged"] = {"base": md["base"], "other": md["other"]}
        merge_folders[md["student"]] = a.uri
    student_metrics: dict[str, dict] = {}
    bases = {s.name: s.base for s in recipe.students.models}
    for a in evaluations:
        name = a.metadata["student"]
        by_student[name]["evaluation"] = a.uri
        table = json.loads(Path(a.path).read_text(encoding="utf-8"))
        # The merge the evaluation chose (the only one without a sweep) is the student's model.
        best = table["merge"]["best_t"]
        by_student[name]["merged"].update(
            {"uri": f"{merge_folders[name].rstrip('/')}/{candidate_folder(best)}", "t": best, "sweep": table["merge"]["sweep"]}
        )
        student_metrics[name] = {role: _scores(res) for role, res in table["results"].items()}
        published = published_for(bases[name])
        if published:
            student_metrics[name]["published"] = {
                which: {"model": p.model, "average": p.average, **p.tasks, "source": p.source, "average_verified": p.verified}
                for which, p in published.items()
            }
    translation = json.loads(Path(translator_eval.path).read_text(encoding="utf-8"))
    return {
        "recipe": recipe.name,
        "recipe_hash": recipe.hash,
        "mlflow": {"tracking_uri": tracking_uri, "experiment": recipe.tracking.experiment, "parent_run_id": parent_run_id},
        "artifacts": {
            "fp8_teacher": fp8_teacher.uri,
            "bilingual_data": bilingual.uri,
            "filtered_pairs": pairs.uri,
            "translator": translator.uri,
            "translator_evaluation": translator_eval.uri,
            "arabic_corpus": corpus.uri,
            "students": by_student,
        },
        "metrics": {
            # The compression's figures (stage 1a) with the gate's scores (stage 1b).
            "fp8_gate": _numbers(fp8_teacher.metadata) | (_numbers(gate.metadata) if gate else {}),
            "bootstrap": _numbers(bilingual.metadata),
            "filter": _numbers(pairs.metadata),
            "translator_training": _numbers(translator.metadata),
            "translation": translation,
            "corpus": _numbers(corpus.metadata),
            "students": student_metrics,
        },
    }


def finish_pipeline(recipe_json: str, tracking_uri: str, parent_run_id: str, *, summary_path: str, **artifacts) -> dict:
    """Register the models, write the summary to ``summary_path`` and mark the parent run FINISHED."""
    import mlflow

    recipe = recipe_from_json(recipe_json)
    summary = build_summary(recipe_json, tracking_uri, parent_run_id, **artifacts)
    a = artifacts
    # The kept rows only: shard folders and manifests carry timings that differ between identical runs.
    data_hashes = {
        "bilingual": file_hash(Path(a["bilingual"].path) / "bilingual.jsonl"),
        "filtered_pairs": file_hash(Path(a["pairs"].path) / "pairs.jsonl"),
        "arabic_corpus": file_hash(Path(a["corpus"].path) / "corpus.jsonl"),
    }
    merged_paths = {m.metadata["student"]: Path(m.path) for m in a["merged"]}
    bases = {s.name: s.base for s in recipe.students.models}
    students = []
    for name, info in summary["artifacts"]["students"].items():
        results = summary["metrics"]["students"].get(name, {})
        metrics = {k: v for k, v in results.get("merged", {}).items() if _number(v)}
        if "average" in results.get("base", {}):  # promotion compares a model with its base
            metrics["base_average"] = results["base"]["average"]
        students.append({
            "name": name, "base": bases[name], "uri": info["merged"]["uri"], "merge": info["merged"], "metrics": metrics,
            "path": str(merged_paths[name] / candidate_folder(info["merged"]["t"])), "published": results.get("published", {}),
        })  # fmt: skip
    # Every model and dataset version the stages read; the summary names the teacher the FP8 copy came from.
    sources = run_sources(tracking_uri, parent_run_id)
    # Which engine (and release, and device) each generating or evaluating stage ran on, from its run's tags.
    summary["engines"] = tagged_stages(tracking_uri, parent_run_id, ENGINE_TAG)
    summary["teacher"] = original_teacher(recipe, sources)
    summary["registered"] = register_models(
        recipe,
        tracking_uri,
        parent_run_id,
        teacher={"uri": a["fp8_teacher"].uri, "path": a["fp8_teacher"].path, "metrics": summary["metrics"]["fp8_gate"]},
        translator={"uri": a["translator"].uri, "path": a["translator"].path, "metrics": summary["metrics"]["translation"]["after"]},
        students=students,
        data_hashes=data_hashes,
        sources=sources,
    )
    summary["data_hashes"] = data_hashes
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    use_store(tracking_uri, recipe.tracking.experiment)
    client = mlflow.MlflowClient()
    client.log_dict(parent_run_id, summary, "summary.json")
    report_dir = Path(summary_path).parent / "report"
    write_report(summary, report_dir)
    client.log_artifacts(parent_run_id, str(report_dir), "report")
    end_parent_run(tracking_uri, parent_run_id, "FINISHED")
    return summary

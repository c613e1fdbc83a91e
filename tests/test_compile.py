import json
import re

import yaml

from hala import __version__
from hala.images import family_of, image
from hala.recipe import load_recipe
from pipelines.translate_and_tune import compile_pipeline

STAGES = {
    "preflight",
    "open-run",
    "quantize-teacher",
    "gate-teacher",
    "bootstrap-bilingual",
    "collect-bilingual",
    "screen-pairs",
    "judge-pairs",
    "collect-pairs",
    "train-translator",
    "evaluate-translator",
    "translate-corpus",
    "collect-corpus",
    "train-student",
    "merge-student",
    "evaluate-student",
    "register-models",
}


def _compile(name, tmp_path):
    out = tmp_path / f"{name}.yaml"
    compile_pipeline(load_recipe(name), str(out))
    return next(yaml.safe_load_all(out.read_text()))  # the second document holds kfp-kubernetes settings


def _all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_real_recipes_compile_with_every_stage(tmp_path):
    for name in ("hala-nano", "hala-9b", "smoke"):
        spec = _compile(name, tmp_path)
        assert spec["pipelineInfo"]["name"] == f"hala-translate-and-tune-{name}"
        tasks = _all_tasks(spec)
        assert STAGES <= set(tasks), STAGES - set(tasks)
        recipe = load_recipe(name)
        params = spec["root"]["inputDefinitions"]["parameters"]
        assert params["recipe_json"]["defaultValue"] == recipe.to_json()
        # The Kubeflow UI shows these next to each run parameter.
        assert params["tracking_uri"]["description"].startswith("MLflow tracking server for the runs and the registry")
        assert all(p.get("description") for p in params.values())
        root = "s3://hala/runs/pipeline-root" if recipe.storage else None
        assert spec.get("defaultPipelineRoot") == root


def test_students_and_corpus_workers_fan_out_with_parallelfor(tmp_path):
    spec = _compile("hala-nano", tmp_path)
    loops = {t["parameterIterator"]["items"]["raw"]: t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t}
    assert set(loops) == {'["hala-350m", "hala-700m", "hala-1-2b"]', "[0, 1, 2, 3, 4, 5, 6, 7]", "[0, 1, 2, 3]", "[0]"}
    register = spec["root"]["dag"]["tasks"]["register-models"]
    collected = register["inputs"]["artifacts"]["merged"]["taskOutputArtifact"]
    assert collected["producerTask"] == loops['["hala-350m", "hala-700m", "hala-1-2b"]']["componentRef"]["name"].removeprefix("comp-")
    # The corpus is joined from the workers' parts by one task, which the students wait for.
    join = spec["root"]["dag"]["tasks"]["collect-corpus"]
    parts = join["inputs"]["artifacts"]["parts"]["taskOutputArtifact"]
    assert parts["producerTask"] == loops["[0, 1, 2, 3, 4, 5, 6, 7]"]["componentRef"]["name"].removeprefix("comp-")


def test_a_canary_shard_runs_before_each_fan_out_of_several_workers(tmp_path):
    spec = _compile("hala-nano", tmp_path)
    root = spec["root"]["dag"]["tasks"]
    canaries = {t["taskInfo"]["name"]: (name, t) for name, t in root.items() if t["taskInfo"]["name"].endswith(" canary")}
    # bootstrap has one worker (it checks its own first shard); the judge's 4 and the corpus's 8 wait for a canary
    assert set(canaries) == {"3. filter: LLM judge canary", "5. translate corpus canary"}
    for label, loop in (("3. filter: LLM judge canary", "judge-workers"), ("5. translate corpus canary", "corpus-workers")):
        name, task = canaries[label]
        assert task["inputs"]["parameters"]["worker"]["runtimeValue"]["constant"] == -1
        workers = next(t for t in root.values() if t["taskInfo"]["name"] == loop)
        assert name in workers["dependentTasks"]


def test_nothing_reads_the_fp8_teacher_before_the_gate_passed(tmp_path):
    """The bootstrap reads the FP8 teacher from 1a's output, but runs only after 1b (the gate) succeeded; so does the judge."""
    spec = _compile("hala-nano", tmp_path)
    root = spec["root"]["dag"]["tasks"]
    gate = root["gate-teacher"]
    assert gate["inputs"]["artifacts"]["fp8_teacher"]["taskOutputArtifact"]["producerTask"] == "quantize-teacher"
    by_label = {t["taskInfo"]["name"]: t for t in root.values()}
    # hala-nano's bootstrap has one worker (inside its loop), the judge a canary before its workers.
    assert "gate-teacher" in by_label["bootstrap-workers"]["dependentTasks"]
    assert "gate-teacher" in by_label["3. filter: LLM judge canary"]["dependentTasks"]
    register = root["register-models"]["inputs"]["artifacts"]
    assert register["gate"]["taskOutputArtifact"] == {"outputArtifactKey": "gate", "producerTask": "gate-teacher"}


FAMILY = {
    "preflight": "base", "open-run": "base", "screen-pairs": "base", "collect-pairs": "base",
    "collect-bilingual": "base", "collect-corpus": "base", "register-models": "merge",
    "quantize-teacher": "quantize", "train-translator": "train", "train-student": "train",
    "merge-student": "merge", "gate-teacher": "vllm", "bootstrap-bilingual": "vllm", "judge-pairs": "vllm",
    "translate-corpus": "vllm", "evaluate-translator": "vllm", "evaluate-student": "vllm",
}  # fmt: skip


def test_each_stage_runs_in_its_family_image_and_installs_nothing_at_start(tmp_path):
    spec = _compile("hala-9b", tmp_path)
    executors = {_stage(name.removeprefix("exec-")): ex["container"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    assert {name: family_of(c["image"]) for name, c in executors.items()} == FAMILY
    assert {c["image"].rsplit(":", 1)[1] for c in executors.values()} == {__version__}
    for name, container in executors.items():
        # No KFP preamble: the image's own kfp runs the component, nothing is fetched at pod start.
        command = " ".join(container["command"] + container.get("args", []))
        assert "pip install" not in command and "python3 -m kfp.dsl.executor_main" in command, name


GPU_STAGES = {
    "quantize-teacher", "gate-teacher", "bootstrap-bilingual", "judge-pairs", "train-translator", "evaluate-translator",
    "translate-corpus", "train-student", "evaluate-student",
}  # fmt: skip
CPU_STAGES = STAGES - GPU_STAGES


def _compiled(name, tmp_path):
    """The pipeline document, each task's executor container and its kfp-kubernetes settings."""
    out = tmp_path / f"{name}.yaml"
    compile_pipeline(load_recipe(name), str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    tasks = {}
    for task_name, task in _all_tasks(spec).items():
        executor = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        if executor:
            container = spec["deploymentSpec"]["executors"][executor]["container"]
            tasks[task_name] = (task, container, platform.get(executor, {}))
    return out.read_text(), tasks


def _stage(task_name):
    """A task's stage: a component used twice (a fan-out's canary and its workers) gets a numbered second name."""
    return re.sub(r"-\d+$", "", task_name)


def _gpus(container):
    accelerator = container.get("resources", {}).get("accelerator", {})
    return int(accelerator.get("resourceCount", accelerator.get("count", 0)))


def test_cluster_recipes_ask_for_gpus_nodes_and_secrets_by_name(tmp_path, monkeypatch):
    # Values that must never reach a compiled pipeline, even when set where the compiler runs.
    canaries = {"AWS_SECRET_ACCESS_KEY": "canary-s3-secret-4711", "MLFLOW_TRACKING_PASSWORD": "canary-mlflow-4711", "HF_TOKEN": "hf_canary4711"}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    for name in ("hala-nano", "hala-9b"):
        recipe = load_recipe(name)
        cluster = recipe.cluster
        text, tasks = _compiled(name, tmp_path)
        assert not [v for v in canaries.values() if v in text]
        assert {_stage(t) for t in tasks} >= STAGES
        for raw_name, (task, container, k8s) in tasks.items():
            task_name = _stage(raw_name)
            # A student trained on several nodes: its pod only creates and follows the TrainJob.
            multi_node = task_name == "train-student" and recipe.students.training.nodes > 1
            gpu = task_name in GPU_STAGES and not multi_node
            assert (_gpus(container) > 0) == gpu, task_name
            if gpu:
                role = next(r for r, res in cluster.resources.items() if res.node_selector and _role_of(task_name) == r)
                assert k8s["nodeSelector"]["labels"] == cluster.resources[role].node_selector
                assert [t["key"] for t in k8s["tolerations"]] == [t.key for t in cluster.resources[role].tolerations]
                assert task["retryPolicy"]["maxRetryCount"] == cluster.retries.count
            else:
                assert "nodeSelector" not in k8s and "tolerations" not in k8s
                assert ("retryPolicy" in task) == multi_node
            secrets = {s["secretName"]: {e["envVar"]: e["secretKey"] for e in s["keyToEnv"]} for s in k8s["secretAsEnv"]}
            assert secrets == {s.name: s.env for s in cluster.secrets}
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env["AWS_ENDPOINT_URL"] == cluster.s3_endpoint
            assert env.get("HALA_TRAIN_IMAGE") == (image("train") if multi_node else None)
            cached = task.get("cachingOptions", {}).get("enableCache", False)
            assert cached == (task_name not in ("preflight", "open-run", "register-models")), task_name
            # Only preflight may start without a Secret: it is the task that reports one missing.
            assert {s["optional"] for s in k8s["secretAsEnv"]} == {task_name == "preflight"}
        assert _gpus(tasks["bootstrap-bilingual"][1]) == recipe.bootstrap.generation.tensor_parallel_size == 8
        # llm-compressor quantizes a shard at a time on one GPU; the gate serves the 111B teacher with its tensor parallelism.
        assert _gpus(tasks["quantize-teacher"][1]) == 1
        assert _gpus(tasks["gate-teacher"][1]) == recipe.teacher.generation.tensor_parallel_size == 8
        assert tasks["open-run"][0]["dependentTasks"] == ["preflight"]
        # The registry task reads every model it logs: it gets the merge pods' memory.
        assert tasks["register-models"][1]["resources"]["resourceMemoryLimit"] == cluster.resources["merge"].memory == "64Gi"
        students = recipe.students.training
        assert _gpus(tasks["train-student"][1]) == (0 if students.nodes > 1 else cluster.resources["training"].gpus)
    assert load_recipe("hala-9b").students.training.nodes == 2


def _role_of(task_name):
    return {
        "quantize-teacher": "quantize", "gate-teacher": "generation", "bootstrap-bilingual": "generation", "judge-pairs": "generation",
        "translate-corpus": "generation", "train-translator": "training", "train-student": "training",
        "evaluate-translator": "evaluation", "evaluate-student": "evaluation",
    }[task_name]  # fmt: skip


def test_the_smoke_recipe_compiles_with_the_run_key_as_its_only_platform_setting(tmp_path):
    _, tasks = _compiled("smoke", tmp_path)
    for _, container, k8s in tasks.values():
        assert _gpus(container) == 0
        assert k8s == {"fieldPathAsEnv": [{"name": "HALA_RUN_KEY", "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}]}


def test_no_cached_stage_takes_an_input_that_changes_every_run(tmp_path):
    """KFP's cache key covers a task's inputs; the parent MLflow run, new in every run, must not be one."""
    for name in ("hala-nano", "smoke"):
        spec = _compile(name, tmp_path)
        root = spec["root"]["dag"]["tasks"]
        for task_name, task in _all_tasks(spec).items():
            if task_name in ("preflight", "open-run", "register-models") or task_name.startswith(("importer", "for-loop")):
                continue
            assert task["cachingOptions"]["enableCache"] is True, task_name
            inputs = json.dumps(task.get("inputs", {}))
            assert "open-run" not in inputs and "parent_run_id" not in inputs, task_name
        # Every stage (or the loop holding it) still waits for the parent run to be open.
        for task_name, task in root.items():
            if task_name not in ("preflight", "open-run") and not task_name.startswith("importer"):
                assert "open-run" in task.get("dependentTasks", []), task_name
        assert "open-run" in json.dumps(root["register-models"]["inputs"])


def test_reused_outputs_replace_their_stages_with_importers(tmp_path):
    from hala.recipe import parse_recipe

    data = yaml.safe_load(load_recipe("hala-nano").to_yaml())
    data["reuse"] = {
        "fp8_teacher": "s3://hala/runs/r1/fp8-teacher",
        "corpus": "s3://hala/runs/r1/corpus",
        "students": {m["name"]: f"s3://hala/runs/r1/{m['name']}" for m in data["students"]["models"]},
    }
    out = tmp_path / "reuse.yaml"
    compile_pipeline(parse_recipe(data, "test"), str(out))
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = _all_tasks(spec)
    gone = {"quantize-teacher", "gate-teacher", "translate-corpus", "collect-corpus", "train-student"}
    assert not gone & set(tasks)
    assert STAGES - gone <= set(tasks)
    importers = {e["importer"]["artifactUri"].get("constant", "(loop item)"): e["importer"]["typeSchema"]["schemaTitle"]
                 for e in spec["deploymentSpec"]["executors"].values() if "importer" in e}
    assert importers == {
        "s3://hala/runs/r1/fp8-teacher": "system.Model",
        "s3://hala/runs/r1/corpus": "system.Dataset",
        "(loop item)": "system.Model",
    }
    # The students' loop carries each checkpoint next to its name; the bootstrap reads the imported teacher.
    loops = [t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    raw = [json.loads(t["parameterIterator"]["items"]["raw"]) for t in loops]
    assert {"student": "hala-350m", "checkpoint": "s3://hala/runs/r1/hala-350m"} in [i for r in raw for i in r if isinstance(i, dict)]
    boot = tasks["bootstrap-bilingual"]["inputs"]["artifacts"]["fp8_teacher"]
    assert "importer" in json.dumps(boot)

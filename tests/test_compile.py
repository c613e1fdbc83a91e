import yaml

from hala.recipe import load_recipe
from pipelines.translate_and_tune import compile_pipeline

STAGES = {
    "open-run",
    "quantize-teacher",
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
    return yaml.safe_load(out.read_text())


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
        default = spec["root"]["inputDefinitions"]["parameters"]["recipe_json"]["defaultValue"]
        assert default == recipe.to_json()
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


def test_each_stage_runs_in_its_family_image(tmp_path):
    spec = _compile("hala-9b", tmp_path)
    images = {name.removeprefix("exec-"): ex["container"]["image"] for name, ex in spec["deploymentSpec"]["executors"].items()}
    assert images["quantize-teacher"].endswith("/hala-quantize:0.1.0")
    assert images["train-student"].endswith("/hala-train:0.1.0")
    assert images["bootstrap-bilingual"].endswith("/hala-vllm:0.1.0")
    assert images["merge-student"].endswith("/hala-merge:0.1.0")
    assert images["evaluate-student"].endswith("/hala-eval:0.1.0")


import pytest
import yaml

from hala import paper
from hala.benchmarks import TASKS
from hala.recipe import RecipeError, builtin_recipes, classify_ref, load_recipe, parse_recipe, recipe_from_json


def test_builtin_recipes_validate():
    assert builtin_recipes() == ["hala-9b", "hala-nano", "smoke"]
    nano = load_recipe("hala-nano")
    assert [s.base for s in nano.students.models] == ["LiquidAI/LFM2-350M", "LiquidAI/LFM2-700M", "LiquidAI/LFM2-1.2B"]
    assert nano.teacher.model == "CohereLabs/command-a-translate-08-2025"
    assert nano.judge.model == "Qwen/Qwen2.5-3B-Instruct"
    assert nano.translator.base == "LiquidAI/LFM2-1.2B"
    assert nano.merge.t == 0.5
    assert [s.base for s in load_recipe("hala-9b").students.models] == ["QCRI/Fanar-1-9B-Instruct"]
    assert load_recipe("smoke").evaluation.benchmarks == list(TASKS)


def test_json_round_trip_keeps_hash(smoke_recipe):
    again = recipe_from_json(smoke_recipe.to_json())
    assert again == smoke_recipe
    assert again.hash == smoke_recipe.hash and len(again.hash) == 16


def _smoke_dict():
    return yaml.safe_load(load_recipe("smoke").to_yaml())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["teacher"].update(modle="x"), "recipe <dict>: teacher.modle: unknown key"),
        (lambda d: d.update(studnets={}), "recipe <dict>: studnets: unknown key"),
        (lambda d: d["merge"].update(t=1.5), "recipe <dict>: merge.t: every t must be between 0 and 1, got [1.5]"),
        (lambda d: d["merge"].update(t=[0.3, 0.301]), "recipe <dict>: merge.t: t values must differ at two decimals, got [0.3, 0.301]"),
        (lambda d: d["merge"].update(t=[]), "recipe <dict>: merge.t: give at least one t"),
        (lambda d: d.pop("judge"), "recipe <dict>: judge: required key is missing"),
        (
            lambda d: d["tracking"].update(tracking_uri="https://hala:s3cret@mlflow.example.org"),
            "tracking.tracking_uri: must not carry credentials (they would land in the compiled pipeline); "
            "give MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD from a Secret in cluster.secrets",
        ),
        (
            lambda d: d.update(cluster={"s3_endpoint": "http://minio:s3cret@minio.kubeflow:9000"}),
            "cluster.s3_endpoint: must not carry credentials (they would land in the compiled pipeline); "
            "give AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from a Secret in cluster.secrets",
        ),
        (
            lambda d: d["judge"].update(model="s3://minio:s3cret@models/judge"),
            "judge.model: s3://***@models/judge must not carry credentials",
        ),
        (
            lambda d: d.update(cluster={"secrets": [{"name": "Bad_Name", "env": {"X": "y"}}]}),
            "cluster.secrets.0.name",
        ),
        (lambda d: d.update(storage={"uri": "/local/folder"}), "storage.uri"),
        (lambda d: d["bootstrap"].update(prompt="Translate: x"), "bootstrap.prompt: must contain the placeholder {text}"),
        (
            lambda d: d["students"]["models"].append({"name": "nano-s", "base": "tiny:student-s"}),
            "students: student names must be unique; repeated: nano-s",
        ),
        (lambda d: d["translator"].update(base="not a model"), "translator.base: 'not a model' is not a hub id"),
        (lambda d: d["evaluation"].update(benchmarks=["mmlu"]), "evaluation.benchmarks: unknown benchmark task 'mmlu'; the tasks are: alghafa, arabic_mmlu"),
        (
            lambda d: d["bootstrap"]["dataset"].update(layout="opus"),
            "bootstrap: dataset: layout 'opus' holds parallel pairs, not instructions",
        ),
        (
            lambda d: d["corpus"]["datasets"][0].update(layout="columns"),
            "corpus: datasets[0]: layout 'columns' needs fields.user and fields.assistant",
        ),
        (lambda d: d["judge"]["dataset"].update(layout="sharegpt"), "judge: dataset: layout 'sharegpt' holds conversations"),
        (lambda d: d["judge"]["filters"].update(min_length_ratio=4.0), "judge.filters: min_length_ratio must be below max_length_ratio"),
        (
            lambda d: d.update(reuse={"corpus": "runs/corpus"}),
            "reuse.corpus: 'runs/corpus' is not an s3://bucket/key URI or an absolute path",
        ),
        (
            lambda d: d.update(reuse={"students": {"nano-s": "/ckpt/s"}}),
            "reuse.students must give a checkpoint for every student or none; missing: nano-m",
        ),
        (
            lambda d: d.update(reuse={"students": {"nano-s": "/a", "nano-m": "/b", "nano-x": "/c"}}),
            "reuse.students names nano-x, which are not in students.models (nano-s, nano-m)",
        ),
    ],
)
def test_bad_recipes_name_the_key(mutate, message):
    data = _smoke_dict()
    mutate(data)
    with pytest.raises(RecipeError) as err:
        parse_recipe(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value) and "s3cret" not in str(err.value)  # a refused secret is not repeated


def test_unknown_recipe_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'smok'; built-in recipes: hala-9b, hala-nano, smoke"):
        load_recipe("smok")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: line \d+: not valid YAML"):
        load_recipe(str(bad))


@pytest.mark.parametrize(
    "ref, kind",
    [
        ("LiquidAI/LFM2-1.2B", "hub"),
        ("s3://bucket/models/x", "s3"),
        ("/abs/model", "local"),
        ("./rel/model", "local"),
        ("tiny:teacher", "tiny"),
        ("bundled:smoke/x.jsonl", "bundled"),
    ],
)
def test_classify_ref(ref, kind):
    assert classify_ref(ref) == kind


@pytest.mark.parametrize("name", ["hala-nano", "hala-9b"])
def test_the_real_recipes_take_the_papers_data_mix(name):
    recipe = load_recipe(name)
    limits = [ds.limit for ds in recipe.corpus.datasets]
    assert None not in limits  # every corpus set is bounded
    assert abs(sum(limits) - paper.CORPUS_ROWS) <= 0.05 * paper.CORPUS_ROWS
    # the larger sets are sampled across their split, not cut at their first rows
    sampled = {ds.path: ds.sample for ds in recipe.corpus.datasets if ds.sample}
    assert set(sampled) == {"Open-Orca/OpenOrca", "MBZUAI/LaMini-instruction"}
    assert recipe.bootstrap.dataset.limit == paper.BOOTSTRAP_ROWS and recipe.bootstrap.system_prompt == "drop"

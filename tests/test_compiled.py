"""A run's recipe_json may not change what the pipeline was compiled with: open_run refuses it, naming the fields."""

from __future__ import annotations

import json

import pytest
import yaml

from hala.compiled import CompiledRecipeMismatch, check_compiled, compiled_fields_json, fixed_fields
from hala.recipe import load_recipe, parse_recipe


def _variant(name, change):
    data = load_recipe(name).model_dump(mode="json")
    change(data)
    return parse_recipe(data, f"{name} variant")


def test_fields_fixed_at_compile_are_named_with_both_values():
    compiled = compiled_fields_json(load_recipe("hala-nano"))

    def edit(d):
        d["students"]["models"].pop()  # two students where the pipeline fans out over three
        d["judge"]["shards"]["workers"] = 8
        d["cluster"]["resources"]["training"]["gpus"] = 4

    with pytest.raises(CompiledRecipeMismatch) as err:
        check_compiled(_variant("hala-nano", edit), compiled)
    message = str(err.value)
    assert message.startswith("the run's recipe_json changes 3 field(s) the pipeline was compiled with (cluster: compiled ")
    assert 'judge.shards.workers: compiled 4, run 8' in message
    assert 'students.models[].name: compiled ["hala-350m", "hala-700m", "hala-1-2b"], run ["hala-350m", "hala-700m"]' in message
    assert message.endswith("compile the pipeline again from this recipe (hala compile or hala submit) instead of editing recipe_json")


def test_fields_read_at_run_time_may_change():
    compiled = compiled_fields_json(load_recipe("hala-nano"))

    def edit(d):
        d["translator"]["training"]["learning_rate"] = 1e-5
        d["merge"]["t"] = [0.3, 0.5]
        d["judge"]["threshold"] = 0.7
        d["corpus"]["datasets"][0]["limit"] = 1000
        d["bootstrap"]["generation"]["max_new_tokens"] = 512

    check_compiled(_variant("hala-nano", edit), compiled)  # nothing raised


def _spec(recipe, tmp_path):
    """The compiled pipeline without what carries the recipe itself (its JSON, hash and description)."""
    from pipelines.translate_and_tune import compile_pipeline

    target = tmp_path / f"{recipe.hash}.yaml"
    compile_pipeline(recipe, str(target))
    spec = next(yaml.safe_load_all(target.read_text()))
    spec["root"]["inputDefinitions"]["parameters"]["recipe_json"].pop("defaultValue")
    spec["pipelineInfo"].pop("description", None)
    return spec


@pytest.mark.parametrize(
    ("field", "change", "fixed"),
    [
        ("judge.shards.workers", lambda d: d["judge"]["shards"].update(workers=2), True),
        ("students.parallelism", lambda d: d["students"].update(parallelism=1), True),
        ("translator.training.learning_rate", lambda d: d["translator"]["training"].update(learning_rate=1e-5), False),
        ("merge.t", lambda d: d["merge"].update(t=[0.3, 0.5]), False),
    ],
)
def test_a_fixed_field_changes_the_compiled_pipeline_and_a_run_time_field_does_not(field, change, fixed, tmp_path):
    base, changed = load_recipe("hala-nano"), _variant("hala-nano", change)
    differs_in_spec = _spec(base, tmp_path) != _spec(changed, tmp_path)
    differs_in_fields = fixed_fields(base) != fixed_fields(changed)
    assert differs_in_spec == differs_in_fields == fixed, field


def test_the_compiled_fields_are_a_constant_of_open_run_not_a_run_parameter(tmp_path):
    from pipelines.translate_and_tune import compile_pipeline

    recipe = load_recipe("hala-nano")
    target = tmp_path / "p.yaml"
    compile_pipeline(recipe, str(target))
    spec = next(yaml.safe_load_all(target.read_text()))
    inputs = spec["root"]["dag"]["tasks"]["open-run"]["inputs"]["parameters"]
    assert json.loads(inputs["compiled"]["runtimeValue"]["constant"]) == fixed_fields(recipe)
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"recipe_json", "tracking_uri", "parent_run_id"}


def test_a_local_run_with_an_edited_recipe_json_stops_at_open_run(smoke_recipe, tmp_path, monkeypatch, capfd):
    import kfp.local

    from hala.tracking import local_tracking_uri
    from pipelines.translate_and_tune import build_pipeline

    monkeypatch.setenv("HALA_RUN_KEY", "edited-recipe-run")
    pipeline = build_pipeline(smoke_recipe)
    edited = smoke_recipe.model_dump(mode="json")
    edited["students"]["models"] = edited["students"]["models"][:1]
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "artifacts"))
    with pytest.raises(RuntimeError) as err:
        pipeline(recipe_json=parse_recipe(edited, "edited").to_json(), tracking_uri=local_tracking_uri(tmp_path), parent_run_id="")
    assert "open-run" in str(err.value)
    logged = capfd.readouterr()
    assert 'CompiledRecipeMismatch: the run\'s recipe_json changes 1 field(s) the pipeline was compiled with (students.models[].name: compiled ["nano-s", "nano-m"], run ["nano-s"])' in logged.out + logged.err
    assert not list((tmp_path / "artifacts").glob("*/open-run/mlflow_run"))  # no parent run was opened

"""The capacity plan: model shapes as transformers builds them, and recipes refused with the stage and numbers."""

from __future__ import annotations

import json

import pytest

from hala.plan import GIB, PlanError, Shape, accelerator_memory, model_shape, plan_recipe, shape_from_config, shipped_models
from hala.recipe import Resources, load_recipe, parse_recipe


def _variant(name: str, **changes):
    """A shipped recipe with some sections changed (dotted keys, merged into the dumped recipe)."""
    data = load_recipe(name).model_dump(mode="json")
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = data
        for key in path:
            node = node[key]
        node[last] = value
    return parse_recipe(data, f"{name} variant")


def _row(plan, stage):
    return next(r for r in plan.rows if r.stage == stage)


@pytest.mark.parametrize("model", sorted(shipped_models()))
def test_shipped_shapes_are_what_transformers_builds_from_the_shipped_config(model):
    entry = shipped_models()[model]
    shape = shape_from_config(entry["config"])
    assert Shape(**entry["shape"]) == shape
    if entry["published_parameters"]:
        # The model card's count: a config fact copied wrong would change it.
        assert shape.parameters == entry["published_parameters"]


def test_the_shape_of_a_local_model_counts_its_real_parameters(tiny):
    from transformers import AutoModelForCausalLM

    path = tiny("student-m")
    shape, source = model_shape("tiny:student-m")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert source == "local"
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    config = json.loads(open(f"{path}/config.json").read())
    assert shape.full_attention_layers == config["layer_types"].count("full_attention") == 2
    assert shape.vocab_size == config["vocab_size"]


def test_shipped_recipes_fit_with_the_gate_on_vllm_and_the_teacher_quantized_shard_by_shard():
    for name in ("hala-nano", "hala-9b"):
        plan = plan_recipe(load_recipe(name))
        assert set(plan.sources.values()) == {"shipped"}  # offline in tests: the shipped facts stand in
        assert plan.refused == []
        plan.check()
        # The gate serves the 111B teacher in bf16 over the teacher's 8 GPUs, in the vllm image.
        gate = _row(plan, "1b. FP8 gate (original)")
        assert (gate.engine, gate.count, gate.device) == ("vllm", 8, "GPU")
        assert gate.parts["weights"] == 2 * 111_057_580_032 // 8
        assert gate.have == int(81559 * 2**20 * 0.9)  # an H100 80GB from the node selector, 90% to vLLM
        # One shard at a time (5 GB assumed offline), not the 207 GiB teacher, in the quantize pod.
        quantize = _row(plan, "1a. quantize teacher")
        assert quantize.parts == {"largest shard x 2.5 (assumed 5 GB)": int(2.5 * 5e9), "runtime": 2 * GIB}
        assert quantize.have == 64 * GIB and quantize.fits
        bootstrap = _row(plan, "2. bootstrap")
        assert (bootstrap.engine, bootstrap.count, bootstrap.fits) == ("vllm", 8, True)
        assert bootstrap.have == int(81559 * 2**20 * 0.9)


def test_the_teacher_on_one_gpu_is_refused_with_the_stage_and_numbers():
    plan = plan_recipe(_variant("hala-nano", **{"teacher.generation.tensor_parallel_size": 1, "bootstrap.generation.tensor_parallel_size": 1}))
    assert [r.stage for r in plan.refused] == ["1b. FP8 gate (original)", "2. bootstrap"]
    gate = _row(plan, "1b. FP8 gate (original)")
    assert gate.refusal().startswith("1b. FP8 gate (original): CohereLabs/command-a-translate-08-2025 on vllm needs ")
    assert "per GPU (1 GPU), the recipe gives 71.7 GiB (largest part: weights 206.9 GiB)" in gate.refusal()
    assert gate.refusal().endswith("set teacher.generation.tensor_parallel_size to 4")
    row = _row(plan, "2. bootstrap")
    message = row.refusal()
    assert message.startswith("2. bootstrap: CohereLabs/command-a-translate-08-2025 (FP8) on vllm needs ")
    assert f"{row.need / GIB:.1f} GiB per GPU (1 GPU), the recipe gives 71.7 GiB" in message
    # 111B parameters in FP8, one byte each, and the tied 256K x 12288 embedding kept in bf16.
    assert row.parts["weights"] == 111_057_580_032 + 256_000 * 12_288
    assert "largest part: weights 106.4 GiB" in message
    assert message.endswith("set bootstrap.generation.tensor_parallel_size to 2")
    with pytest.raises(PlanError, match=r"capacity plan: 2 stage\(s\) do not fit: 1b\. FP8 gate .* \| 2\. bootstrap: "):
        plan.check()


def test_the_gate_on_transformers_puts_the_whole_teacher_on_one_gpu_and_is_refused():
    gate = _row(plan_recipe(_variant("hala-nano", engine="transformers")), "1b. FP8 gate (original)")
    assert (gate.engine, gate.count, gate.fits) == ("transformers", 1, False)
    assert gate.parts["weights"] == 2 * 111_057_580_032
    assert "run it on vLLM with tensor_parallel_size 4" in gate.refusal()


def test_the_9b_student_trained_single_on_one_80gb_gpu_is_refused():
    recipe = _variant("hala-9b", **{"students.training.strategy": "single", "students.training.nodes": 1, "students.training.processes": 1})
    row = _row(plan_recipe(recipe), "6. train hala-9b")
    assert not row.fits and row.count == 1
    # fp32 weights and gradients and AdamW's two moments: 16 bytes a parameter, 131 GiB, before activations.
    assert row.parts["weights (fp32)"] + row.parts["gradients (fp32)"] + row.parts["adamw state"] == 16 * 8_783_871_488
    assert "needs" in row.refusal() and "the recipe gives 79.6 GiB" in row.refusal()
    assert row.refusal().endswith("set students.training.strategy to fsdp over at least 4 GPUs")


def test_the_9b_student_at_batch_8_does_not_fit_its_fsdp_gpus():
    # The shipped recipe trains at batch 4; at 8 the logits over the 128K vocabulary outgrow an H100.
    row = _row(plan_recipe(_variant("hala-9b", **{"students.training.batch_size": 8})), "6. train hala-9b")
    assert not row.fits and row.count == 16
    assert max(row.parts, key=row.parts.get) == "logits and loss"
    assert "set students.training.batch_size to 4" in row.refusal()


def test_an_accelerator_the_plan_does_not_know_needs_its_memory_in_the_recipe():
    unknown = Resources(node_selector={"nvidia.com/gpu.product": "NVIDIA-B300"})
    with pytest.raises(PlanError, match=r"cluster.resources.generation: the plan does not know the memory of the accelerator 'NVIDIA-B300'; "
                                        r"set cluster.resources.generation.accelerator_memory \(e.g. 80Gi\)"):  # fmt: skip
        accelerator_memory(unknown, "cluster.resources.generation")
    given = Resources(node_selector={"nvidia.com/gpu.product": "NVIDIA-B300"}, accelerator_memory="288Gi")
    assert accelerator_memory(given, "cluster.resources.generation") == 288 * GIB
    resources = load_recipe("hala-nano").cluster.resources
    changed = {role: r.model_dump(mode="json") for role, r in resources.items()}
    changed["generation"]["node_selector"] = {}
    with pytest.raises(PlanError, match=r"no nvidia.com/gpu.product node selector"):
        plan_recipe(_variant("hala-nano", **{"cluster.resources": changed}))


def test_a_model_whose_config_cannot_be_read_is_named():
    recipe = _variant("hala-nano", **{"judge.model": "acme/unknown-judge"})
    with pytest.raises(PlanError, match=r"^model acme/unknown-judge: its config.json could not be read \(the hub did not answer\)"):
        plan_recipe(recipe)


def test_a_vllm_max_model_len_shrinks_the_kv_cache_and_reaches_vllm():
    from hala.engines import vllm_engine_args
    from hala.recipe import Generation

    long = _row(plan_recipe(load_recipe("hala-nano")), "5. translate corpus")
    short = _row(plan_recipe(_variant("hala-nano", **{"corpus.generation.max_model_len": 4096})), "5. translate corpus")
    # LFM2-1.2B: 6 attention layers x 8 KV heads x 64 x (K and V) x bf16 = 12 KiB a token.
    assert long.parts["kv cache (one sequence)"] == 128000 * 12 * 1024
    assert short.parts["kv cache (one sequence)"] == 4096 * 12 * 1024
    assert vllm_engine_args(Generation(max_model_len=4096, tensor_parallel_size=2)) == {"tensor_parallel_size": 2, "max_model_len": 4096}
    assert vllm_engine_args(Generation()) == {"tensor_parallel_size": 1}


def test_the_smoke_recipe_is_planned_for_this_machine(smoke_recipe):
    plan = plan_recipe(smoke_recipe, local={"device": "CPU", "memory": 24 * GIB, "gpus": 0, "host_memory": 24 * GIB})
    assert plan.rows and all(r.fits and r.device == "CPU" and r.engine in ("transformers", "llm-compressor", "trl single", "trl ddp") for r in plan.rows)
    tight = plan_recipe(smoke_recipe, local={"device": "CPU", "memory": 2**20, "gpus": 0, "host_memory": 2**20})
    assert {r.stage for r in tight.refused} == {r.stage for r in plan.rows}
    assert "give cluster.resources.quantize.memory at least 3Gi" in _row(tight, "1a. quantize teacher").refusal()


def test_hala_plan_prints_the_table_and_fails_on_a_stage_that_does_not_fit(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from hala.cli import app

    result = CliRunner().invoke(app, ["plan", "--recipe", "hala-9b", "--json", str(tmp_path / "plan.json")])
    assert result.exit_code == 0, result.output
    assert "│ 6. train hala-9b          │ QCRI/Fanar-1-9B-Instruct" in result.output
    assert "plan: all 11 stages fit" in result.output
    written = json.loads((tmp_path / "plan.json").read_text())
    assert len(written["rows"]) == 11 and all(r["fits"] for r in written["rows"])
    # The job size: offline, the rows the recipe gives and why the tokens are not measured.
    sizes = {s["stage"]: s for s in written["tokens"]["stages"]}
    assert sizes["2. bootstrap"]["rows"] == 405_000 and sizes["2. bootstrap"]["total_generated"] is None
    assert "tokens to generate: 0 in the 0 of 5 stages measured" in result.output
    one_gpu = tmp_path / "one-gpu.yaml"
    one_gpu.write_text(yaml.safe_dump(_variant("hala-9b", **{"teacher.generation.tensor_parallel_size": 1}).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["plan", "--recipe", str(one_gpu)])
    assert result.exit_code == 1
    assert "does not fit: 1b. FP8 gate (original): CohereLabs/command-a-translate-08-2025 on vllm needs " in result.output
    # 111,057,580,032 parameters in bf16 on one GPU.
    assert "per GPU (1 GPU), the recipe gives 71.7 GiB (largest part: weights 206.9 GiB)" in result.output

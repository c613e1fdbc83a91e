"""Each stage's plain function on tiny models built locally (no network)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hala.recipe import Merge, Training
from hala.stages.merge_slerp import MergeCompatibilityError, merge_slerp, merge_sweep
from hala.stages.quantize_teacher import compress_fp8
from hala.stages.train_sft import train_sft
from tests.slerp_reference import slerp


def _perturbed_copy(src, dst, scale=0.05, seed=0):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


CONVERSATIONS = [
    [{"role": "user", "content": f"Translate from English to Arabic: {en}"}, {"role": "assistant", "content": ar}]
    for en, ar in [("Good morning.", "صباح الخير."), ("Thank you.", "شكرا لك."), ("The sun is hot.", "الشمس حارة.")]
] * 4


def test_sft_changes_every_parameter(tiny, tmp_path):
    base = tiny("student-s")
    metrics = train_sft(base, CONVERSATIONS, Training(epochs=2, learning_rate=1e-2, batch_size=4, max_length=64), tmp_path / "out")
    assert metrics["train_steps"] == 6 and metrics["train_examples"] == 12
    before, after = load_file(f"{base}/model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []


def test_sft_refuses_data_without_assistant_turns(tiny, tmp_path):
    with pytest.raises(ValueError, match="training conversation 1 has no assistant turn"):
        train_sft(tiny("student-s"), [CONVERSATIONS[0], [{"role": "user", "content": "hi"}]], Training(), tmp_path)
    with pytest.raises(ValueError, match="no training conversations"):
        train_sft(tiny("student-s"), [], Training(), tmp_path)


def test_shard_by_shard_fp8_equals_llm_compressors_oneshot(tiny, tmp_path):
    """The reference: oneshot(QuantizationModifier(targets="Linear")) on the whole model in memory, as
    llm-compressor's FP8 example does it. hala's shard-by-shard path must write the same checkpoint:
    every tensor equal, the embeddings and LFM2's short convolutions left as they are."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    base = str(tiny("teacher"))  # LFM2: attention, short-convolution and feed-forward layers, tied embeddings
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"]))
    model.save_pretrained(str(tmp_path / "oneshot"), save_compressed=True)
    figures = compress_fp8(base, tmp_path / "fp8", "FP8_DYNAMIC", ["lm_head"])
    reference, ours = load_file(tmp_path / "oneshot" / "model.safetensors"), load_file(tmp_path / "fp8" / "model.safetensors")
    assert set(ours) == set(reference)
    assert [k for k in ours if ours[k].dtype != reference[k].dtype or not torch.equal(ours[k].float(), reference[k].float())] == []
    fp8 = sorted(k for k, v in ours.items() if v.dtype == torch.float8_e4m3fn)
    assert len(fp8) == 24 and "model.embed_tokens.weight" not in fp8 and "model.layers.0.conv.conv.weight" not in fp8
    configs = [json.loads((tmp_path / d / "config.json").read_text())["quantization_config"] for d in ("oneshot", "fp8")]
    # The same scheme on the same targets; hala names the kept non-Linear modules where oneshot knew their class.
    assert [list(c["config_groups"].values())[0]["weights"]["strategy"] for c in configs] == ["channel", "channel"]
    assert [list(c["config_groups"].values())[0]["targets"] for c in configs] == [["Linear"], ["Linear"]]
    assert configs[1]["ignore"] == ["lm_head", "model.embed_tokens", "model.layers.0.conv.conv", "model.layers.2.conv.conv"]
    assert figures["compression_ratio"] > 2 and figures["fp8_bytes"] == (tmp_path / "fp8" / "model.safetensors").stat().st_size
    # The tokenizer and chat template travel with the weights.
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {p.name for p in (tmp_path / "fp8").iterdir()}


def test_a_teacher_without_safetensors_is_refused_by_name(tiny, tmp_path):
    folder = tmp_path / "bin-teacher"
    shutil.copytree(tiny("teacher"), folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"bin-teacher: no \.safetensors weights"):
        compress_fp8(str(folder), tmp_path / "fp8", "FP8_DYNAMIC", ["lm_head"])


def test_fp8_weights_are_real_compressed_tensors(tiny, tmp_path):
    base = tiny("student-m")
    compress_fp8(base, tmp_path / "fp8", "FP8_DYNAMIC", ["lm_head"])
    config = json.loads((tmp_path / "fp8" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    original = load_file(f"{base}/model.safetensors")
    checked = 0
    with safe_open(str(tmp_path / "fp8" / "model.safetensors"), "pt") as st:
        for key in st.keys():
            if not key.endswith(".weight_scale"):
                continue
            name = key.removesuffix("_scale")
            weight, scale = st.get_tensor(name), st.get_tensor(key)
            assert weight.dtype == torch.float8_e4m3fn
            restored = weight.to(torch.float32) * scale.to(torch.float32)
            reference = original[name]
            rel = (restored - reference).norm() / reference.norm()
            assert rel < 0.05, f"{name}: relative error {rel:.3f}"
            checked += 1
    linear_weights = [k for k in original if k.endswith("proj.weight") or k.endswith("w1.weight")]
    assert checked >= len(linear_weights) > 0


def test_merge_sweep_writes_one_slerp_per_t_tensor_by_tensor(tiny, tmp_path):
    base = tiny("student-s")
    other = _perturbed_copy(base, tmp_path / "other", scale=0.05)
    merges = merge_sweep(base, other, Merge(t=[0.25, 0.5], dtype="float32"), tmp_path / "merged")
    assert [(m["t"], m["folder"]) for m in merges] == [(0.25, "t0.25"), (0.5, "t0.50")]
    a, b = load_file(f"{base}/model.safetensors"), load_file(f"{other}/model.safetensors")
    for m in merges:
        assert m["config"]["merge_method"] == "slerp" and m["config"]["parameters"] == {"t": m["t"]}
        merged = load_file(tmp_path / "merged" / m["folder"] / "model.safetensors")
        assert set(merged) == set(a)
        for name in a:
            expected = slerp(a[name].numpy(), b[name].numpy(), m["t"])
            np.testing.assert_allclose(merged[name].numpy(), expected, rtol=1e-4, atol=1e-5, err_msg=name)
        assert (tmp_path / "merged" / m["folder"] / "tokenizer.json").is_file()


def test_the_best_merge_wins_and_ties_go_to_the_middle():
    from hala.stages.evaluate import choose_merge

    assert choose_merge({0.3: 0.41, 0.5: 0.44, 0.7: 0.43}) == 0.5
    assert choose_merge({0.3: 0.45, 0.5: 0.44}) == 0.3
    assert choose_merge({0.2: 0.44, 0.6: 0.44, 0.9: 0.44}) == 0.6


def test_merge_refuses_mismatched_models(tiny, tmp_path):
    with pytest.raises(MergeCompatibilityError, match="cannot merge: hidden_size differs"):
        merge_slerp(tiny("student-s"), tiny("student-m"), Merge(), tmp_path / "x")
    other = tmp_path / "other"
    shutil.copytree(tiny("student-s"), other)
    tok = json.loads((other / "tokenizer.json").read_text())
    tok["model"]["vocab"]["hala-extra-token"] = len(tok["model"]["vocab"]) + 100
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(MergeCompatibilityError, match="vocabularies differ"):
        merge_slerp(tiny("student-s"), str(other), Merge(), tmp_path / "y")


def test_batched_generation_keeps_order_and_matches_one_at_a_time(tiny):
    from hala.engines import TransformersEngine
    from hala.recipe import Generation

    engine = TransformersEngine(tiny("teacher"))
    texts = ["It is very hot today.", "Good morning.", "We watched the match online.", "I forgot my password again."]
    convs = [[{"role": "user", "content": f"Translate from English to Arabic: {t}"}] for t in texts]
    batched = engine.chat(convs, Generation(max_new_tokens=32, batch_size=4))
    single = [engine.chat([c], Generation(max_new_tokens=32, batch_size=1))[0] for c in convs]
    assert batched == single
    assert batched[0] == "الجو حار جدًا اليوم."  # the tiny teacher learned this bundled pair (row 1, not held out)


def test_tiny_judge_keeps_unseen_pairs_and_rejects_their_untranslated_copies(tiny):
    from hala.corpora import read_jsonl
    from hala.engines import load_engine
    from hala.recipe import DatasetRef, Judge
    from hala.stages.filter_parallel import _judge_shard
    from hala.tiny import HELD_OUT

    # The 30 held-out pairs (hala.tiny.HELD_OUT on): the judge never saw them, nor their copies.
    rows = [r["translation"] for r in read_jsonl(Path(__file__).resolve().parents[1] / "hala/data/smoke/parallel_en_ar.jsonl")][HELD_OUT:]
    n = len(rows)
    shard = [{"source": r["en"], "target": t, "out": {"i": i}} for i, (r, t) in enumerate([(r, r["ar"]) for r in rows] + [(r, r["en"]) for r in rows])]
    engine = load_engine(tiny("judge"), "transformers", Judge.model_fields["generation"].default)
    for decision, evidence in (("generate", "judge_answer"), ("probability", "judge_p_accept")):
        judge = Judge(model="tiny:judge", dataset=DatasetRef(path="bundled:smoke/parallel_en_ar.jsonl"), decision=decision)
        kept, rejected, tokens = _judge_shard(shard, judge, engine)
        assert n == 30 and len(kept) + len(rejected) == 2 * n and (tokens > 0) is (decision == "generate")
        # Measured with builder version 4: 25 of 30 true pairs kept, 30 of 30 copies rejected, both ways.
        assert sum(r["i"] < n for r in kept) >= 24  # true pairs accepted
        assert sum(r["reason"] == "judge: REJECT" and r["i"] >= n for r in rejected) >= 28  # copies rejected
        assert all(evidence in r for r in rejected)


def test_sft_resumes_from_its_last_complete_checkpoint(tiny, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise KeyboardInterrupt("simulated preemption")

    training = Training(epochs=2, learning_rate=1e-2, batch_size=4, max_length=64, save_steps=2, save_total_limit=5)
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny("student-s"), CONVERSATIONS, training, tmp_path / "a", callbacks=[Crash()])
    checkpoints = tmp_path / "a" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    (checkpoints / "checkpoint-4" / "trainer_state.json").unlink()  # as if the crash hit while saving it
    resumed = train_sft(tiny("student-s"), CONVERSATIONS, training, tmp_path / "a")
    assert resumed["resumed_from_step"] == 2 and resumed["train_steps"] == 6
    assert not checkpoints.exists()  # a finished model folder carries no checkpoints
    # Same data order, same seed: the resumed run ends where an uninterrupted one does.
    reference = train_sft(tiny("student-s"), CONVERSATIONS, training, tmp_path / "b")
    assert reference["resumed_from_step"] == 0
    ref, got = load_file(tmp_path / "b" / "model.safetensors"), load_file(tmp_path / "a" / "model.safetensors")
    assert all(torch.allclose(got[k], ref[k], atol=1e-5) for k in ref)


def test_compare_student_reports_the_best_merge_as_merged(monkeypatch, smoke_recipe):
    from hala.stages import evaluate

    averages = {"base": 0.30, "sft": 0.40, "merged_t0.30": 0.42, "merged_t0.50": 0.45}

    def fake_compare(models, recipe):
        results = {role: {"average": averages[role], "tasks": {"exams": {"score": averages[role]}}} for role in models}
        metrics = {f"{role}_average": averages[role] for role in models}
        return {"results": results, "metrics": metrics, "benchmarks": ["EXAMS"]}

    monkeypatch.setattr(evaluate, "compare_models", fake_compare)
    table = evaluate.compare_student("b", "s", {0.3: "m/t0.30", 0.5: "m/t0.50"}, smoke_recipe)
    assert table["merge"] == {"best_t": 0.5, "sweep": {"0.30": 0.42, "0.50": 0.45}}
    assert table["results"]["merged"]["average"] == 0.45 and table["metrics"]["merged_average"] == 0.45
    assert table["metrics"]["merge_best_t"] == 0.5 and "merged_t0.30_average" in table["metrics"]
    single = evaluate.compare_student("b", "s", {0.5: "m/t0.50"}, smoke_recipe)
    assert set(single["results"]) == {"base", "sft", "merged"}  # no sweep, no duplicate role


@pytest.mark.gpu
def test_fp8_copy_runs_on_a_gpu_and_predicts_like_the_original(tiny, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny("student-m")
    compress_fp8(base, tmp_path / "fp8", "FP8_DYNAMIC", ["lm_head"])
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer([en for conv in CONVERSATIONS[:3] for en in [conv[0]["content"]]], return_tensors="pt", padding=True)
    ids = {k: v.cuda() for k, v in ids.items()}
    logits = {}
    for name, path in (("original", base), ("fp8", tmp_path / "fp8")):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cuda").eval()
        with torch.no_grad():
            logits[name] = model(**ids).logits.float()
        if name == "fp8":
            # transformers read the compressed-tensors FP8 checkpoint through its quantizer.
            assert model.config.quantization_config is not None
            print("fp8 parameter dtypes:", sorted({str(p.dtype) for p in model.parameters()}))
    mask = ids["attention_mask"].bool()
    agree = (logits["original"].argmax(-1) == logits["fp8"].argmax(-1))[mask].float().mean().item()
    assert agree >= 0.9, f"FP8 copy agrees on the next token {agree:.0%} of the time"


def test_the_smoke_gate_and_translator_evaluation_read_only_rows_the_tiny_teacher_never_saw(smoke_recipe):
    from hala.corpora import read_pairs
    from hala.tiny import HELD_OUT, teacher_pairs

    for ds in (smoke_recipe.teacher.gate_dataset, smoke_recipe.translator.eval_dataset):
        assert ds.skip >= HELD_OUT
        pairs = read_pairs(ds, "en", "ar")
        assert len(pairs) == 30 and not set(pairs) & set(teacher_pairs())


def test_the_fp8_gate_refuses_a_damaged_copy_with_its_numbers(smoke_recipe, tiny, tmp_path):
    """The gate is a real comparison: an FP8 copy whose scales are off translates worse, and the stage stops."""
    import re

    from safetensors.torch import save_file

    from hala.stages.gate_teacher import QualityGateError, gate_teacher

    compress_fp8(str(tiny("teacher")), tmp_path / "fp8", "FP8_DYNAMIC", ["lm_head"])
    path = tmp_path / "fp8" / "model.safetensors"
    with safe_open(str(path), "pt") as st:
        tensors = {k: st.get_tensor(k) for k in st.keys()}
        metadata = st.metadata()
    # Every FP8 weight read at a third of its size: the copy a wrong scale would make. (At three times its
    # size the tiny teacher's norms absorb most of it: 2.14 chrF lost on the 30 held-out pairs.)
    save_file({k: v * 0.3 if k.endswith(".weight_scale") else v for k, v in tensors.items()}, str(path), metadata=metadata)
    # Ten of the smoke gate's pairs keep the test short; the gate is the stage's own.
    gate = smoke_recipe.teacher.gate_dataset.model_copy(update={"limit": 10})
    recipe = smoke_recipe.model_copy(update={"teacher": smoke_recipe.teacher.model_copy(update={"gate_dataset": gate})})
    with pytest.raises(QualityGateError) as caught:
        gate_teacher(recipe, str(tmp_path / "fp8"))
    found = re.fullmatch(
        r"FP8 teacher lost (\d+\.\d\d) chrF on 10 held-out pairs \((\d+\.\d\d) -> (\d+\.\d\d)\); teacher.max_chrf_drop is " + re.escape(str(smoke_recipe.teacher.max_chrf_drop)),
        str(caught.value),
    )
    assert found, str(caught.value)
    lost, original, fp8 = map(float, found.groups())
    assert lost > smoke_recipe.teacher.max_chrf_drop and abs(original - fp8 - lost) < 0.011

"""OALL v2 as hala evaluates it, checked against lighteval's own task code.

lighteval runs in its own environment (`make test` installs .venv-lighteval); the reference run
is tests/lighteval_reference.py, on the same tiny model and the same fixture rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hala import benchmarks
from hala.benchmarks import TASKS, dataset_args, fixture_subsets, parse_selection, process_docs_for, render_prompt, slug
from hala.recipe import Evaluation, RecipeError, load_recipe, parse_recipe
from hala.stages.evaluate import EvaluationError, check_benchmark_data, compare_models, evaluate_benchmarks, scan_subset

ROOT = Path(__file__).resolve().parents[1]
LIGHTEVAL = os.environ.get("HALA_LIGHTEVAL") or str(ROOT / ".venv-lighteval" / "bin" / "python")
FIXTURE_EVALUATION = Evaluation(source="fixtures", batch_size=4)
# The six tasks and their subset counts in lighteval's examples/tasks/OALL_v2_tasks.txt.
OALL_V2_COUNTS = {"alghafa": 8, "arabic_mmlu": 40, "exams": 1, "madinah_qa": 2, "aratrust": 8, "arbmmlu_ht": 57}


def _lighteval(*args: str, cache: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    if not Path(LIGHTEVAL).exists():
        raise RuntimeError("lighteval is not installed: run the tests with `make test`, which installs it in .venv-lighteval")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if cache is not None:  # datasets caches a local dataset folder by name: a fresh cache reads the files themselves
        env["HF_DATASETS_CACHE"] = str(cache)
    result = subprocess.run([LIGHTEVAL, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_the_definition_is_the_116_subsets_of_oall_v2():
    assert {k: len(t.subsets) for k, t in TASKS.items()} == OALL_V2_COUNTS
    assert sum(OALL_V2_COUNTS.values()) == 116
    # OALL v2 dropped AlGhafa's mcq_exams_test_ar; ArabicMMLU's "All" is the union of the others.
    assert "mcq_exams_test_ar" not in TASKS["alghafa"].subsets
    assert "All" not in TASKS["arabic_mmlu"].subsets
    assert [t.title for t in TASKS.values()] == ["AlGhafa", "ArabicMMLU", "EXAMS", "MadinahQA", "AraTrust", "ArbMMLU-HT"]


def test_hala_benchmarks_json_says_what_is_evaluated():
    from typer.testing import CliRunner

    from hala.cli import app

    result = CliRunner().invoke(app, ["benchmarks", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)["tasks"]
    assert sum(len(t["subsets"]) for t in listed) == 116
    by_task = {t["task"]: t for t in listed}
    assert by_task["aratrust"]["split"] == "train" and by_task["aratrust"]["dataset"] == "asas-ai/AraTrust-categorized"
    assert {t["metric"] for t in listed} == {"acc_norm"} and {t["shots"] for t in listed} == {0}
    assert by_task["exams"]["lighteval_names"] == ["arabic_exams"]
    # The smoke fixtures hold two subsets of every task that has several, so averaging is exercised.
    assert all(len(t["smoke_fixture_subsets"]) == min(2, len(t["subsets"])) for t in listed)
    table = CliRunner().invoke(app, ["benchmarks"])
    assert "116 subsets in 6 tasks" in table.stdout


def test_every_subset_is_a_lighteval_oall_task():
    names = json.loads(
        _lighteval("-c", "import json; from lighteval.tasks.multilingual.tasks.arabic import TASKS_TABLE as T; "
                         "print(json.dumps([(t.name, t.hf_repo, t.evaluation_splits) for t in T]))").stdout  # fmt: skip
    )
    reference = {name: (repo, splits) for name, repo, splits in names}
    for task in TASKS.values():
        for subset, name in zip(task.subsets, task.subset_names(), strict=True):
            assert name in reference, name
            assert reference[name][0] == task.dataset and list(reference[name][1]) == [task.split], name
        # and every lighteval subset of the task but the two OALL v2 leaves out
        theirs = {n for n in reference if n == task.lighteval_name or n.startswith(task.lighteval_name + ":")}
        assert theirs - set(task.subset_names()) <= {"alghafa:mcq_exams_test_ar", "arabic_mmlu:All"}, task.key


def test_unknown_task_or_subset_fails_at_recipe_load():
    with pytest.raises(ValueError, match=r"unknown subset 'Poetry' of arabic_mmlu; its subsets are: Islamic Studies, "):
        parse_selection(["arabic_mmlu:Poetry"])
    assert parse_selection(["alghafa:meta_ar_msa", "exams"]) == {"alghafa": ("meta_ar_msa",), "exams": ("default",)}
    data = yaml.safe_load((ROOT / "hala" / "recipes" / "smoke.yaml").read_text())
    data["evaluation"]["benchmarks"] = ["alghafa", "arc_easy"]
    with pytest.raises(RecipeError, match=r"unknown benchmark task 'arc_easy'; the tasks are: alghafa, arabic_mmlu, exams"):
        parse_recipe(data, "smoke")
    del data["evaluation"]["benchmarks"]
    data["promotion"] = {"floors": {"mmlu": 50}}
    with pytest.raises(RecipeError, match=r"floors for unknown task\(s\) mmlu; the tasks are: alghafa"):
        parse_recipe(data, "smoke")


def test_prompts_follow_lightevals_prompt_manager():
    doc = TASKS["arabic_mmlu"].to_doc(
        {"Question": "س", "Option 1": "a", "Option 2": None, "Option 3": "c", "Option 4": "", "Option 5": None, "Answer Key": "C"}
    )
    assert (doc.choices, doc.gold) == (("أ", "ج"), 1)
    instruction = "السؤال التالي هو سؤال متعدد الإختيارات. اختر الإجابة الصحيحة:\n\n"
    # Chat: instruction and query are one user message; plain: joined by a blank line (four newlines in all).
    assert render_prompt(doc, chat=True) == instruction + "س\nأ. a\nج. c\nالإجابة:"
    assert render_prompt(doc, chat=False) == instruction + "\n\nس\nأ. a\nج. c\nالإجابة:"
    madinah = TASKS["madinah_qa"].to_doc({"Question": "س", "Context": None, "Option 1": "a", "Option 2": "b", "Answer Key": "A"})
    assert "\nالسياق:\nNone\n" in madinah.query  # lighteval prints a missing context as None
    assert render_prompt(madinah, chat=True).startswith(madinah.instruction + "السياق:")


def _hub_folder(root: Path, config: str, split: str, rows: list[dict]) -> Path:
    folder = root / slug(config)
    folder.mkdir(parents=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    card = f'---\nconfigs:\n- config_name: "{config}"\n  data_files:\n  - split: {split}\n    path: {slug(config)}/{split}.jsonl\n---\n'
    (root / "README.md").write_text(card, encoding="utf-8")
    return root


def test_a_gold_answer_outside_the_choices_is_a_counted_error(tmp_path, monkeypatch):
    good = {"Question": "س", "A": "أ) x", "B": "ب) y", "C": "ج) z", "Answer": "ب"}
    rows = [good, {**good, "Answer": "د"}, {**good, "Answer": "ج"}]
    monkeypatch.setattr(benchmarks, "FIXTURES", tmp_path)
    _hub_folder(tmp_path / "aratrust", "Ethics", "train", rows)
    counts = scan_subset(TASKS["aratrust"], "Ethics", "fixtures")
    assert counts == {"rows": 3, "bad_rows": 1, "first_bad_row": "Answer 'د' is not one of أ, ب, ج"}
    from datasets import load_dataset

    kept = process_docs_for("aratrust", chat=True)(load_dataset(**dataset_args(TASKS["aratrust"], "Ethics", "fixtures"), split="train"))
    assert [r["hala_gold"] for r in kept] == [1, 2]
    # (a new folder: datasets would serve the first one's cache for a file rewritten within the same second)
    monkeypatch.setattr(benchmarks, "FIXTURES", tmp_path / "all-bad")
    _hub_folder(tmp_path / "all-bad" / "aratrust", "Ethics", "train", [{**good, "Answer": "x"}])
    with pytest.raises(EvaluationError, match="benchmark task aratrust has no row that can be scored"):
        check_benchmark_data(Evaluation(benchmarks=["aratrust:Ethics"], source="fixtures"))


def test_a_missing_benchmark_fails_the_stage_naming_it(tmp_path, monkeypatch):
    shutil.copytree(benchmarks.FIXTURES, tmp_path / "benchmarks")
    shutil.rmtree(tmp_path / "benchmarks" / "exams")
    shutil.rmtree(tmp_path / "benchmarks" / "madinah_qa" / "arabic_language_grammar")
    monkeypatch.setattr(benchmarks, "FIXTURES", tmp_path / "benchmarks")
    recipe = load_recipe("smoke")
    # No model is loaded (the paths do not exist): the data is checked first.
    with pytest.raises(EvaluationError, match=r"benchmark tasks without data: exams \(no fixture folder under .*exams\)"):
        compare_models({"base": "/nonexistent/base", "sft": "/nonexistent/sft"}, recipe)
    asked = Evaluation(benchmarks=["madinah_qa:Arabic Language (Grammar)", "alghafa"], source="fixtures")
    with pytest.raises(EvaluationError, match=r"madinah_qa \(no fixture folder"):
        check_benchmark_data(asked)
    (tmp_path / "benchmarks" / "alghafa" / "meta_ar_msa" / "test.jsonl").unlink()
    with pytest.raises(EvaluationError, match=r"1 benchmark subset\(s\) cannot be read: alghafa:meta_ar_msa \("):
        check_benchmark_data(Evaluation(benchmarks=["alghafa"], source="fixtures"))


def _without_chat_template(model: str, out: Path) -> str:
    shutil.copytree(model, out)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return str(out)


@pytest.fixture(scope="module")
def cross_check(tiny, tmp_path_factory):
    """lighteval and hala on the same tiny model, with its chat template and without one, over every fixture subset."""
    root = tmp_path_factory.mktemp("oall")
    models = {"chat": tiny("student-s"), "plain": _without_chat_template(tiny("student-s"), root / "plain")}
    specs = [
        f"{name}={task.fixture_dir}"
        for task in TASKS.values()
        for subset, name in zip(task.subsets, task.subset_names(), strict=True)
        if subset in fixture_subsets(task)
    ]
    out = {}
    for kind, model in models.items():
        _lighteval(str(ROOT / "tests" / "lighteval_reference.py"), model, str(root / f"{kind}.json"), *specs, cache=root / "cache")
        reference = json.loads((root / f"{kind}.json").read_text(encoding="utf-8"))
        out[kind] = (reference, evaluate_benchmarks(model, FIXTURE_EVALUATION, "transformers", items=True))
    return out


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_hala_scores_every_item_as_lighteval_does(cross_check, kind):
    reference, ours = cross_check[kind]
    assert reference["chat_template"] is (kind == "chat") and ours["chat_template"] is (kind == "chat")
    compared = 0
    for key, task in TASKS.items():
        for subset, name in zip(task.subsets, task.subset_names(), strict=True):
            if subset not in fixture_subsets(task):
                continue
            theirs = {item["prompt"]: item for item in reference["tasks"][name]["items"]}
            mine = ours["tasks"][key]["subsets"][subset]
            assert sorted(theirs) == sorted(item["prompt"] for item in mine["items"]), name
            for item in mine["items"]:
                ref = theirs[item["prompt"]]
                assert (item["choices"], item["gold"]) == (ref["choices"], ref["gold"]), name
                assert item["chosen"] == ref["chosen"], (name, item["logprobs"], ref["logprobs"])
                assert item["logprobs"] == pytest.approx(ref["logprobs"], rel=1e-4, abs=1e-4), name
                compared += 1
            assert mine["acc_norm"] == pytest.approx(100 * reference["tasks"][name]["acc_norm"], abs=1e-9), name
    assert compared == 96  # 16 rows per task, all of them


def test_task_and_six_task_scores_are_means_of_means(cross_check):
    _, ours = cross_check["chat"]
    for task in ours["tasks"].values():
        subsets = [s["acc_norm"] for s in task["subsets"].values()]
        assert task["score"] == pytest.approx(sum(subsets) / len(subsets))
    assert ours["average"] == pytest.approx(sum(t["score"] for t in ours["tasks"].values()) / 6)
    assert 0 <= ours["average"] <= 100


def test_lm_eval_runs_the_written_tasks(tiny, tmp_path, cross_check):
    """`hala benchmarks --lm-eval-tasks` gives tasks a user runs with plain lm_eval; its group score is hala's average."""
    from typer.testing import CliRunner

    from hala.cli import app

    result = CliRunner().invoke(app, ["benchmarks", "--lm-eval-tasks", str(tmp_path / "tasks"), "--fixtures"])
    assert result.exit_code == 0, result.output
    lm_eval = Path(sys.executable).parent / "lm_eval"
    run = subprocess.run(
        [str(lm_eval), "--model", "hf", "--model_args", f"pretrained={tiny('student-s')},dtype=float32", "--device", "cpu",
         "--include_path", str(tmp_path / "tasks"), "--tasks", "oall_v2_chat", "--apply_chat_template",
         "--batch_size", "4", "--output_path", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    _, ours = cross_check["chat"]
    groups = {key: 100 * results[f"oall_v2_chat_{key}"]["acc_norm,none"] for key in TASKS}
    assert groups == pytest.approx({key: task["score"] for key, task in ours["tasks"].items()}, abs=1e-6)
    # lm-eval would average a group of groups over all subsets, so the six-task average is left to hala.
    assert "acc_norm,none" not in results.get("oall_v2_chat", {})
    assert sum(groups.values()) / 6 == pytest.approx(ours["average"], abs=1e-6)


def _bos_tokenizer(model: str, out: Path) -> str:
    """A copy whose tokenizer adds BOS itself and whose chat template writes it too, as LFM2's do."""
    from tokenizers import processors

    from hala.chat_templates import CHATML

    shutil.copytree(model, out)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + CHATML
    tokenizer.save_pretrained(out)
    return str(out)


LIGHTEVAL_CONTEXT = """
import json, sys
from lighteval.models.transformers.transformers_model import TransformersModel, TransformersModelConfig
from lighteval.tasks.requests import Doc
model = TransformersModel(TransformersModelConfig(model_name=sys.argv[1], dtype="float32"))
doc = Doc(query=sys.argv[2], choices=["أ"], gold_index=0, instruction="")
context, _ = model.tok_encode_pair(model.prompt_manager.prepare_prompt(doc), doc.choices, pairwise=model.pairwise_tokenization)
print(json.dumps(context[0]))
"""


def test_the_double_bos_of_lighteval_is_named_and_not_followed(tiny, tmp_path):
    """lighteval 0.13.0 encodes the chat-templated prompt with the tokenizer's special tokens once more, so a
    tokenizer that adds BOS under a template that writes it reads BOS twice. lm-eval, and hala, read it once."""
    from lm_eval.models.huggingface import HFLM

    model = _bos_tokenizer(tiny("student-s"), tmp_path / "bos")
    theirs = json.loads(_lighteval("-c", LIGHTEVAL_CONTEXT, model, "سؤال").stdout.strip().splitlines()[-1])
    lm = HFLM(pretrained=model, device="cpu", dtype="float32")
    ours, _ = lm._encode_pair(lm.apply_chat_template([{"role": "user", "content": "سؤال"}]), "أ")
    bos = lm.tokenizer.bos_token_id
    assert theirs[:2] == [bos, bos] and theirs[1:] == ours
    assert ours[0] == bos and ours[1] != bos


@pytest.mark.parametrize(("stub_exit", "script_exit"), [(0, 0), (9, 1)])
def test_gpu_check_exits_non_zero_when_a_check_fails(tmp_path, stub_exit, script_exit):
    # A stand-in nvidia-smi: the devices check passes or fails with it, on any machine.
    stub = tmp_path / "bin" / "nvidia-smi"
    stub.parent.mkdir()
    stub.write_text(f"#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB, 570.86'\nexit {stub_exit}\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "GPU_CHECKS": "devices", "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == script_exit, done.stdout + done.stderr
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == {"devices": stub_exit}
    assert "NVIDIA H100 80GB HBM3" in (tmp_path / "out" / "gpu_check.log").read_text()
    assert ("every check passed" if script_exit == 0 else "a check FAILED") in done.stdout


@pytest.mark.parametrize("max_error", [0.08, 0.0])
def test_fp8_gemm_measures_the_teachers_layers_and_fails_on_a_wrong_product(tmp_path, max_error):
    from hala.plan import shipped_models

    out = tmp_path / "fp8_gemm.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fp8_gemm.py"), "--device", "cpu", "--scale", "96", "--tokens", "32",
         "--iters", "1", "--max-error", str(max_error), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.read_text())
    config = shipped_models()["CohereLabs/command-a-translate-08-2025"]["config"]
    # Command A: 96 query and 8 KV heads of 128, hidden 12,288, intermediate 36,864, each divided by 96.
    assert config["hidden_size"] // 96 == 128 and config["intermediate_size"] // 96 == 384
    assert {r["layer"]: (r["in"], r["out"]) for r in result["results"]} == {
        "qkv_proj": (128, 144), "o_proj": (128, 128), "gate_up_proj": (128, 768), "down_proj": (384, 128),
    }  # fmt: skip
    # FP8 with per-token and per-channel scales is a few percent off bf16, never zero, never far.
    assert all(0.01 < r["relative_error"] < 0.08 for r in result["results"]), result["results"]
    if max_error:
        assert done.returncode == 0 and result["failed"] == [], done.stderr
    else:
        assert done.returncode == 1 and len(result["failed"]) == 4
        assert "fp8_gemm: FAILED: qkv_proj at 32 tokens: relative error" in done.stderr

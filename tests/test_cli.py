import re
import subprocess
import sys

import yaml

from hala.recipe import load_recipe


def _hala(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hala", *args], capture_output=True, text=True, cwd=cwd, timeout=1200)  # a hang guard, not a speed claim


def test_typo_in_recipe_fails_before_any_stage(tmp_path):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["translator"]["trainig"] = {}
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(yaml.safe_dump(data))
    proc = _hala("run", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "translator.trainig: unknown key" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_dataset_and_model_fail_before_any_stage(tmp_path):
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["corpus"]["datasets"][0]["path"] = str(tmp_path / "absent.jsonl")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    proc = _hala("run", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert f"corpus.datasets[0]: dataset {tmp_path}/absent.jsonl: file {tmp_path}/absent.jsonl does not exist" in proc.stderr
    assert not (tmp_path / "out" / "mlflow.db").exists()

    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["students"]["models"][1]["base"] = str(tmp_path / "no-model")
    recipe.write_text(yaml.safe_dump(data))
    proc = _hala("run", "--recipe", str(recipe), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert f"students.models[1].base: model {tmp_path}/no-model: no config.json" in proc.stderr


def test_compile_writes_pipeline_yaml(tmp_path):
    proc = _hala("compile", "--recipe", "hala-nano", "--out", str(tmp_path / "p.yaml"))
    assert proc.returncode == 0, proc.stderr
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert spec["pipelineInfo"]["name"] == "hala-translate-and-tune-hala-nano"
    assert "kubernetes" in platform["platforms"]  # the cluster recipe's pod settings
    assert "tracking_uri" in proc.stderr  # the note that the recipe names no MLflow server


def test_compile_refuses_a_recipe_whose_stage_does_not_fit_its_gpus(tmp_path):
    data = yaml.safe_load(load_recipe("hala-9b").to_yaml())
    data["students"]["training"].update(strategy="single", nodes=1, processes=1)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    proc = _hala("compile", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "p.yaml"))
    assert proc.returncode == 2 and not (tmp_path / "p.yaml").exists()
    line = " ".join(proc.stderr.split())  # rich wraps the one line at the terminal's width
    assert "capacity plan: 1 stage(s) do not fit: 6. train hala-9b: QCRI/Fanar-1-9B-Instruct on trl single needs " in line
    assert "the recipe gives 79.6 GiB" in line and "set students.training.strategy to fsdp over at least 4 GPUs" in line


def test_compile_leaves_a_model_it_cannot_read_to_preflight_and_says_so(tmp_path):
    data = yaml.safe_load(load_recipe("hala-nano").to_yaml())
    data["judge"]["model"] = "acme/unknown-judge"  # neither shipped nor reachable from here
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    proc = _hala("compile", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "p.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p.yaml").exists()
    line = " ".join(proc.stderr.split())
    assert "capacity plan: acme/unknown-judge is not sized here (model acme/unknown-judge: its config.json could not be read" in line
    assert "the pipeline's preflight sizes it" in line


def test_recipes_lists_builtins():
    proc = _hala("recipes")
    assert proc.returncode == 0
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["hala-9b", "hala-nano", "smoke"]


def test_filter_command_reports_reasons_and_conserves_rows(tmp_path):
    import json

    rows = [
        {"translation": {"en": "The train leaves at nine.", "ar": "يغادر القطار في التاسعة."}},
        {"translation": {"en": "The train leaves at nine.", "ar": "يغادر القطار في التاسعة."}},
        {"translation": {"en": "Where is the library?", "ar": "Where is the library?"}},
        {"translation": {"en": "Call me at {phone} tonight.", "ar": "اتصل بي الليلة."}},
        {"translation": {"en": "I like green tea.", "ar": "أحب الشاي الأخضر."}},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    proc = _hala("filter", "pairs.jsonl", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    kept = (tmp_path / "out" / "pairs.jsonl").read_text(encoding="utf-8").splitlines()
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(kept) == 2 and len(kept) + len(rejects) == len(rows)
    assert [r["reason"] for r in rejects] == ["exact duplicate", "untranslated copy", "lost code or placeholder: {phone}"]
    assert "rejected: untranslated copy" in proc.stdout and "total" in proc.stdout


def test_filter_command_refuses_unreadable_input(tmp_path):
    proc = _hala("filter", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_filter_command_names_bad_options(tmp_path):
    proc = _hala("filter", "missing.jsonl", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"file {tmp_path}/missing.jsonl does not exist" in proc.stderr
    proc = _hala("filter", "missing.jsonl", "--out", str(tmp_path / "out"), "--engine", "vlm", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--engine 'vlm' is not one of auto, transformers, vllm" in proc.stderr


def test_translate_command_translates_every_turn(tmp_path):
    import json
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "hala" / "data" / "smoke"
    proc = _hala(
        "translate", str(smoke / "instructions_more_en.jsonl"), "--model", "tiny:teacher", "--out", str(tmp_path / "out"),
        "--max-new-tokens", "48", "--batch-size", "16", "--engine", "transformers",
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"kept\s*│\s*40 │", proc.stdout) and re.search(r"total\s*│\s*40 │", proc.stdout)
    assert "shards: 1, of which 0 reused from an earlier run" in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    reference = [json.loads(line) for line in (smoke / "instructions_more_ar_reference.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    # The tiny teacher learned these sentences, so most turns come back as the reference translation.
    exact = sum(r["messages"][0]["content"] == ref["human"] for r, ref in zip(rows, reference, strict=True))
    assert exact >= 30


def test_translate_command_refuses_a_prompt_without_slot(tmp_path):
    proc = _hala("translate", "x.jsonl", "--model", "tiny:teacher", "--out", str(tmp_path), "--prompt", "Translate:")
    assert proc.returncode == 2
    assert "--prompt must contain the placeholder {text}" in proc.stderr


def test_preflight_command_lists_checks_and_problems(tmp_path):
    ok = _hala("preflight", "--recipe", "smoke", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert ok.returncode == 0, ok.stderr
    assert "ok students.models[0].base: model tiny:student-s" in ok.stderr and "preflight: all 18 checks passed" in ok.stderr
    assert "ok evaluation.benchmarks[arbmmlu_ht]: fixtures" in ok.stderr
    data = yaml.safe_load(load_recipe("smoke").to_yaml())
    data["judge"]["model"] = str(tmp_path / "no-judge")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    bad = _hala("preflight", "--recipe", str(tmp_path / "r.yaml"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert bad.returncode == 1
    assert f"- judge.model: model {tmp_path}/no-judge: ModelError: model {tmp_path}/no-judge: no config.json" in bad.stderr


def test_submit_to_an_endpoint_that_refuses_fails_in_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _hala("submit", "--recipe", "hala-nano", "--host", f"http://127.0.0.1:{port}", "--tracking-uri", "http://mlflow:5000")
    assert proc.returncode == 2
    assert f"error: could not submit to http://127.0.0.1:{port}:" in proc.stderr
    assert "Traceback" not in proc.stderr

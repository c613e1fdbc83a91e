"""VLLMEngine for real: vLLM 0.32 (its CPU build, in .venv-vllm) generates, scores and counts with
the tiny models through hala's own engine code, and agrees with the transformers backend.

One probe (tests/engine_probe.py) per backend answers the same jobs: the tiny teacher translating
the gate's 30 held-out pairs and some pairs it learned (order, ``truncated``, token counts), its
FP8 copy (made here by the quantize stage's own code), the judge's log-probabilities for ACCEPT and
REJECT, and two models vLLM cannot load. vLLM's probe opens every engine in one process, closing
each before the next, as the FP8 gate does. Both probes run at once: one core each.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hala import engines
from hala.recipe import Generation, load_recipe

ROOT = Path(__file__).resolve().parents[1]
VLLM = os.environ.get("HALA_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
PROBE = ROOT / "tests" / "engine_probe.py"
LEARNED = 8  # training pairs of the tiny teacher, which it reproduces
SHORT = 4  # max_new_tokens that cuts every one of them


def vllm_unavailable() -> str | None:
    """Why vLLM's CPU build cannot run here, or None: its kernels need AVX-512 on x86 (or an ARM/Power CPU)."""
    import platform

    if not Path(VLLM).exists():
        return None  # not a reason to skip: the fixture fails, naming `make test`
    if platform.machine() == "x86_64":
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
        if "avx512f" not in flags.split():
            return "vLLM's CPU build needs AVX-512 (avx512f) on x86_64; this CPU does not have it"
    return None


def _broken_models(tiny, root: Path) -> dict[str, str]:
    """Copies of a tiny model that vLLM refuses: an architecture it does not know, and a config key its LFM2 reads missing."""
    models = {}
    for name, change in {"unknown-architecture": ("architectures", ["NoSuchForCausalLM"]), "missing-key": ("conv_dim", None)}.items():
        path = root / name
        shutil.copytree(tiny("student-s"), path)
        config = json.loads((path / "config.json").read_text())
        key, value = change
        if value is None:
            del config[key]
        else:
            config[key] = value
        (path / "config.json").write_text(json.dumps(config))
        models[name] = str(path)
    return models


def _jobs(recipe, tiny, fp8: str, broken: dict[str, str], backend: str) -> list[dict]:
    from hala.corpora import read_pairs
    from hala.tiny import teacher_pairs
    from hala.translation import translation_conversations

    gate = read_pairs(recipe.teacher.gate_dataset, "en", "ar")
    learned = teacher_pairs()[:LEARNED]
    teacher = recipe.teacher.generation.model_dump()
    prompt = recipe.bootstrap.prompt
    learned_conversations = translation_conversations([en for en, _ in learned], prompt)
    judged = [(en, ar) for en, ar in gate] + [(en, en) for en, _ in gate]  # true pairs, then untranslated copies
    judge = [[{"role": "user", "content": recipe.judge.prompt.format(source=s, target=t)}] for s, t in judged]
    jobs = [
        {
            "name": "teacher", "model": tiny("teacher"), "backend": backend, "generation": teacher,
            "translate": {"texts": [en for en, _ in gate], "prompt": prompt},
            "complete": [
                {"conversations": learned_conversations, "generation": teacher},
                {"conversations": learned_conversations, "generation": teacher | {"max_new_tokens": SHORT}},
            ],
            "count": [en for en, _ in learned] + [ar for _, ar in learned],
        },
        {"name": "fp8 teacher", "model": fp8, "backend": backend, "generation": teacher, "translate": {"texts": [en for en, _ in gate], "prompt": prompt}},
        {"name": "judge", "model": tiny("judge"), "backend": backend, "generation": recipe.judge.generation.model_dump(),
         "choices": {"conversations": judge, "choices": ["ACCEPT", "REJECT"]}},
    ]  # fmt: skip
    # The evaluation stage's lm-eval run (its six tasks on the fixtures), on the backend's lm-eval model.
    jobs.append({"name": "benchmarks", "model": tiny("student-m"), "backend": backend, "benchmarks": {"source": "fixtures", "batch_size": 16}})
    if backend != "transformers":
        jobs += [{"name": name, "model": path, "backend": backend} for name, path in broken.items()]
    return jobs


@pytest.fixture(scope="module")
def probes(tiny, tmp_path_factory):
    if vllm_unavailable():
        pytest.skip(vllm_unavailable())
    if not Path(VLLM).exists():
        raise RuntimeError("the vLLM environment is missing: run the tests with `make test`, which makes .venv-vllm")
    from hala.stages.quantize_teacher import compress_fp8

    recipe = load_recipe("smoke")
    root = tmp_path_factory.mktemp("vllm-engine")
    fp8 = root / "teacher-fp8"
    compress_fp8(tiny("teacher"), fp8, recipe.teacher.scheme, recipe.teacher.ignore)
    broken = _broken_models(tiny, root)
    # vLLM's CPU KV cache is sized in GiB by this variable (its default would claim a large share of
    # the machine's memory); the tiny models need a fraction of one.
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs = {}
    for backend, python in {"vllm": VLLM, "transformers": sys.executable}.items():
        request, result, log = (root / f"{backend}.{suffix}" for suffix in ("request.json", "result.json", "log"))
        request.write_text(json.dumps(_jobs(recipe, tiny, str(fp8), broken, "auto" if backend == "vllm" else backend)))
        with log.open("wb") as out:
            process = subprocess.Popen([python, str(PROBE), str(request), str(result)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
        runs[backend] = (process, result, log, time.monotonic())
    found = {}
    for backend, (process, result, log, started) in runs.items():
        # Hang guard sized for a loaded 2-core machine: vLLM starts three engines of about a minute each.
        code = process.wait(timeout=1800)
        if code != 0:
            raise RuntimeError(f"the {backend} probe failed ({code}): {log.read_text(errors='replace')[-3000:]}")
        found[backend] = json.loads(result.read_text()) | {"wall_s": time.monotonic() - started}
    return {"recipe": recipe, **found}


def _job(probe: dict, name: str) -> dict:
    return next(job for job in probe["jobs"] if job["name"] == name)


def test_auto_runs_vllm_from_the_images_lock(probes):
    lock = (ROOT / "images" / "locks" / "vllm-cpu.txt").read_text()
    assert probes["vllm"]["versions"]["vllm"] == re.search(r"^vllm-cpu==(\S+)", lock, re.MULTILINE).group(1)
    assert {_job(probes["vllm"], n)["engine"] for n in ("teacher", "fp8 teacher", "judge")} == {"vllm"}
    assert {_job(probes["transformers"], n)["engine"] for n in ("teacher", "fp8 teacher", "judge")} == {"transformers"}


def test_complete_keeps_the_order_and_says_what_was_cut(probes):
    from hala.tiny import teacher_pairs

    references = [ar for _, ar in teacher_pairs()[:LEARNED]]
    full, cut = _job(probes["vllm"], "teacher")["complete"]
    # The teacher learned these pairs by heart: each answer is its own row's reference, in order.
    answers = [r["text"] for r in full["results"]]
    assert sum(a == ref for a, ref in zip(answers, references, strict=True)) >= LEARNED - 1, answers
    assert all(not r["truncated"] and r["tokens"] < probes["recipe"].teacher.generation.max_new_tokens for r in full["results"])
    assert [(r["tokens"], r["truncated"]) for r in cut["results"]] == [(SHORT, True)] * LEARNED
    assert all(ref.startswith(r["text"]) for r, ref in zip(cut["results"], references, strict=True))


def test_greedy_outputs_agree_with_transformers(probes):
    vllm, hf = (_job(probes[b], "teacher") for b in ("vllm", "transformers"))
    same = [a == b for a, b in zip(vllm["translate"], hf["translate"], strict=True)]
    # vLLM's CPU build runs the float32 tiny model in bfloat16 (its dtype auto); transformers in
    # float32. Unseen sentences leave room for a near tie to go the other way, now and then.
    assert sum(same) >= 0.8 * len(same), list(zip(vllm["translate"], hf["translate"], strict=True))
    learned = [a["text"] == b["text"] for a, b in zip(vllm["complete"][0]["results"], hf["complete"][0]["results"], strict=True)]
    assert all(learned)


def test_count_tokens_is_the_tokenizers_count(probes):
    assert _job(probes["vllm"], "teacher")["count"] == _job(probes["transformers"], "teacher")["count"]
    assert all(n > 0 for n in _job(probes["vllm"], "teacher")["count"])


def test_the_judges_odds_agree_with_transformers(probes):
    from hala.stages.filter_parallel import p_accept

    threshold = probes["recipe"].judge.threshold
    vllm, hf = ([p_accept(s) for s in _job(probes[b], "judge")["choices"]] for b in ("vllm", "transformers"))
    half = len(vllm) // 2
    assert max(abs(a - b) for a, b in zip(vllm, hf, strict=True)) < 0.05
    decisions = [(a >= threshold) == (b >= threshold) for a, b in zip(vllm, hf, strict=True)]
    assert sum(decisions) >= len(decisions) - 1
    # And the judge still judges on vLLM: it keeps most true pairs and refuses every copy.
    assert sum(p >= threshold for p in vllm[:half]) >= half * 0.7
    assert not any(p >= threshold for p in vllm[half:])


def test_the_fp8_teacher_passes_the_gate_on_vllm(probes):
    from hala.corpora import read_pairs
    from hala.metrics import translation_scores

    recipe = probes["recipe"]
    references = [ar for _, ar in read_pairs(recipe.teacher.gate_dataset, "en", "ar")]
    chrf = {
        (backend, name): translation_scores(_job(probes[backend], name)["translate"], references)["chrf"]
        for backend in ("vllm", "transformers") for name in ("teacher", "fp8 teacher")
    }  # fmt: skip
    assert chrf[("vllm", "teacher")] - chrf[("vllm", "fp8 teacher")] <= recipe.teacher.max_chrf_drop, chrf
    assert abs(chrf[("vllm", "teacher")] - chrf[("transformers", "teacher")]) <= recipe.teacher.max_chrf_drop, chrf
    assert chrf[("vllm", "fp8 teacher")] > 0


# Measured (2026-12-03): 96/96 answers alike, log-likelihoods at most 0.005 apart, all six task scores
# equal. The bounds leave room for a near tie to fall the other way (one item of a 16-item subset
# moves its task by 6.25 points at most), not for a backend that scores differently.
AGREE, LOGPROB_GAP, SCORE_GAP = 0.95, 0.1, 6.25


def test_lm_evals_vllm_backend_scores_the_six_tasks_as_its_hf_backend_does(probes):
    """The evaluation stage on vLLM (lm-eval's VLLM model, its dtype auto) against lm-eval's HF model (float32)."""
    vllm, hf = (_job(probes[b], "benchmarks")["benchmarks"] for b in ("vllm", "transformers"))
    assert (vllm["engine"], hf["engine"]) == ("vllm", "transformers")
    assert set(vllm["tasks"]) == set(hf["tasks"]) == {"alghafa", "arabic_mmlu", "exams", "madinah_qa", "aratrust", "arbmmlu_ht"}
    pairs = [
        (a, b)
        for task in hf["tasks"]
        for subset in hf["tasks"][task]["subsets"]
        for a, b in zip(vllm["tasks"][task]["subsets"][subset]["items"], hf["tasks"][task]["subsets"][subset]["items"], strict=True)
    ]
    # The same prompts (the chat template applied alike) and choices, and log-likelihoods that agree.
    assert all(a["prompt"] == b["prompt"] and a["choices"] == b["choices"] for a, b in pairs)
    gaps = [abs(x - y) for a, b in pairs for x, y in zip(a["logprobs"], b["logprobs"], strict=True)]
    same = sum(a["chosen"] == b["chosen"] for a, b in pairs)
    scores = {task: (vllm["tasks"][task]["score"], hf["tasks"][task]["score"]) for task in hf["tasks"]}
    print(f"lm-eval vLLM vs HF: {same}/{len(pairs)} answers alike, log-likelihood gap max {max(gaps):.3f}, scores {scores}")
    assert same >= AGREE * len(pairs), (same, len(pairs))
    assert max(gaps) < LOGPROB_GAP, max(gaps)
    assert all(abs(v - h) <= SCORE_GAP for v, h in scores.values()), scores


def test_a_model_vllm_cannot_load_is_refused_with_vllms_reason(probes, tmp_path):
    found = {n: _job(probes["vllm"], n)["error"] for n in ("unknown-architecture", "missing-key")}
    assert re.fullmatch(r"EngineError: vLLM cannot load \S+/unknown-architecture: Model architectures \['NoSuchForCausalLM'\] are not supported for now\.",
                        found["unknown-architecture"]), found  # fmt: skip
    assert re.fullmatch(r"EngineError: vLLM cannot load \S+/missing-key: AttributeError: 'Lfm2Config' object has no attribute 'conv_dim'",
                        found["missing-key"]), found  # fmt: skip


def test_pick_backend_takes_vllm_wherever_the_image_has_it(monkeypatch, caplog, tiny):
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: object() if name == "vllm" else None)
    model = str(tiny("teacher"))
    generation = Generation(max_new_tokens=64, batch_size=8)
    for gpu in (True, False):
        monkeypatch.setattr(engines, "gpu_available", lambda gpu=gpu: gpu)
        assert engines.pick_backend("auto", model, generation) == "vllm"
        assert engines.pick_backend("transformers", model, generation) == "transformers"
    # An image without vLLM on a GPU node (the quantize or train image, a workstation):
    monkeypatch.setattr(engines, "gpu_available", lambda: True)
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(engines, "gpu_memory", lambda: 80 * 2**30)
    with caplog.at_level(logging.WARNING, logger="hala.engines"):
        assert engines.pick_backend("auto", model, generation) == "transformers"  # a tiny model fits one GPU: said, then taken
    assert f"{model} on transformers fits one GPU" in caplog.text
    monkeypatch.setattr(engines, "gpu_memory", lambda: 2**20)
    with pytest.raises(engines.EngineError) as refused:
        engines.pick_backend("auto", model, generation)
    assert re.fullmatch(
        rf"engine auto: this node has a GPU but this image has no vLLM, and {re.escape(model)} on transformers needs \d+\.\d GiB on one GPU, "
        r"which has 0\.0 GiB; run the stage in the hala-vllm image \(hala plan sizes it for vLLM\), or set engine: transformers to force one GPU",
        str(refused.value),
    ), str(refused.value)
    # Without the model to size, auto does not guess; transformers asked for by name still runs.
    with pytest.raises(engines.EngineError, match="this stage's model on transformers cannot be sized"):
        engines.pick_backend("auto")
    assert engines.pick_backend("transformers") == "transformers"
    # A CPU without vLLM: transformers, silently.
    monkeypatch.setattr(engines, "gpu_available", lambda: False)
    caplog.clear()
    assert engines.pick_backend("auto") == "transformers" and caplog.text == ""
    with pytest.raises(ValueError, match="unknown generation engine 'tgi'; use auto, transformers or vllm"):
        engines.pick_backend("tgi")
    with pytest.raises(engines.EngineError, match="engine 'vllm' was asked for but the vllm package is not installed in this image"):
        engines.load_engine(model, "vllm", generation)

"""vLLM's CPU build against transformers on this CPU, through hala's engines, one backend at a time.

    .venv/bin/python benchmarks/vllm_cpu.py [--vllm-python .venv-vllm/bin/python]

Figures: the tiny teacher translating the 200 benchmark texts (every turn of the bundled smoke
conversations, as benchmarks/translate_batching.py) greedily, generated tokens/s on each backend;
the same for its FP8 copy (made here by the quantize stage's code) on vLLM; the judge deciding the
180 candidate pairs by the log-probabilities of ACCEPT and REJECT, pairs/s; each engine's start.
These are CPU figures of a 192-wide model: they say how the engines behave here, not what FP8
gains on a GPU (the paper's claim, which needs FP8 tensor cores). Writes benchmarks/results/vllm_cpu.json.

The same file is the worker each backend runs in (``--worker``): vLLM in .venv-vllm, transformers
in this environment; vLLM spawns its engine process, hence the ``__main__`` guard.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vllm_cpu.json"
PROMPT = "Translate from English to Arabic: {text}"


def worker(backend: str, models: dict[str, str], out: Path) -> None:
    from report import translation_texts  # benchmarks/report.py (this script's folder)

    from hala.corpora import read_pairs
    from hala.engines import load_engine
    from hala.recipe import DatasetRef, Generation, Judge
    from hala.stages.filter_parallel import VERDICTS
    from hala.translation import translation_conversations

    texts = translation_texts()
    conversations = translation_conversations(texts, PROMPT)
    pairs = read_pairs(DatasetRef(path="bundled:smoke/parallel_candidates_en_ar.jsonl"), "en", "ar")
    prompt = Judge.model_fields["prompt"].default
    judged = [[{"role": "user", "content": prompt.format(source=en, target=ar)}] for en, ar in pairs]
    generation = Generation(max_new_tokens=48, batch_size=16)
    result: dict = {"backend": backend}
    for name, path in models.items():
        started = time.perf_counter()
        engine = load_engine(path, backend, generation)
        figures = {"engine": engine.name, "start_s": round(time.perf_counter() - started, 1)}
        try:
            if name == "judge":
                engine.choice_logprobs(judged[:8], VERDICTS)  # warm-up, not timed
                started = time.perf_counter()
                scores = engine.choice_logprobs(judged, VERDICTS)
                seconds = time.perf_counter() - started
                figures |= {"pairs": len(judged), "seconds": round(seconds, 2), "pairs_per_s": round(len(judged) / seconds, 1), "scores": scores}
            else:
                engine.complete(conversations[:4], Generation(max_new_tokens=8, batch_size=4))  # warm-up, not timed
                started = time.perf_counter()
                done = engine.complete(conversations, generation, desc=name)
                seconds = time.perf_counter() - started
                tokens = sum(c.tokens for c in done)
                figures |= {"texts": len(done), "generated_tokens": tokens, "seconds": round(seconds, 2),
                            "tokens_per_s": round(tokens / seconds, 1), "texts_out": [c.text for c in done]}  # fmt: skip
        finally:
            engine.close()
        result[name] = figures
    out.write_text(json.dumps(result, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", default=os.environ.get("HALA_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--worker", choices=["vllm", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.models), args.result)
        return

    from report import emit

    from hala.recipe import load_recipe
    from hala.stages.quantize_teacher import compress_fp8
    from hala.tiny import tiny_model_path

    recipe = load_recipe("smoke")
    with tempfile.TemporaryDirectory() as tmp:
        fp8 = Path(tmp) / "teacher-fp8"
        compress_fp8(str(tiny_model_path("teacher")), fp8, recipe.teacher.scheme, recipe.teacher.ignore)
        models = {"teacher": str(tiny_model_path("teacher")), "fp8 teacher": str(fp8), "judge": str(tiny_model_path("judge"))}
        found = {}
        # One backend at a time: each has the machine to itself.
        for backend, python in (("vllm", args.vllm_python), ("transformers", sys.executable)):
            out = Path(tmp) / f"{backend}.json"
            env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
            command = [python, __file__, "--worker", backend, "--models", json.dumps(models), "--result", str(out)]
            proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"vllm_cpu: the {backend} worker failed: {(proc.stdout + proc.stderr)[-2000:]}")
            found[backend] = json.loads(out.read_text())
    v, t = found["vllm"], found["transformers"]
    same = sum(a == b for a, b in zip(v["teacher"]["texts_out"], t["teacher"]["texts_out"], strict=True))
    same_fp8 = sum(a == b for a, b in zip(v["teacher"]["texts_out"], v["fp8 teacher"]["texts_out"], strict=True))
    version = subprocess.run([args.vllm_python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True, check=False)
    result = {
        "benchmark": "vllm_cpu",
        "vllm": version.stdout.strip().splitlines()[-1],
        "texts": v["teacher"]["texts"],
        "teacher_tokens_per_s": {"vllm": v["teacher"]["tokens_per_s"], "transformers": t["teacher"]["tokens_per_s"]},
        "teacher_vllm_over_transformers": round(v["teacher"]["tokens_per_s"] / t["teacher"]["tokens_per_s"], 2),
        "teacher_identical_outputs": f"{same}/{len(v['teacher']['texts_out'])}",
        "fp8_teacher_tokens_per_s_vllm": v["fp8 teacher"]["tokens_per_s"],
        "fp8_over_original_vllm": round(v["fp8 teacher"]["tokens_per_s"] / v["teacher"]["tokens_per_s"], 2),
        "fp8_identical_to_original_vllm": f"{same_fp8}/{len(v['teacher']['texts_out'])}",
        "judge_pairs_per_s": {"vllm": v["judge"]["pairs_per_s"], "transformers": t["judge"]["pairs_per_s"]},
        "judge_vllm_over_transformers": round(v["judge"]["pairs_per_s"] / t["judge"]["pairs_per_s"], 2),
        "engine_start_s": {backend: {name: found[backend][name]["start_s"] for name in models} for backend in found},
        "note": "CPU figures on a tiny model; FP8 speed on vLLM's CPU build says nothing of FP8 on a GPU",
    }
    emit(result, RESULTS)


if __name__ == "__main__":
    main()

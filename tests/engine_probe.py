"""Drive hala's generation engines through a list of jobs and write what they returned, as JSON.

    python tests/engine_probe.py REQUEST.json RESULT.json

The same script runs in the test environment (transformers) and in .venv-vllm (vLLM, the CPU
build), so that both backends answer the same requests through hala's own code: ``load_engine``,
``complete``, ``choice_logprobs``, ``count_tokens``, ``translate_texts`` (the gate's and the
bootstrap's path), ``close``, and the evaluation stage's ``evaluate_benchmarks`` (lm-eval).
Every job opens its own engine in this one process and closes it before the next, as the FP8
gate does with its two teachers. A job whose engine cannot be made records the error instead, so
the test can read the message a user would get.

vLLM starts its engine in a spawned process: everything runs under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import json
import sys
import time


def run_job(job: dict) -> dict:
    from hala.engines import load_engine
    from hala.recipe import Generation
    from hala.translation import translate_texts

    generation = Generation(**job.get("generation", {}))
    out: dict = {"name": job["name"]}
    started = time.perf_counter()
    if "benchmarks" in job:  # the evaluation stage's lm-eval run, on the backend's lm-eval model
        from hala.recipe import Evaluation
        from hala.stages.evaluate import evaluate_benchmarks

        result = evaluate_benchmarks(job["model"], Evaluation(**job["benchmarks"]), job.get("backend", "auto"), items=True)
        return out | {"engine": result["engine"], "benchmarks": result, "seconds": time.perf_counter() - started}
    try:
        engine = load_engine(job["model"], job.get("backend", "auto"), generation, job.get("chat_template"))
    except Exception as err:  # noqa: BLE001 -- the message is the result, as a user reads it

        return out | {"error": f"{type(err).__name__}: {err}"}
    out["engine"] = engine.name
    out["load_s"] = time.perf_counter() - started
    try:
        if "translate" in job:
            t = time.perf_counter()
            out["translate"] = translate_texts(engine, job["translate"]["texts"], job["translate"]["prompt"], generation, desc=job["name"])
            out["translate_s"] = time.perf_counter() - t
        for i, extra in enumerate(job.get("complete", [])):
            t = time.perf_counter()
            done = engine.complete(extra["conversations"], Generation(**extra["generation"]), desc=f"{job['name']} {i}")
            out.setdefault("complete", []).append(
                {"results": [{"text": c.text, "tokens": c.tokens, "truncated": c.truncated} for c in done], "seconds": time.perf_counter() - t}
            )
        if "choices" in job:
            t = time.perf_counter()
            out["choices"] = engine.choice_logprobs(job["choices"]["conversations"], job["choices"]["choices"])
            out["choices_s"] = time.perf_counter() - t
        if "count" in job:
            out["count"] = [engine.count_tokens(text) for text in job["count"]]
    finally:
        engine.close()
    return out


def main() -> None:
    request, result = sys.argv[1], sys.argv[2]
    with open(request, encoding="utf-8") as fh:
        jobs = json.load(fh)
    outputs = []
    for job in jobs:
        outputs.append(run_job(job))
        print(f"engine_probe: {job['name']} done", flush=True)
    versions = {}
    try:
        import vllm

        versions["vllm"] = vllm.__version__
    except ImportError:
        pass
    with open(result, "w", encoding="utf-8") as fh:
        json.dump({"jobs": outputs, "versions": versions}, fh, ensure_ascii=False)


if __name__ == "__main__":
    main()

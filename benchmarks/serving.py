"""The serving chart's vLLM container under load on this machine: start-up, then chats at rising concurrency.

    .venv/bin/python benchmarks/serving.py [--image localhost/hala-vllm:VERSION] [--rounds 3]

The tiny teacher is registered as the pipeline registers a version, and served by `hala serve
--runner podman` in the vllm image (vLLM's CPU build, the chart's own command, arguments and
settings) on a loopback port. Figures: seconds from `podman run` to the chart's readiness path
answering; then, at 1, 8 and 32 requests in flight, ``--rounds`` rounds of chat requests (each a
translation of one of the 200 benchmark texts, up to 48 tokens, greedy) through the openai client:
latency p50/p95/max and generated tokens/s. A CPU figure of a 192-wide model: it says how the
server queues and batches, not what a GPU serves. Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "serving.json"
PROMPT = "Translate the following text into Arabic. Reply with the translation only.\n\n{text}"
CONCURRENCY = (1, 8, 32)
START_S = 900  # a hang guard for a loaded 2-core machine, not a target


def _register(uri: str, name: str, folder: str) -> None:
    from hala.registry import log_checkpoint, register_version, requirements
    from hala.tracking import registry_client, use_store

    client = registry_client(uri)
    run_id = client.create_run(use_store(uri, "hala-benchmark")).info.run_id
    model_id, _ = log_checkpoint(folder, name, run_id, card=f"# {name}\n", source_name=folder, license_text="benchmark\n",
                                 params={}, metrics={}, pip=requirements())  # fmt: skip
    client.set_terminated(run_id)
    register_version(name, model_id, run_id, {}, "champion")


def _load(client, served: str, texts: list[str], concurrency: int, rounds: int) -> dict:
    def one(text: str) -> tuple[float, int]:
        started = time.monotonic()
        reply = client.chat.completions.create(
            model=served, messages=[{"role": "user", "content": PROMPT.format(text=text)}], max_tokens=48, temperature=0
        )
        return time.monotonic() - started, reply.usage.completion_tokens

    requests = [texts[i % len(texts)] for i in range(concurrency * rounds)]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        done = list(pool.map(one, requests))
    wall = time.monotonic() - started
    latencies = sorted(seconds for seconds, _ in done)
    tokens = sum(n for _, n in done)
    return {
        "concurrency": concurrency, "requests": len(done), "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3), "max_s": round(latencies[-1], 3),
        "generated_tokens": tokens, "tokens_per_s": round(tokens / wall, 1), "wall_s": round(wall, 2),
    }  # fmt: skip


def main() -> None:
    from openai import OpenAI
    from report import emit, translation_texts  # benchmarks/report.py (this script's folder)

    from hala import __version__
    from hala.containers import free_port
    from hala.models import resolve_model
    from hala.serve import KEY, plan_serve, wait_until_ready
    from hala.tracking import local_tracking_uri

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", default=f"localhost/hala-vllm:{__version__}", help="the vllm image (make images builds it)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of requests at each concurrency")
    args = parser.parse_args()
    texts = translation_texts()
    teacher = resolve_model("tiny:teacher")  # built once into this machine's cache
    with tempfile.TemporaryDirectory(prefix="hala-serving-bench-") as tmp:
        os.environ["HALA_CACHE"] = str(Path(tmp) / "cache")  # the fetched checkpoint: this run's own
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the CPU build's KV cache in GiB (passed on by name)
        uri = local_tracking_uri(Path(tmp) / "registry")
        _register(uri, "hala-bench", teacher)
        plan = plan_serve(
            uri, "hala-bench", "champion", runner="podman", image=args.image, port=free_port(), max_model_len=512
        )
        key = secrets.token_hex(16)
        name = plan.argv[plan.argv.index("--name") + 1]
        log = Path(tmp) / "server.log"
        print(f"serving: starting {args.image} (log: {log})", flush=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                plan.argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **plan.env, KEY: key}
            )
        try:
            start_s = wait_until_ready(plan, process, START_S)
            print(f"serving: ready after {start_s:.1f} s", flush=True)
            client = OpenAI(base_url=plan.url, api_key=key, timeout=120, max_retries=0)
            _load(client, plan.served_name, texts[:4], 4, 1)  # warm-up, not timed
            levels = []
            for concurrency in CONCURRENCY:
                levels.append(_load(client, plan.served_name, texts, concurrency, args.rounds))
                print(
                    f"serving: {concurrency} in flight: p50 {levels[-1]['p50_s']} s, p95 {levels[-1]['p95_s']} s",
                    flush=True,
                )
        except Exception:
            print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            subprocess.run(["podman", "rm", "--force", "--time", "5", name], capture_output=True, check=False)
            process.wait(timeout=120)
    vllm = subprocess.run(
        ["podman", "run", "--rm", "--network", "none", args.image, "vllm", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    emit({"image": args.image, "vllm": vllm.stdout.strip().splitlines()[-1] if vllm.returncode == 0 else None, "model": "tiny:teacher",
          "max_model_len": 512, "max_tokens": 48, "start_s": round(start_s, 1), "load": levels}, RESULTS)  # fmt: skip


if __name__ == "__main__":
    main()

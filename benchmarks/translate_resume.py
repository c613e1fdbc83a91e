"""Kill a translation at about half its shards, rerun it, and measure what the crash cost.

Runs ``hala translate`` on the same input with the smoke world's tiny teacher: once
uninterrupted (the reference), once killed with SIGKILL when half the shards are done, once
more to finish, and once with nothing left to do (the cost of a process start). Reports the
shards redone beyond the missing ones, the extra wall time of kill + resume over the
reference, the work lost in flight (that, less one more process and engine start), and
checks the output:
every input row exactly once, and the same rows as the uninterrupted run. Prints the
figures and writes them as JSON.

    .venv/bin/python benchmarks/translate_resume.py --rows 200 --shard-size 10
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from report import emit  # benchmarks/report.py (scripts run from benchmarks/)
from hala.corpora import bundled_path, read_jsonl
from hala.tiny import tiny_model_path


def write_input(path: Path, rows: int) -> None:
    base = read_jsonl(bundled_path("smoke/instructions_more_en.jsonl"))
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            conv = base[i % len(base)]["conversations"]
            if i >= len(base):  # distinct rows beyond the first round, so no two shards are alike
                conv = [{**conv[0], "value": f"{conv[0]['value']} ({i})"}, conv[1]]
            fh.write(json.dumps({"conversations": conv}, ensure_ascii=False) + "\n")


def command(source: Path, out: Path, shard_size: int) -> list[str]:
    return [
        sys.executable, "-m", "hala", "translate", str(source), "--model", "tiny:teacher", "--out", str(out),
        "--shard-size", str(shard_size), "--max-new-tokens", "48", "--batch-size", "16", "--engine", "transformers",
    ]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/translate_resume.json"))
    args = parser.parse_args()
    tiny_model_path("teacher")  # built before timing starts
    shards = -(-args.rows // args.shard_size)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = tmp / "input.jsonl"
        write_input(source, args.rows)
        reference_s = timed(command(source, tmp / "reference", args.shard_size))
        shard_s = [m["seconds"] for m in rows_of(tmp / "reference" / "manifest.jsonl")]
        # The model loads inside the first shard's time (lazily, when a shard first needs it).
        engine_start_s = shard_s[0] - statistics.median(shard_s[1:])
        generation_s = sum(shard_s) - engine_start_s

        out = tmp / "resumed"
        start = time.perf_counter()
        proc = subprocess.Popen(command(source, out, args.shard_size), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while len(list((out / "shards").glob("*.done.json"))) < shards // 2 and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_s = time.perf_counter() - start
        done_at_kill = len(list((out / "shards").glob("*.done.json")))
        resume_s = timed(command(source, out, args.shard_size))
        manifest = rows_of(out / "manifest.jsonl")  # the resume's own record, before the third run replaces it
        # A third run finds every shard done: its time is the cost of starting a process at all.
        restart_s = timed(command(source, out, args.shard_size))

        redone = sum(not m["reused"] for m in manifest)
        kept, rejects = rows_of(out / "corpus.jsonl"), rows_of(out / "rejects.jsonl")
        seen = Counter(r["row"] for r in kept + rejects)
        reference = {r["row"]: r["messages"] for r in rows_of(tmp / "reference" / "corpus.jsonl")}
        resumed = {r["row"]: r["messages"] for r in kept}

    missing = shards - done_at_kill
    result = {
        "benchmark": "translate_resume",
        "rows": args.rows,
        "shards": shards,
        "shards_done_at_kill": done_at_kill,
        "shards_missing_at_kill": missing,
        "shards_redone_on_resume": redone,
        "shards_redone_beyond_missing": redone - missing,
        "redo_fraction_beyond_missing": round((redone - missing) / shards, 4),
        "reference_seconds": round(reference_s, 1),
        "killed_run_seconds": round(killed_s, 1),
        "resume_seconds": round(resume_s, 1),
        "extra_time_fraction": round((killed_s + resume_s - reference_s) / reference_s, 3),
        "reference_generation_seconds": round(generation_s, 1),
        "engine_start_seconds": round(engine_start_s, 1),
        "no_op_rerun_seconds": round(restart_s, 1),
        # kill + resume = reference + one more process start (a no-op rerun) + one more engine
        # start + the work lost in flight: the last term, as a fraction of the generation time.
        "work_lost_in_flight_fraction": round(
            (killed_s + resume_s - reference_s - restart_s - engine_start_s) / generation_s, 3
        ),
        "duplicate_rows": sum(n - 1 for n in seen.values() if n > 1),
        "lost_rows": args.rows - len(seen),
        "same_output_as_uninterrupted_run": resumed == reference,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

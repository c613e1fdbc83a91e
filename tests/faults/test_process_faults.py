"""Stages killed mid-way (SIGTERM, as Kubernetes stops a pod, and SIGKILL, as the OOM killer does),
then run again: the generating stages' output equals an uninterrupted run's with no row lost or
twice, finished shards reused; training resumes from its last complete checkpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hala.corpora import bundled_path, read_jsonl

ROWS, SHARD = 40, 4  # ten shards


def _rows(path: Path) -> list[dict]:
    return read_jsonl(path) if path.is_file() else []


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny):
    tiny("teacher")  # built before any timing below
    base = read_jsonl(bundled_path("smoke/instructions_more_en.jsonl"))
    path = tmp_path_factory.mktemp("kill") / "input.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(ROWS):
            conv = base[i % len(base)]["conversations"]
            if i >= len(base):  # distinct rows beyond the first round: no two shards alike
                conv = [{**conv[0], "value": f"{conv[0]['value']} ({i})"}, conv[1]]
            fh.write(json.dumps({"conversations": conv}, ensure_ascii=False) + "\n")
    return path


def _translate(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "hala", "translate", str(source), "--model", "tiny:teacher", "--out", str(out),
            "--shard-size", str(SHARD), "--max-new-tokens", "24", "--batch-size", "16", "--engine", "transformers"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    subprocess.run(_translate(source, out), check=True, capture_output=True, timeout=1800)  # a hang guard
    return out


def _kill_at(command: list[str], out: Path, shards: int, sig: int) -> tuple[int, int]:
    """Start ``command``, send ``sig`` once ``shards`` shards are done; returns (shards done, exit code)."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800  # a hang guard
    while len(list((out / "shards").glob("*.done.json"))) < shards and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(sig)
    code = proc.wait(timeout=600)
    return len(list((out / "shards").glob("*.done.json"))), code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_translation_reruns_to_the_uninterrupted_output(source, reference, tmp_path, sig, fault_record):
    out = tmp_path / "run"
    done, code = _kill_at(_translate(source, out), out, 4, sig)
    assert code != 0 and 4 <= done < ROWS // SHARD
    assert not list((out).glob("corpus.jsonl"))  # no output yet: the stage's files appear when it completes
    subprocess.run(_translate(source, out), check=True, capture_output=True, timeout=1800)
    manifest = _rows(out / "manifest.jsonl")
    assert sum(m["reused"] for m in manifest) == done and len(manifest) == ROWS // SHARD
    kept, rejects = _rows(out / "corpus.jsonl"), _rows(out / "rejects.jsonl")
    seen = Counter(r["row"] for r in kept + rejects)
    assert len(seen) == ROWS and max(seen.values()) == 1  # every row once: none lost, none twice
    assert kept == _rows(reference / "corpus.jsonl") and rejects == _rows(reference / "rejects.jsonl")
    fault_record(f"process: {signal.Signals(sig).name} to a translation (hala translate, the corpus and bootstrap code) at {done} of 10 shards",
                 f"rerun reused {done} shards and redid {10 - done}; output identical to an uninterrupted run",
                 lost=ROWS - len(seen), duplicated=sum(n - 1 for n in seen.values()))  # fmt: skip


TRAIN = """
import sys, time
from transformers import TrainerCallback
from hala.recipe import Training
from hala.stages.train_sft import train_sft
from tests.test_stages import CONVERSATIONS

class Slow(TrainerCallback):  # a step takes long enough to be killed between two checkpoints
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.5)

training = Training(epochs=2, learning_rate=1e-2, batch_size=4, max_length=64, save_steps=2, save_total_limit=5)
train_sft(sys.argv[1], CONVERSATIONS, training, sys.argv[2], callbacks=[Slow()])
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_training_resumes_from_its_last_complete_checkpoint(tiny, tmp_path, sig, fault_record):
    import torch
    from safetensors.torch import load_file

    from hala.recipe import Training
    from hala.stages.train_sft import train_sft
    from tests.test_stages import CONVERSATIONS

    base, out = tiny("student-s"), tmp_path / "a"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, base, str(out)], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 1800  # a hang guard
    while not (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file() and time.monotonic() < deadline:
        assert proc.poll() is None, "training ended before its second checkpoint"
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=600) != 0
    assert not (out / "model.safetensors").exists()
    training = Training(epochs=2, learning_rate=1e-2, batch_size=4, max_length=64, save_steps=2, save_total_limit=5)
    resumed = train_sft(base, CONVERSATIONS, training, out)
    assert resumed["resumed_from_step"] >= 4 and resumed["train_steps"] == 6
    assert train_sft(base, CONVERSATIONS, training, tmp_path / "b")["resumed_from_step"] == 0  # the uninterrupted reference
    ref, got = load_file(tmp_path / "b" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(got[k], ref[k], atol=1e-5) for k in ref)
    fault_record(f"process: {signal.Signals(sig).name} to a training after its second checkpoint",
                 f"resumed from step {resumed['resumed_from_step']:.0f} of 6; final weights equal the uninterrupted run's")  # fmt: skip

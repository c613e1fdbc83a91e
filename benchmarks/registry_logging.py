"""What registering a model costs: time and extra disk to log a checkpoint as an MLflow Model.

    .venv/bin/python benchmarks/registry_logging.py                         # LFM2-1.2B's real shape, random bf16 weights
    .venv/bin/python benchmarks/registry_logging.py --model tiny:student-m  # seconds, for a check

Three ways over the same checkpoint folder, each into a fresh local MLflow store on the same
filesystem: copying the folder once (the yardstick), MLflow's documented memory-efficient path
(``mlflow.transformers.log_model`` with the checkpoint's path), and hala's
(:func:`hala.registry.log_checkpoint`: weights linked, never copied, on a local store). Extra disk
counts the bytes of files that do not share their inode with the checkpoint's. Writes
benchmarks/results/registry_logging.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "registry_logging.json"


def build_checkpoint(model: str, folder: Path) -> Path:
    """A checkpoint folder: a tiny model as built here, or a shipped model's shape with random bf16 weights."""
    if model.startswith("tiny:"):
        from hala.tiny import tiny_model_path

        shutil.copytree(tiny_model_path(model.removeprefix("tiny:")), folder)
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from hala.plan import shipped_models
    from hala.tiny import build_tokenizer

    config = AutoConfig.for_model(**shipped_models()[model]["config"])
    started = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 from the start: half the memory, no cast
    built = AutoModelForCausalLM.from_config(config)
    torch.set_default_dtype(torch.float32)
    built.save_pretrained(folder)
    build_tokenizer(folder)  # the tiny world's tokenizer and chat template: logging reads them, not their size
    print(f"built {model} ({sum(p.numel() for p in built.parameters()) / 1e9:.2f}B parameters) in {time.perf_counter() - started:.0f} s")
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def extra_bytes(store: Path, checkpoint: Path) -> int:
    """Bytes under ``store`` in files that are not hard links to the checkpoint's files."""
    shared = {os.stat(p).st_ino for p in checkpoint.rglob("*") if p.is_file()}
    return sum(p.stat().st_size for p in store.rglob("*") if p.is_file() and os.stat(p).st_ino not in shared)


def _store(root: Path, name: str):
    import mlflow

    uri = f"sqlite:///{root / name / 'mlflow.db'}"
    (root / name).mkdir()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment(name, artifact_location=(root / name / "mlartifacts").as_uri())
    return mlflow.MlflowClient().create_run(experiment).info.run_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="LiquidAI/LFM2-1.2B", help="a shipped model's shape, or tiny:NAME")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one under the repository)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import mlflow

    from hala.registry import log_checkpoint, requirements

    with tempfile.TemporaryDirectory(dir=args.dir or ROOT, prefix=".registry-bench-") as tmp:
        root = Path(tmp)
        checkpoint = build_checkpoint(args.model, root / "checkpoint")
        size = folder_bytes(checkpoint)
        mlflow.transformers  # noqa: B018 - import the flavor before timing anything
        results = {"model": args.model, "checkpoint_bytes": size}

        started = time.perf_counter()
        shutil.copytree(checkpoint, root / "copy")
        results["copy_once_s"] = round(time.perf_counter() - started, 2)
        shutil.rmtree(root / "copy")

        run_id = _store(root, "mlflow-flavor")
        started = time.perf_counter()
        with mlflow.start_run(run_id=run_id):
            mlflow.transformers.log_model(transformers_model=str(checkpoint), name="m", task="llm/v1/chat", pip_requirements=requirements())
        results["mlflow_log_model_s"] = round(time.perf_counter() - started, 2)
        results["mlflow_log_model_extra_bytes"] = extra_bytes(root / "mlflow-flavor", checkpoint)

        run_id = _store(root, "hala")
        started = time.perf_counter()
        log_checkpoint(checkpoint, "m", run_id, card="# m\n", source_name=args.model, license_text="", params={}, metrics={}, pip=requirements())
        results["hala_log_s"] = round(time.perf_counter() - started, 2)
        results["hala_extra_bytes"] = extra_bytes(root / "hala", checkpoint)

    copy = max(results["copy_once_s"], 1e-3)
    results["mlflow_log_model_time_vs_copy"] = round(results["mlflow_log_model_s"] / copy, 2)
    results["hala_time_vs_copy"] = round(results["hala_log_s"] / copy, 2)
    results["mlflow_log_model_extra_vs_size"] = round(results["mlflow_log_model_extra_bytes"] / size, 3)
    results["hala_extra_vs_size"] = round(results["hala_extra_bytes"] / size, 4)
    print(f"{args.model}: {size / 2**20:,.1f} MiB of checkpoint; copying it once {results['copy_once_s']} s")
    print(f"  mlflow.transformers.log_model(path): {results['mlflow_log_model_s']} s ({results['mlflow_log_model_time_vs_copy']}x the copy), "
          f"{results['mlflow_log_model_extra_bytes'] / 2**20:,.1f} MiB more on disk ({results['mlflow_log_model_extra_vs_size']}x the model)")  # fmt: skip
    print(f"  hala.registry.log_checkpoint: {results['hala_log_s']} s ({results['hala_time_vs_copy']}x the copy), "
          f"{results['hala_extra_bytes'] / 2**20:,.2f} MiB more on disk ({results['hala_extra_vs_size']}x the model)")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Image sizes, cold and warm build times, and the containerized smoke run against the subprocess run.

    .venv/bin/python benchmarks/images.py [--skip-cold]

Cold: every hala image (and the Debian stand-in base) removed, dangling layers pruned, then
`make images`' build of all families. Warm: the same build again, nothing changed. Then the
smoke pipeline twice on the same machine with the tiny world cached: every task a process
(`--runner subprocess`), then every task in its image (`--runner docker`, its own MLflow server
from the hala-mlflow image). Prints the figures and writes benchmarks/results/images.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "images.json"


def build(label: str) -> dict:
    started = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_images.py")], check=True)
    report = json.loads((ROOT / "build" / "images" / "report.json").read_text())
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"{label} build: {report['seconds']:.0f} s", flush=True)
    return report


def smoke(runner: str, out: Path) -> float:
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (out.parent / f"{runner}.log").open("w") as log:
        subprocess.run(
            [sys.executable, "-m", "hala", "run", "--recipe", "smoke", "--runner", runner, "--out", str(out)],
            check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    seconds = time.monotonic() - started
    pipeline = json.loads((out / "summary.json").read_text())["wall_time_s"]
    print(f"smoke run, {runner}: {seconds:.0f} s in all, pipeline {pipeline:.0f} s", flush=True)
    return round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="keep the images that are there (warm build only)")
    args = parser.parse_args()
    result: dict = {}
    if not args.skip_cold:
        names = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
        ours = [n for n in names if n.startswith("localhost/hala-")]
        if ours:
            subprocess.run(["podman", "rmi", "--force", *ours], check=True, capture_output=True)
        # A build that was killed leaves buildah working containers that pin its layers.
        subprocess.run(["buildah", "rm", "--all"], check=True, capture_output=True)
        subprocess.run(["podman", "image", "prune", "--force"], check=True, capture_output=True)
        result["cold"] = build("cold")
    result["warm"] = build("warm")
    images = result["warm"]["images"]
    result["sizes"] = {r["family"]: r["size_bytes"] for r in images}
    result["total_bytes"] = sum(result["sizes"].values())
    result["layer_shared_total_bytes"] = result["warm"]["layer_shared_total_bytes"]
    # The tiny world is built once, outside both timings.
    subprocess.run([sys.executable, "-c", "from hala.recipe import load_recipe; from pipelines.local import _build_tiny_models as b; b(load_recipe('smoke'))"], check=True, cwd=ROOT)
    with tempfile.TemporaryDirectory(prefix="hala-bench-") as tmp:
        result["smoke_subprocess_s"] = smoke("subprocess", Path(tmp) / "subprocess" / "run")
        result["smoke_docker_s"] = smoke("docker", Path(tmp) / "docker" / "run")
    result["docker_over_subprocess"] = round(result["smoke_docker_s"] / result["smoke_subprocess_s"], 2)
    for family, size in result["sizes"].items():
        print(f"  {family:9s} {size / 1e9:5.2f} GB")
    print(f"  all       {result['total_bytes'] / 1e9:5.2f} GB, {result['layer_shared_total_bytes'] / 1e9:.2f} GB with shared layers once")
    print(f"containerized smoke run / subprocess run: {result['docker_over_subprocess']:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

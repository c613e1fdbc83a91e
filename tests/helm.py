"""The real helm binary and Kubernetes schemas for chart tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import yaml

CHARTS = Path(__file__).resolve().parents[1] / "charts"
# The oldest Kubernetes minor the charts promise to work on; its schemas must accept every manifest.
KUBERNETES_VERSION = "1.30.0"


def helm_binary() -> str:
    found = shutil.which("helm")
    if not found:
        raise RuntimeError("helm is not on PATH: run the tests with `make test`, which fetches it (scripts/fetch_helm.py)")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=check, timeout=120)


def render(chart: str, *values_files: Path, sets: dict[str, str] | None = None, namespace: str = "mlflow") -> list[dict]:
    """`helm template` of ``chart`` with the given values, as parsed manifests."""
    args = ["template", "rel", str(CHARTS / chart), "--namespace", namespace]
    for f in values_files:
        args += ["-f", str(f)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    out = helm(*args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate(docs: list[dict]) -> None:
    """Every manifest against the Kubernetes schemas, unknown fields refused."""
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def containers(docs: list[dict]) -> list[dict]:
    out = []
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec", {})
        out += spec.get("containers", []) + spec.get("initContainers", [])
    return out

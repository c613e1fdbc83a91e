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
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=check, timeout=900)  # a hang guard, sized for a loaded machine


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


def checkov(chart: str, manifests: Path) -> dict:
    """checkov's scan of rendered manifests, with the chart's own settings (.checkov.yaml)."""
    import json
    import os

    binary = os.environ.get("HALA_CHECKOV") or shutil.which("checkov")
    if not binary or not Path(binary).exists():
        raise RuntimeError("checkov is not installed: run the tests with `make test`, which installs it in .venv-checkov")
    result = subprocess.run(
        [binary, "-d", str(manifests), "--framework", "kubernetes", "--config-file", str(CHARTS / chart / ".checkov.yaml"), "-o", "json", "--quiet"],
        capture_output=True, text=True, timeout=1200,  # a hang guard, not a speed claim
    )  # fmt: skip
    if result.returncode not in (0, 1):  # 1 means failed checks, reported below
        raise RuntimeError(f"checkov failed ({result.returncode}): {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    return {"failed": [(c["check_id"], c["resource"]) for c in failed], "passed": passed}


def skipped_checks(chart: str) -> list[str]:
    return yaml.safe_load((CHARTS / chart / ".checkov.yaml").read_text())["skip-check"]

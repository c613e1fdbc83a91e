"""Serving a registered model: from an MLflow registry alias to a release of charts/hala-serving.

``hala deploy MODEL --alias champion`` looks the alias up in the registry, takes that version's
source (the ``s3://`` folder the pipeline registered) and its identity, writes the chart's
``models`` values and runs ``helm upgrade --install``. Several aliases give one release with one
Deployment each (champion and challenger side by side).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from hala.promotion import CHAMPION
from hala.tracking import registry_client

CHART = Path(__file__).resolve().parents[1] / "charts" / "hala-serving"


class DeployError(RuntimeError):
    """The model, alias, chart or helm cannot serve; the message says which and what exists."""


@dataclass(frozen=True)
class Plan:
    """What a deployment will do: the values it writes and the helm command that applies them."""

    values: dict
    values_file: Path
    command: list[str]


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    if not label:
        raise DeployError(f"{text!r} gives no usable Kubernetes name")
    return label


def resolve(tracking_uri: str, model: str, alias: str, gpus: int = 1) -> dict:
    """The chart's ``models`` entry for ``model``'s version with ``alias``."""
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    try:
        registered = client.get_registered_model(model)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        known = ", ".join(names) if names else "none"
        raise DeployError(f"no registered model {model!r} at {tracking_uri}; registered models: {known}") from None
    aliases = dict(registered.aliases or {})
    if alias not in aliases:
        known = ", ".join(f"{a} (version {v})" for a, v in sorted(aliases.items())) or "none"
        raise DeployError(f"{model} has no alias {alias!r}; its aliases: {known}")
    version = client.get_model_version(model, aliases[alias])
    if not str(version.source).startswith("s3://"):
        raise DeployError(
            f"{model} version {version.version} ({alias}) is at {version.source}, not in S3/MinIO: "
            "the serving pods download weights from s3:// only"
        )
    return {
        "name": _dns_label(f"{model}-{alias}"),
        # Clients ask for the champion by the model's own name, for any other alias by name-alias.
        "servedModelName": model if alias == CHAMPION else f"{model}-{alias}",
        "source": version.source,
        "gpus": gpus,
        "registry": {"name": model, "version": str(version.version), "alias": alias},
    }


def plan(
    tracking_uri: str,
    model: str,
    aliases: list[str],
    release: str,
    *,
    namespace: str | None = None,
    gpus: int = 1,
    values_files: list[Path] = (),
    out_dir: Path = Path("."),
    chart: Path = CHART,
) -> Plan:
    """Resolve every alias and write the values file; nothing is applied yet."""
    if not (chart / "Chart.yaml").is_file():
        raise DeployError(f"no Helm chart at {chart}: give --chart, the path of charts/hala-serving")
    for f in values_files:
        if not Path(f).is_file():
            raise DeployError(f"values file {f} does not exist")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?", release):
        raise DeployError(f"release {release!r} is not a helm release name: lowercase letters, digits and '-', at most 53")
    values = {"models": [resolve(tracking_uri, model, alias, gpus) for alias in dict.fromkeys(aliases)]}
    out_dir.mkdir(parents=True, exist_ok=True)
    values_file = out_dir / f"{release}.serving-values.yaml"
    values_file.write_text(
        "# Written by hala deploy from the MLflow registry; the chart's other settings come from -f files.\n"
        + yaml.safe_dump(values, sort_keys=False),
        encoding="utf-8",
    )
    command = ["helm", "upgrade", "--install", release, str(chart)]
    command += [a for f in values_files for a in ("-f", str(f))] + ["-f", str(values_file)]
    command += ["--namespace", namespace] if namespace else []
    return Plan(values, values_file, command)


def apply(p: Plan) -> str:
    """Run the plan's helm command; returns helm's output, raises DeployError with helm's own error."""
    helm = shutil.which("helm")
    if helm is None:
        raise DeployError("helm is not on PATH; install it, or use --dry-run and run the printed command elsewhere")
    result = subprocess.run([helm, *p.command[1:]], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise DeployError(f"helm upgrade --install failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout

"""Serving a registered model: from an MLflow registry alias to a release of charts/hala-serving.

``hala deploy MODEL --alias champion`` looks the alias up in the registry, takes where that
version's MLflow Model is stored (the registry's own artifact store: ``s3://`` directly, or
``mlflow-artifacts:/`` behind a server with ``--serve-artifacts``, mapped to the bucket the server
writes to), and points the chart at the model's checkpoint folder (``model/``), which its pods
sync and vLLM serves. It writes the chart's ``models`` values and runs ``helm upgrade
--install``. Several aliases give one release with one Deployment each (champion and challenger
side by side). A location the serving pods cannot read (a folder of this machine) is refused;
``--dry-run`` writes the values anyway and names it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hala.promotion import CHAMPION
from hala.registry import CHECKPOINT_DIR, RegistryError, version_by_alias, version_model_id
from hala.tracking import registry_client

# The MLflow server's own setting (charts/hala-mlflow sets it): where mlflow-artifacts:/ paths live.
DESTINATION_ENV = "MLFLOW_ARTIFACTS_DESTINATION"

CHART = Path(__file__).resolve().parents[1] / "charts" / "hala-serving"


class DeployError(RuntimeError):
    """The model, alias, chart or helm cannot serve; the message says which and what exists."""


@dataclass(frozen=True)
class Plan:
    """What a deployment will do: the values it writes and the helm command that applies them."""

    values: dict
    values_file: Path
    command: list[str]
    unreachable: list[str] = field(default_factory=list)  # sources the serving pods cannot read, one line each


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:40].strip("-")
    if not label:
        raise DeployError(f"{text!r} gives no usable Kubernetes name")
    return label


def storage_uri(location: str, destination: str | None) -> str:
    """Where the pods read an artifact location: ``mlflow-artifacts:`` paths under the server's destination."""
    if location.startswith("mlflow-artifacts:"):
        path = re.sub(r"^mlflow-artifacts:(//[^/]*)?/*", "", location)
        if not destination:
            raise DeployError(
                f"{location} is stored behind the MLflow server; give --artifacts-destination "
                f"(the server's {DESTINATION_ENV}, e.g. s3://hala/mlflow) so the pods can read it from the bucket"
            )
        return f"{destination.rstrip('/')}/{path}"
    return location


def resolve(tracking_uri: str, model: str, alias: str, gpus: int = 1, destination: str | None = None) -> dict:
    """The chart's ``models`` entry for ``model``'s version with ``alias``."""
    client = registry_client(tracking_uri)
    try:
        version = version_by_alias(client, tracking_uri, model, alias)
    except RegistryError as err:
        raise DeployError(str(err)) from None
    if version_model_id(version) is None:
        raise DeployError(
            f"{model} version {version.version} ({alias}) is not an MLflow Model (its source is {version.source}); "
            "register it with hala's pipeline"
        )
    # The registry's copy: where the version's logged model keeps its files, not where the pipeline wrote them.
    location = storage_uri(client.get_model_version_download_uri(model, version.version), destination)
    return {
        "name": _dns_label(f"{model}-{alias}"),
        # Clients ask for the champion by the model's own name, for any other alias by name-alias.
        "servedModelName": model if alias == CHAMPION else f"{model}-{alias}",
        "source": f"{location.rstrip('/')}/{CHECKPOINT_DIR}",
        "gpus": gpus,
        "registry": {"name": model, "version": str(version.version), "alias": alias, "model_id": version_model_id(version)},
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
    destination: str | None = None,
) -> Plan:
    """Resolve every alias and write the values file; nothing is applied yet.

    ``destination``: the MLflow server's artifacts destination (default: ``$MLFLOW_ARTIFACTS_DESTINATION``).
    """
    if not (chart / "Chart.yaml").is_file():
        raise DeployError(f"no Helm chart at {chart}: give --chart, the path of charts/hala-serving")
    for f in values_files:
        if not Path(f).is_file():
            raise DeployError(f"values file {f} does not exist")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?", release):
        raise DeployError(f"release {release!r} is not a helm release name: lowercase letters, digits and '-', at most 53")
    destination = destination or os.environ.get(DESTINATION_ENV)
    values = {"models": [resolve(tracking_uri, model, alias, gpus, destination) for alias in dict.fromkeys(aliases)]}
    unreachable = [
        f"{m['registry']['name']} version {m['registry']['version']} ({m['registry']['alias']}) is at {m['source']}, "
        "which the serving pods cannot read: they sync from s3:// only"
        for m in values["models"] if not m["source"].startswith("s3://")
    ]  # fmt: skip
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
    return Plan(values, values_file, command, unreachable)


def apply(p: Plan) -> str:
    """Run the plan's helm command; returns helm's output, raises DeployError with helm's own error."""
    if p.unreachable:
        raise DeployError("; ".join(p.unreachable))
    helm = shutil.which("helm")
    if helm is None:
        raise DeployError("helm is not on PATH; install it, or use --dry-run and run the printed command elsewhere")
    result = subprocess.run([helm, *p.command[1:]], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise DeployError(f"helm upgrade --install failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    return result.stdout

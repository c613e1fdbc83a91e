"""Registered versions as MLflow Models: a checkpoint folder logged with the transformers flavor.

Each version the pipeline registers is an MLflow logged model (``models:/m-...``) holding the
checkpoint as it was trained or quantized (``model/``), its tokenizer (``components/``), an
``MLmodel`` with the transformers flavor, task ``llm/v1/chat`` and its chat signature, pinned
requirements and a model card with the lineage and the evaluation. Its scores are logged as
metrics of the model itself, which the registry shows on the version and promotion reads.

Logging never loads the weights (MLflow's local-checkpoint path), and it does not copy them
where it need not: the weights are linked into the staging folder, and a store on this machine
(the smoke run's ``mlartifacts``) receives hard links to the same files; a server receives them
once (``--serve-artifacts`` puts them in its S3 bucket). The version is created only once the
model is complete, so a failed upload leaves no version pointing at it (its logged model is
marked FAILED).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from hala.tracking import registry_client

log = logging.getLogger(__name__)

TASK = "llm/v1/chat"
CHECKPOINT_DIR = "model"  # where the transformers flavor keeps the checkpoint inside an MLflow Model
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class RegistryError(ValueError):
    """A model that cannot be logged or a version that cannot be used; the message names it."""


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    model_id: str
    artifact_location: str

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_id}"


def check_model_folder(folder: str | Path) -> Path:
    """A checkpoint folder that can be logged: config.json and weight files; else RegistryError naming it."""
    path = Path(folder)
    if not path.is_dir():
        raise RegistryError(f"model folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise RegistryError(f"model folder {path} has no config.json")
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file()):
        raise RegistryError(f"model folder {path} has no weight files (*.safetensors)")
    return path


def requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """What loading the model needs, pinned at the versions installed here (the stage's image).

    ``extra`` packages are required even where they are not installed (then unpinned): the FP8
    teacher needs compressed-tensors to load, whichever image registered it.
    """
    pins = []
    for name in ("transformers", "tokenizers", "safetensors", "torch", "accelerate", *extra):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in extra:
                pins.append(name)
            continue
        pins.append(f"{name}=={version.split('+')[0]}")  # torch's local build tag (+cpu) is not on PyPI
    return pins


def _is_weight(path: Path) -> bool:
    return path.suffix in WEIGHT_SUFFIXES


def _local_store(location: str) -> Path | None:
    """The folder of an artifact location on this machine's filesystem; None for a remote store."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and location.startswith("/"):
        return Path(location)
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    src = src.resolve()
    try:
        os.link(src, dst)  # same filesystem: the store and the pipeline's output share the bytes
    except OSError:
        shutil.copy2(src, dst)


def _place(staging: Path, target: Path) -> None:
    for root, _, files in os.walk(staging):
        for name in files:
            src = Path(root) / name
            dst = target / src.relative_to(staging)
            dst.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(src, dst)


def _stage(folder: Path, staging: Path, mlflow_model, card: str, license_text: str, source_name: str, pip: list[str]) -> None:
    """Write the MLflow Model into ``staging``: small files copied by MLflow, weights linked after."""
    import mlflow.transformers
    from huggingface_hub import ModelCard
    from mlflow.models import Model

    light = staging.parent / "checkpoint"
    light.mkdir()
    weights = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and _is_weight(p):
            weights.append(p)
        elif p.is_file():
            shutil.copy2(p, light / p.name)
    mlflow.transformers.save_model(
        str(light), path=str(staging), mlflow_model=mlflow_model, task=TASK, model_card=ModelCard(card), pip_requirements=pip
    )
    for p in weights:
        os.symlink(p.resolve(), staging / CHECKPOINT_DIR / p.name)
    # MLflow names the folder it was given as the model's source and writes a licence pointer to
    # the hub page of that path; both are ours to say.
    model = Model.load(str(staging / "MLmodel"))
    model.flavors["transformers"]["source_model_name"] = source_name
    model.save(str(staging / "MLmodel"))
    (staging / "LICENSE.txt").write_text(license_text, encoding="utf-8")


def log_checkpoint(
    folder: str | Path,
    name: str,
    run_id: str,
    *,
    card: str,
    source_name: str,
    license_text: str,
    params: dict[str, str],
    metrics: dict[str, float],
    pip: list[str],
) -> tuple[str, str]:
    """Log ``folder`` as an MLflow Model of the run ``run_id`` with ``metrics`` on it; returns (model id, artifact location).

    MLflow must already point at the store (``hala.tracking.registry_client``).
    """
    import mlflow
    from mlflow.models import Model

    folder = check_model_folder(folder)
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    model = mlflow.initialize_logged_model(
        name=name, source_run_id=run_id, params={k: str(v)[:500] for k, v in params.items()}, model_type="transformers",
        experiment_id=experiment_id,
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="hala-model-") as tmp:
            staging = Path(tmp) / "mlflow-model"
            mlflow_model = Model(
                artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id,
                metadata={k: str(v) for k, v in params.items()},
            )  # fmt: skip
            _stage(folder, staging, mlflow_model, card, license_text, source_name, pip)
            local = _local_store(model.artifact_location)
            if local is not None:
                _place(staging, local)
            else:
                client.log_model_artifacts(model.model_id, str(staging))
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, run_id=run_id, model_id=model.model_id)
    except BaseException:
        mlflow.finalize_logged_model(model.model_id, "FAILED")
        raise
    mlflow.finalize_logged_model(model.model_id, "READY")
    return model.model_id, model.artifact_location


def register_version(name: str, model_id: str, run_id: str, tags: dict[str, str], alias: str) -> str:
    """A new version of ``name`` from the logged model ``model_id``, with ``alias``; returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags={k: str(v) for k, v in tags.items()}, model_id=model_id
    )
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def version_model_id(version) -> str | None:
    """The logged model a version was registered from (``models:/m-...``); None for a bare folder or URI."""
    if version.model_id:
        return version.model_id
    source = str(version.source or "")
    # MLflow's SQL registry keeps the model only in the source URI (models:/<model id>).
    if source.startswith("models:/m-") and "/" not in source.removeprefix("models:/"):
        return source.removeprefix("models:/")
    return None


def model_metrics(client, version) -> dict[str, float]:
    """The metrics logged on a version's model (its evaluation); empty for a version without a model."""
    model_id = version_model_id(version)
    if model_id is None:
        return {}
    return {m.key: m.value for m in client.get_logged_model(model_id).metrics or []}


def aliases_text(client, name: str) -> str:
    aliases = dict(client.get_registered_model(name).aliases or {})
    return ", ".join(f"{a} (version {v})" for a, v in sorted(aliases.items())) or "none"


def version_by_alias(client, tracking_uri: str, name: str, alias: str):
    """``name``'s version with ``alias``; an unknown model or alias is refused listing what exists."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = dict(client.get_registered_model(name).aliases or {})
    except MlflowException:
        known = ", ".join(sorted(m.name for m in client.search_registered_models(max_results=50))) or "none"
        raise RegistryError(f"no registered model {name!r} at {tracking_uri}; registered models: {known}") from None
    if alias not in aliases:
        raise RegistryError(f"{name} has no alias {alias!r}; its aliases: {aliases_text(client, name)}")
    return client.get_model_version(name, aliases[alias])


def load_chat_model(tracking_uri: str, name: str, alias: str):
    """The transformers pipeline of ``name``'s version with ``alias``, loaded as MLflow loads it;
    an unknown model or alias is refused listing what exists."""
    import mlflow

    version_by_alias(registry_client(tracking_uri), tracking_uri, name, alias)
    return mlflow.transformers.load_model(f"models:/{name}@{alias}")

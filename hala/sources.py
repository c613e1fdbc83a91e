"""Which version of each model and dataset a run reads: resolved, checked against the recipe's pin, recorded.

A hub source resolves to a commit sha (of the pinned branch, tag or commit, or of the newest),
asked with the token the pod has (``HF_TOKEN``, from the recipe's Secret), so a gated or missing
repository is named before any work. An ``s3://`` file resolves to its ETag and an ``s3://``
folder to a digest of its objects' names and ETags; a pin there must match, so a changed object
stops the run instead of feeding it other data. Local files and models resolve to a hash of
their content.

Stages read exactly the version they resolved and record it on their MLflow run as a tag
``hala.source.<reference>``; the register stage copies those tags into every model version's
lineage (:func:`run_sources`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from hala.recipe import classify_ref

SOURCE_TAG = "hala.source."
# What a model needs to load and serve (weights, configs, tokenizer, chat template, remote code); a hub
# repository may also hold other formats of the same weights (GGUF, .pth, ONNX) that would double the download.
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.py"]
_TAG_UNSAFE = re.compile(r"[^\w./ -]")


class SourceError(ValueError):
    """A model or dataset that cannot be read as the recipe asks; the message names it and what to do."""


def _token_state() -> str:
    return "HF_TOKEN is not set" if not os.environ.get("HF_TOKEN") else "the token in HF_TOKEN has no access to it"


def hub_commit(ref: str, repo_type: str, revision: str | None = None) -> str:
    """The commit sha that ``revision`` (default: the newest) of a hub repository points at, checked for access."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()  # reads HF_TOKEN itself: the token the pod got from the Secret
    what = f"{repo_type} {ref}"
    try:
        # A gated repository's metadata is public; only the access check shows whether its files can be read.
        api.auth_check(ref, repo_type=repo_type)
        info = api.model_info(ref, revision=revision) if repo_type == "model" else api.dataset_info(ref, revision=revision)
    except GatedRepoError:
        raise SourceError(
            f"{what} is gated and {_token_state()}: accept its terms on the hub with the account whose token the "
            "pod gets (HF_TOKEN from a Secret in cluster.secrets)"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"{what}: revision {revision!r} does not exist") from None
    except RepositoryNotFoundError:
        raise SourceError(f"{what} does not exist, or is private and {_token_state()}") from None
    return info.sha


def model_files(ref: str, commit: str) -> list[str]:
    """The file patterns to download of a hub model: MODEL_FILES, and ``*.bin`` weights only where it has no safetensors."""
    from huggingface_hub import HfApi

    names = [s.rfilename for s in HfApi().model_info(ref, revision=commit, files_metadata=False).siblings or []]
    return MODEL_FILES if any(n.endswith(".safetensors") for n in names) else [*MODEL_FILES, "*.bin"]


def hub_split_rows(ref: str, subset: str | None, split: str, revision: str | None = None) -> int | None:
    """Rows in a hub dataset's split as its card's metadata (``dataset_info``) gives them; None when it does not."""
    from huggingface_hub import HfApi

    card = HfApi().dataset_info(ref, revision=revision).card_data
    infos = card.get("dataset_info") if card is not None else None
    for info in infos if isinstance(infos, list) else [infos] if infos else []:
        if info.get("config_name", "default") not in (subset or "default", subset):
            continue
        for entry in info.get("splits") or []:
            if entry.get("name") == split and isinstance(entry.get("num_examples"), int):
                return entry["num_examples"]
    return None


def s3_version(ref: str, revision: str | None, folder: bool) -> str:
    """The ETag of an ``s3://`` object (or digest of a folder), which must equal ``revision`` when one is pinned."""
    from hala.storage import ObjectStore

    store = ObjectStore.from_env()
    if folder:
        version = store.digest(ref)
    else:
        found = store.stat(ref)
        version = None if found is None else (found.etag or "").strip('"')
    if version is None:
        raise SourceError(f"{ref}: nothing is stored there")
    if revision is not None and revision != version:
        raise SourceError(f"{ref} changed: it is {version} now, the recipe pins {revision}")
    return version


def local_version(path: Path) -> str:
    """A content hash of a local file, or of a model folder's configs and weight files."""
    from hala.corpora import file_hash
    from hala.shards import model_fingerprint

    return model_fingerprint(str(path)) if Path(path).is_dir() else file_hash(path)


def pin_model(ref: str, revision: str | None) -> str | None:
    """The exact version other machines must read ``ref`` at (a TrainJob's nodes), resolved and recorded here."""
    kind = classify_ref(ref)
    if kind == "hub":
        version = hub_commit(ref, "model", revision)
    elif kind == "s3":
        version = s3_version(ref, revision, folder=True)
    else:
        return revision
    record(ref, version)
    return version


def tag_key(ref: str) -> str:
    """The MLflow tag that records ``ref``'s version (tag keys allow letters, digits, _ - . / and spaces)."""
    return SOURCE_TAG + _TAG_UNSAFE.sub("_", ref)


def record(ref: str, version: str | Callable[[], str]) -> None:
    """Tag the active MLflow run (a pipeline stage's) with the version of ``ref`` it read; nothing outside a run.

    ``version`` may be a function, called only when there is a run to tag (hashing a local file costs a read).
    """
    if "mlflow" not in sys.modules:  # no stage run can be open: do not pay for importing MLflow
        return
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.set_tag(tag_key(ref), version() if callable(version) else version)


def run_sources(tracking_uri: str, parent_run_id: str) -> dict[str, str]:
    """Every ``hala.source.*`` tag the stage runs under ``parent_run_id`` recorded (one version per source).

    Two stages that read different versions of one source (a branch moved between them) are
    both kept, joined by a comma, so the lineage shows it.
    """
    from hala.tracking import stage_runs

    found: dict[str, set[str]] = {}
    for run in stage_runs(tracking_uri, parent_run_id):
        for key, value in run.data.tags.items():
            if key.startswith(SOURCE_TAG):
                found.setdefault(key, set()).add(value)
    return {key: ",".join(sorted(values)) for key, values in sorted(found.items())}

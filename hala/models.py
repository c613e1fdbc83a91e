"""Where a model reference lives: a local folder, a hub id, or a tiny model built here."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import local_path
from hala.recipe import classify_ref


class ModelError(ValueError):
    """A model reference that cannot be used; the message names it."""


def resolve_model(ref: str) -> str:
    """A path or hub id that transformers, vLLM and mergekit can load.

    ``tiny:NAME`` builds (once) and returns a local tiny model; local paths must exist;
    ``s3://`` folders are downloaded into the cache (``hala.storage``); hub ids pass through
    for the libraries to fetch on a cluster.
    """
    kind = classify_ref(ref)
    if kind == "tiny":
        from hala.tiny import tiny_model_path

        return str(tiny_model_path(ref.removeprefix("tiny:")))
    if kind == "local":
        path = local_path(ref)
        if not (path / "config.json").is_file():
            raise ModelError(f"model {ref}: no config.json in {path}")
        return str(Path(path).resolve())
    if kind == "s3":
        from hala.storage import fetch_dir

        path = fetch_dir(ref)
        if not (path / "config.json").is_file():
            raise ModelError(f"model {ref}: no config.json under this prefix")
        return str(path)
    if kind == "hub":
        return ref
    raise ModelError(f"model {ref}: not a model reference")


def check_model_ref(ref: str) -> None:
    """Fail early, with one line, on a local model folder that is missing."""
    if classify_ref(ref) == "local":
        resolve_model(ref)


def local_model_dir(ref: str) -> str:
    """Like :func:`resolve_model`, but hub models are downloaded so the result is always a folder."""
    resolved = resolve_model(ref)
    if classify_ref(ref) == "hub":
        from huggingface_hub import snapshot_download

        return snapshot_download(resolved)
    return resolved

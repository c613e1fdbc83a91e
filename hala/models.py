"""Where a model reference lives: a local folder, a hub snapshot, an s3:// folder, or a tiny model built here."""

from __future__ import annotations

from pathlib import Path

from hala.corpora import local_path
from hala.recipe import classify_ref


class ModelError(ValueError):
    """A model reference that cannot be used; the message names it."""


def resolve_model(ref: str, revision: str | None = None) -> str:
    """A local folder (or, for a hub id, a downloaded snapshot) that transformers, vLLM and mergekit load.

    ``tiny:NAME`` builds (once) and returns a local tiny model; local paths must exist;
    ``s3://`` folders are downloaded into the cache (``hala.storage``); hub models are
    downloaded at the commit ``revision`` resolves to (default: the newest) into the Hugging Face
    cache (on a cluster, the model cache volume). Whatever is read is recorded on the stage's
    MLflow run (:mod:`hala.sources`), with the commit, ETag digest or content hash it was.
    """
    from hala import sources

    kind = classify_ref(ref)
    if kind == "tiny":
        from hala.tiny import tiny_model_path

        path = str(tiny_model_path(ref.removeprefix("tiny:")))
        sources.record(ref, lambda: sources.local_version(Path(path)))
        return path
    if kind == "local":
        path = local_path(ref)
        if not (path / "config.json").is_file():
            raise ModelError(f"model {ref}: no config.json in {path}")
        sources.record(ref, lambda: sources.local_version(path))
        return str(Path(path).resolve())
    if kind == "s3":
        from hala.storage import fetch_dir

        version = sources.s3_version(ref, revision, folder=True)
        path = fetch_dir(ref)
        if not (path / "config.json").is_file():
            raise ModelError(f"model {ref}: no config.json under this prefix")
        sources.record(ref, version)
        return str(path)
    if kind == "hub":
        from huggingface_hub import snapshot_download

        commit = sources.hub_commit(ref, "model", revision)
        path = snapshot_download(ref, revision=commit, allow_patterns=sources.model_files(ref, commit))
        sources.record(ref, commit)
        return path
    raise ModelError(f"model {ref}: not a model reference")


def check_model_ref(ref: str) -> None:
    """Fail early, with one line, on a local model folder that is missing."""
    if classify_ref(ref) == "local":
        resolve_model(ref)

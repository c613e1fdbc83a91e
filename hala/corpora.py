"""Reading and writing the datasets the stages exchange.

Inputs may be local JSONL/JSON/Parquet files, data bundled with the package (``bundled:``),
or Hugging Face hub datasets (streamed, so a corpus is never held whole). Rows come in one of
the common layouts and are normalised to two shapes: parallel pairs and chat conversations.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from hala.recipe import DatasetRef, classify_ref

ROLE_FROM_SHAREGPT = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class DataError(ValueError):
    """A dataset that cannot be read as asked; the message names the dataset and the problem."""


def bundled_path(relative: str) -> Path:
    return Path(str(resources.files("hala.data").joinpath(relative)))


def local_path(ref: str) -> Path | None:
    """The file a reference names on this machine, or None for hub/s3 references."""
    kind = classify_ref(ref)
    if kind == "bundled":
        return bundled_path(ref.removeprefix("bundled:"))
    if kind == "local":
        return Path(os.path.expanduser(ref.removeprefix("file:")))
    return None


def check_readable(ds: DatasetRef) -> None:
    """Fail early, with one line, when a local dataset file is missing."""
    path = local_path(ds.path)
    if path is not None and not path.is_file():
        raise DataError(f"dataset {ds.path}: file {path} does not exist")


def _raw_rows(ds: DatasetRef) -> Iterator[dict]:
    path = local_path(ds.path)
    if path is not None:
        if not path.is_file():
            raise DataError(f"dataset {ds.path}: file {path} does not exist")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
            return
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"dataset {ds.path}: line {lineno} is not valid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"dataset {ds.path}: line {lineno} is not a JSON object")
                yield row
        return
    if classify_ref(ds.path) == "s3":
        raise DataError(f"dataset {ds.path}: reading datasets from s3:// needs the storage module (not configured)")
    from datasets import load_dataset

    yield from load_dataset(ds.path, ds.subset, split=ds.split, streaming=True)


def read_rows(ds: DatasetRef) -> Iterator[dict]:
    """The rows of a dataset, honouring ``skip`` and ``limit``, streamed."""
    stop = None if ds.limit is None else ds.skip + ds.limit
    yield from itertools.islice(_raw_rows(ds), ds.skip, stop)


def detect_layout(row: dict) -> str:
    if isinstance(row.get("translation"), dict):
        return "opus"
    if isinstance(row.get("conversations"), list):
        return "sharegpt"
    if isinstance(row.get("messages"), list):
        return "messages"
    if "instruction" in row and ("response" in row or "output" in row):
        return "instruction"
    return "columns"


def _empty(value: object) -> bool:
    return not isinstance(value, str) or not value.strip()


def _text(value: object, what: str, ds: DatasetRef) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"dataset {ds.path}: {what} is missing or empty")
    return value.strip()


def read_pairs(ds: DatasetRef, source: str, target: str) -> list[tuple[str, str]]:
    """Parallel pairs (source text, target text) from OPUS-layout or two-column rows."""
    pairs = []
    for row in read_rows(ds):
        layout = ds.layout if ds.layout != "auto" else detect_layout(row)
        if layout == "opus":
            tr = row["translation"]
            pairs.append((_text(tr.get(source), f"translation.{source}", ds), _text(tr.get(target), f"translation.{target}", ds)))
        elif layout == "columns":
            pairs.append((_text(row.get(source), source, ds), _text(row.get(target), target, ds)))
        else:
            raise DataError(f"dataset {ds.path}: layout {layout!r} holds no parallel pairs (expected opus or columns)")
    return pairs


def read_conversations(ds: DatasetRef) -> list[list[dict[str, str]]]:
    """Chat conversations as OpenAI-style message lists from any supported chat layout."""
    conversations = []
    for row in read_rows(ds):
        layout = ds.layout if ds.layout != "auto" else detect_layout(row)
        if layout == "instruction":
            response = row.get("response", row.get("output"))
            conversations.append(
                [
                    {"role": "user", "content": _text(row.get("instruction"), "instruction", ds)},
                    {"role": "assistant", "content": _text(response, "response", ds)},
                ]
            )
        elif layout == "sharegpt":
            turns = []
            for turn in row["conversations"]:
                role = ROLE_FROM_SHAREGPT.get(str(turn.get("from")))
                if role is None:
                    raise DataError(f"dataset {ds.path}: unknown ShareGPT speaker {turn.get('from')!r}")
                turns.append({"role": role, "content": _text(turn.get("value"), "conversations[].value", ds)})
            conversations.append(turns)
        elif layout == "columns" and ds.fields:
            turns = [] if _empty(row.get(ds.fields.get("system"))) else [{"role": "system", "content": row[ds.fields["system"]].strip()}]
            turns.append({"role": "user", "content": _text(row.get(ds.fields["user"]), ds.fields["user"], ds)})
            turns.append({"role": "assistant", "content": _text(row.get(ds.fields["assistant"]), ds.fields["assistant"], ds)})
            conversations.append(turns)
        elif layout == "messages":
            conversations.append(
                [{"role": str(m["role"]), "content": _text(m.get("content"), "messages[].content", ds)} for m in row["messages"]]
            )
        else:
            raise DataError(f"dataset {ds.path}: layout {layout!r} holds no conversations")
    return conversations


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows to ``path`` atomically (a crash never leaves a half file); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def file_hash(path: Path) -> str:
    """sha256 of a file or of every file under a folder (sorted), for lineage tags."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]

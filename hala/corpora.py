"""Reading and writing the datasets the stages exchange.

Inputs may be local JSONL/JSON/Parquet files, data bundled with the package (``bundled:``),
or Hugging Face hub datasets (streamed). Rows are read one at a time, so a corpus is never
held whole, and come in one of the common layouts; they are normalised to two shapes:
parallel pairs (:class:`PairRow`) and chat conversations (:class:`ConversationRow`).

A row that cannot be used (bad JSON, invalid UTF-8, a missing or empty field, megabytes of
text, a layout that holds the wrong kind of data) becomes a :class:`BadRow` with its reason,
which the data stages write to their rejects: one bad row never stops a job. A problem with
the whole file (missing, or no usable row at its start) is a :class:`DataError` before work
starts. The strict readers (:func:`read_pairs`, :func:`read_conversations`) serve small
curated sets (gate and evaluation pairs), where any bad row is an error.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import random
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hala.recipe import DatasetRef, classify_ref

ROLE_FROM_SHAREGPT = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
ROLES = ("system", "user", "assistant")
# ShareGPT keeps its turns under "conversations"; GAIR/ReAlign-Alpaca keeps the same turns under "items".
SHAREGPT_LISTS = ("conversations", "items")
# Flat columns that hold a conversation in the named datasets (their cards), so `auto` reads them without `fields`.
KNOWN_COLUMNS = (
    {"system": "system_prompt", "user": "question", "assistant": "response"},  # Open-Orca/OpenOrca
    {"user": "problem", "assistant": "matched_solution"},  # EricLu/SCP-116K
    {"user": "prompt", "assistant": "chosen"},  # Dahoas/synthetic-instruct-gptj-pairwise
)
log = logging.getLogger(__name__)
RAW_KEPT_CHARS = 2000  # how much of a bad row its reject keeps (a megabyte row is cut)
PROBE_ROWS = 100  # rows looked at before work starts to tell a bad file from a few bad rows


class DataError(ValueError):
    """A dataset that cannot be read as asked; the message names the dataset and the problem."""


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used, with where it was and why."""

    row: int  # line number in a JSONL file, row number (from 1) elsewhere
    reason: str
    raw: str

    def reject(self, dataset: str) -> dict:
        return {"dataset": dataset, "row": self.row, "reason": f"bad row: {self.reason}", "raw": self.raw}


@dataclass(frozen=True)
class PairRow:
    row: int
    source: str
    target: str


@dataclass(frozen=True)
class ConversationRow:
    row: int
    messages: list[dict[str, str]]


class _Invalid(Exception):
    """Raised inside the row parsers; becomes a BadRow."""


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


def _clip(text: str) -> str:
    return text if len(text) <= RAW_KEPT_CHARS else text[:RAW_KEPT_CHARS] + f"... [{len(text)} chars in all]"


def _jsonl_rows(path: Path, max_bytes: int) -> Iterator[tuple[int, dict] | BadRow]:
    # Binary lines, decoded one by one: an invalid byte spoils its row, not the file, and a
    # megabyte line is measured and skipped in pieces instead of parsed.
    with path.open("rb") as fh:
        for lineno in itertools.count(1):
            line = fh.readline(max_bytes + 1)
            if not line:
                return
            if len(line) > max_bytes and not line.endswith(b"\n"):
                size, head = len(line), line[:RAW_KEPT_CHARS]
                while line and not line.endswith(b"\n"):
                    line = fh.readline(1 << 20)
                    size += len(line)
                size -= 1 if line.endswith(b"\n") else 0
                raw = head.decode("utf-8", errors="replace") + f"... [{size} bytes in all]"
                yield BadRow(lineno, f"row of {size} bytes is over the limit of {max_bytes}", raw)
                continue
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield BadRow(lineno, f"invalid UTF-8 at byte {err.start}", _clip(line.decode("utf-8", errors="replace").rstrip("\n")))
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as err:
                yield BadRow(lineno, f"not valid JSON ({err.msg})", _clip(text.rstrip("\n")))
                continue
            except (ValueError, RecursionError) as err:  # e.g. a 5,000-digit number, nesting 100,000 deep
                yield BadRow(lineno, f"not readable JSON ({type(err).__name__}: {str(err)[:80]})", _clip(text.rstrip("\n")))
                continue
            if _ESCAPED_SURROGATE.search(text) and _has_lone_surrogate(row):
                yield BadRow(lineno, "text holds a lone UTF-16 surrogate (\\ud800-\\udfff escape)", _clip(text.rstrip("\n")))
                continue
            if not isinstance(row, dict):
                yield BadRow(lineno, f"not a JSON object but {type(row).__name__}", _clip(text.rstrip("\n")))
                continue
            yield lineno, row


# JSON may spell half of a UTF-16 pair as an escape; Python decodes it to a string no UTF-8
# writer accepts. Only rows with such an escape pay for the full check.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _has_lone_surrogate(row: dict) -> bool:
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _raw_rows(ds: DatasetRef) -> Iterator[tuple[int, dict] | BadRow]:
    from hala import sources

    path = local_path(ds.path)
    if classify_ref(ds.path) == "s3":
        from hala.storage import fetch_file

        version = sources.s3_version(ds.path, ds.revision, folder=False)
        path = fetch_file(ds.path)
        sources.record(ds.path, version)
    elif path is not None and path.is_file():
        sources.record(ds.path, lambda: sources.local_version(path))
    if path is not None:
        if not path.is_file():
            raise DataError(f"dataset {ds.path}: file {path} does not exist")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                parquet = pq.ParquetFile(path)
            except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
                raise DataError(f"dataset {ds.path}: not a readable Parquet file ({err})") from None
            numbers = itertools.count(1)
            for batch in parquet.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield next(numbers), row
            return
        yield from _jsonl_rows(path, ds.max_row_bytes)
        return
    from datasets import load_dataset

    # Read at the commit resolved now, so the recorded version is the one read even if the branch moves meanwhile.
    commit = sources.hub_commit(ds.path, "dataset", ds.revision)
    sources.record(ds.path, commit)
    yield from enumerate(load_dataset(ds.path, ds.subset, split=ds.split, streaming=True, revision=commit), 1)


def read_rows(ds: DatasetRef) -> Iterator[tuple[int, dict] | BadRow]:
    """The rows of a dataset as (row number, row) or BadRow, honouring ``skip``, ``limit`` and ``sample``, streamed."""
    if ds.sample is None:
        stop = None if ds.limit is None else ds.skip + ds.limit
        yield from itertools.islice(_raw_rows(ds), ds.skip, stop)
        return
    yield from _spread(ds, itertools.islice(_raw_rows(ds), ds.skip, None))


def _spread(ds: DatasetRef, rows: Iterator) -> Iterator:
    """Exactly ``limit`` of the first ``sample.of`` rows, each as likely, in their order (selection sampling,
    Knuth's Algorithm S): one pass, no memory, the same rows for the same seed on every machine."""
    wanted, total = ds.limit, ds.sample.of
    draw = random.Random(ds.sample.seed).random
    taken = seen = 0
    for item in rows:
        if taken == wanted:
            return
        if (total - seen) * draw() < wanted - taken:
            taken += 1
            yield item
        seen += 1
    # The split is shorter than sample.of says (preflight checks it where it can): the tail was over-sampled.
    log.warning("dataset %s: sample.of is %d but it holds %d rows after skip; took %d of %d rows", ds.path, total, seen, taken, wanted)


def detect_layout(row: dict) -> str:
    if isinstance(row.get("translation"), dict):
        return "opus"
    if any(_sharegpt_list(row, key) for key in SHAREGPT_LISTS):
        return "sharegpt"
    if isinstance(row.get("messages"), list):
        return "messages"
    if "instruction" in row and ("response" in row or "output" in row):
        return "instruction"
    return "columns"


def known_fields(row: dict) -> dict[str, str]:
    """The conversation columns of a row shaped like one of KNOWN_COLUMNS, or {}."""
    return next((dict(f) for f in KNOWN_COLUMNS if set(f.values()) <= row.keys()), {})


def _sharegpt_list(row: dict, key: str) -> bool:
    turns = row.get(key)
    return isinstance(turns, list) and bool(turns) and isinstance(turns[0], dict) and "from" in turns[0]


def _turns(turns: list[tuple[str, object, str]], other_roles: str) -> list[dict[str, str]]:
    """One policy for every layout's (role, content, where) turns.

    An empty system turn is dropped (many datasets carry an empty system prompt); an empty user
    or assistant turn rejects the row; a turn of any other role (tool, function, ...) is
    rejected, dropped or kept untranslated as the dataset's ``other_roles`` says.
    """
    messages = []
    for role, content, where in turns:
        if role == "system" and (content is None or (isinstance(content, str) and not content.strip())):
            continue
        if role not in ROLES:
            if other_roles == "drop":
                continue
            if other_roles == "reject":
                raise _Invalid(f"{where} has role {role!r} (other_roles: reject; drop or keep would take the row)")
        messages.append({"role": role, "content": _text(content, where)})
    return messages


def _text(value: object, what: str) -> str:
    if value is None:
        raise _Invalid(f"{what} is missing")
    if not isinstance(value, str):
        raise _Invalid(f"{what} is a {type(value).__name__}, not text")
    if not value.strip():
        raise _Invalid(f"{what} is empty")
    return value.strip()


def _keys(row: dict) -> str:
    return ", ".join(sorted(map(str, row))[:8]) or "none"


def _pair(row: dict, layout: str, source: str, target: str) -> tuple[str, str]:
    if layout == "opus":
        tr = row.get("translation")
        if not isinstance(tr, dict):
            raise _Invalid(f"no translation object (keys: {_keys(row)})")
        return _text(tr.get(source), f"translation.{source}"), _text(tr.get(target), f"translation.{target}")
    if layout == "columns":
        if source not in row and target not in row:
            raise _Invalid(f"no {source}/{target} columns and no translation object (keys: {_keys(row)})")
        return _text(row.get(source), source), _text(row.get(target), target)
    raise _Invalid(f"layout {layout!r} holds conversations, not parallel pairs")


def _conversation(row: dict, layout: str, ds: DatasetRef) -> list[dict[str, str]]:
    if layout == "instruction":
        if "instruction" not in row:
            raise _Invalid(f"no instruction column (keys: {_keys(row)})")
        response = row.get("response", row.get("output"))
        turns = [{"role": "user", "content": _text(row.get("instruction"), "instruction")}]
        if isinstance(row.get("input"), str) and row["input"].strip():  # Alpaca keeps context apart from the instruction
            turns[0]["content"] += "\n\n" + row["input"].strip()
        return [*turns, {"role": "assistant", "content": _text(response, "response")}]
    if layout == "sharegpt":
        key = next((k for k in SHAREGPT_LISTS if isinstance(row.get(k), list)), None)
        turns = row.get(key) if key else None
        if not turns:
            raise _Invalid(f"{' or '.join(SHAREGPT_LISTS)} is missing or empty (keys: {_keys(row)})")
        raw = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise _Invalid(f"{key}[{i}] is not an object")
            speaker = turn.get("from")
            raw.append((ROLE_FROM_SHAREGPT.get(str(speaker), str(speaker)), turn.get("value"), f"{key}[{i}].value"))
        return _turns(raw, ds.other_roles)
    if layout == "messages":
        turns = row.get("messages")
        if not isinstance(turns, list) or not turns:
            raise _Invalid("messages is missing or empty")
        raw = []
        for i, m in enumerate(turns):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise _Invalid(f"messages[{i}] has no role")
            raw.append((m["role"], m.get("content"), f"messages[{i}].content"))
        return _turns(raw, ds.other_roles)
    fields = ds.fields or (known_fields(row) if ds.layout == "auto" else {})
    if layout == "columns" and fields:
        raw = [("system", row.get(fields["system"]), fields["system"])] if "system" in fields else []
        raw += [("user", row.get(fields["user"]), fields["user"]), ("assistant", row.get(fields["assistant"]), fields["assistant"])]
        return _turns(raw, ds.other_roles)
    if layout == "opus":
        raise _Invalid("layout 'opus' holds parallel pairs, not conversations")
    raise _Invalid(f"no conversation in any known layout (keys: {_keys(row)})")


def _parsed(ds: DatasetRef, parse) -> Iterator:
    for item in read_rows(ds):
        if isinstance(item, BadRow):
            yield item
            continue
        number, row = item
        try:
            yield parse(number, row, ds.layout if ds.layout != "auto" else detect_layout(row))
        except _Invalid as err:
            yield BadRow(number, str(err), _clip(json.dumps(row, ensure_ascii=False, default=str)))


def _probed(ds: DatasetRef, rows: Iterator, kind: str) -> Iterator:
    """``rows`` unchanged, after checking that the file's first rows hold ``kind`` at all.

    A file whose first PROBE_ROWS rows are all bad is the wrong file or the wrong layout, not
    a file with some bad rows: the job stops before any work, naming the first problem.
    """
    head = list(itertools.islice(rows, PROBE_ROWS))
    if head and all(isinstance(r, BadRow) for r in head):
        first = head[0]
        layout = f" (layout {ds.layout})" if ds.layout != "auto" else ""
        raise DataError(f"dataset {ds.path}: no {kind} in its first {len(head)} rows{layout}; row {first.row}: {first.reason}")
    return itertools.chain(head, rows)


def iter_pairs(ds: DatasetRef, source: str, target: str) -> Iterator[PairRow | BadRow]:
    """Parallel pairs from OPUS-layout or two-column rows, bad rows as BadRow, streamed."""
    return _probed(ds, _parsed(ds, lambda n, row, layout: PairRow(n, *_pair(row, layout, source, target))), "parallel pairs")


def iter_conversations(ds: DatasetRef) -> Iterator[ConversationRow | BadRow]:
    """Chat conversations as OpenAI-style message lists, bad rows as BadRow, streamed."""
    return _probed(ds, _parsed(ds, lambda n, row, layout: ConversationRow(n, _conversation(row, layout, ds))), "conversations")


def _strict(ds: DatasetRef, items: Iterable) -> Iterator:
    for item in items:
        if isinstance(item, BadRow):
            raise DataError(f"dataset {ds.path}: row {item.row}: {item.reason}")
        yield item


def read_pairs(ds: DatasetRef, source: str, target: str) -> list[tuple[str, str]]:
    """All pairs of a small curated set (gate, evaluation); any bad row is an error."""
    return [(p.source, p.target) for p in _strict(ds, iter_pairs(ds, source, target))]


def read_conversations(ds: DatasetRef) -> list[list[dict[str, str]]]:
    """All conversations of a small curated set; any bad row is an error."""
    return [c.messages for c in _strict(ds, iter_conversations(ds))]


def _temporary(path: Path) -> Path:
    # Unique per writer: two processes writing the same target (a retried task while the old pod
    # still runs) never mix their bytes in one temporary file.
    return path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


@contextmanager
def _atomic(path: Path) -> Iterator:
    """A text file handle whose contents become ``path`` only when the block ends well, durably.

    On failure (a full disk, a crash) the temporary file goes and ``path`` is untouched; an
    OSError names ``path`` (Python's own names no file for a failed write).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # the rename below must never publish a file whose bytes are not on disk
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, value: object) -> None:
    """Write one JSON document to ``path`` atomically and durably."""
    with _atomic(path) as fh:
        fh.write(json.dumps(value, sort_keys=True, ensure_ascii=False))


def estimate_rows(ds: DatasetRef) -> int | None:
    """Rows a dataset will give (for the progress bar's ETA), cheaply; None when unknown."""
    path = local_path(ds.path)
    if path is None or not path.is_file():
        return None
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows
    else:
        with path.open("rb") as fh:
            total = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
    total = max(0, total - ds.skip)
    return total if ds.limit is None else min(total, ds.limit)


def count_rows(ds: DatasetRef) -> int | None:
    """Rows in the dataset's split after ``skip`` (before limit and sample): a local file's lines or
    Parquet rows, a hub split's size from the hub's own metadata; None when unknown."""
    if classify_ref(ds.path) == "hub":
        from hala.sources import hub_split_rows

        total = hub_split_rows(ds.path, ds.subset, ds.split, ds.revision)
    else:
        total = estimate_rows(ds.model_copy(update={"limit": None, "sample": None}))
    return None if total is None else max(0, total - (ds.skip if classify_ref(ds.path) == "hub" else 0))


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    """Write rows to ``path`` atomically (a crash never leaves a half file); returns the count."""
    n = 0
    with _atomic(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: Path) -> Iterator[dict]:
    """The rows of a JSONL file this project wrote, streamed."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: Path) -> list[dict]:
    return list(iter_jsonl(path))


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

"""Objects in S3-compatible storage (MinIO, SeaweedFS, AWS S3): the one place hala reads and writes ``s3://``.

Settings come from the environment, under the names AWS tools use: ``AWS_ENDPOINT_URL`` (its
scheme says whether TLS is on), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and optionally
``AWS_REGION``. On a cluster, the keys come from the Kubernetes Secret the recipe names, so they
never pass through a recipe, a pipeline parameter or a log.

Transfers are per file and verified: after an upload, the object's size and ETag must match the
local file's, so a rerun skips what is already there and redoes only what is missing or
different (an interrupted upload resumes file by file). Large files go up in parallel multipart
parts. A download writes ``FILE.<etag>.part`` as bytes arrive and a rerun asks only for the
rest (an HTTP range), so a cut download moves only what it lacks. Every request is retried
with backoff (at most RETRIES times) on refused connections, resets, read timeouts
(``HALA_S3_READ_TIMEOUT`` seconds, default 120) and 5xx answers, and the retries are counted:
transfers report them, and a failure says how many it took.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hala import cache_home
from hala.progress import progress_bar

log = logging.getLogger(__name__)

# Multipart part size of every upload; the ETag of a multipart object depends on it.
PART_SIZE = 64 * 1024 * 1024
PARALLEL_PARTS = 4
RETRIES = 4
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class StorageError(RuntimeError):
    """An S3 transfer or setting that failed; the message names the endpoint or object."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); the key may be empty (the bucket's root)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an s3://bucket/key URI")
    if not _BUCKET.match(parsed.netloc):
        raise StorageError(f"{uri}: {parsed.netloc!r} is not a bucket name (3-63 lowercase letters, digits, '.' and '-')")
    return parsed.netloc, parsed.path.lstrip("/")


def join_uri(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])


def local_etag(path: Path, part_size: int | None = None) -> str:
    """The ETag S3 gives ``path`` uploaded in ``part_size`` parts (default PART_SIZE): MD5, or MD5 of part MD5s with a count."""
    part_size = part_size or PART_SIZE
    size = path.stat().st_size
    digests = []
    with path.open("rb") as f:
        while chunk := f.read(part_size):
            digests.append(hashlib.md5(chunk, usedforsecurity=False))
    if size <= part_size:
        return (digests[0] if digests else hashlib.md5(b"", usedforsecurity=False)).hexdigest()
    combined = hashlib.md5(b"".join(d.digest() for d in digests), usedforsecurity=False)
    return f"{combined.hexdigest()}-{len(digests)}"


@dataclass
class Transfer:
    """What a directory transfer did."""

    files: int = 0
    bytes: int = 0  # moved over the network (a resumed download counts only what it fetched)
    skipped: int = 0  # already there, same size and ETag
    retries: int = 0  # requests urllib3 repeated during the transfer


class _RetryCount:
    """Retries granted by a store's urllib3 Retry objects, across threads."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


def _counting_retry(count: _RetryCount, **settings):
    """urllib3's Retry that adds one to ``count`` for every retry it grants (not for the first try)."""
    import urllib3

    class CountingRetry(urllib3.Retry):
        def increment(self, *args, **kwargs):
            retry = super().increment(*args, **kwargs)  # raises MaxRetryError once the budget is spent
            count.add()
            return retry

    return CountingRetry(**settings)


class ObjectStore:
    """An S3 endpoint with retries (urllib3) and verified, resumable directory transfers (minio client)."""

    def __init__(self, endpoint: str, access_key: str | None, secret_key: str | None, region: str | None = None):
        import urllib3
        from minio import Minio

        parsed = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageError(f"S3 endpoint {endpoint!r} is not an http(s)://host:port URL")
        self.endpoint = f"{parsed.scheme}://{parsed.netloc}"
        # Bounded retries with backoff for refused connections, timeouts and 5xx answers, counted.
        self.retry_count = _RetryCount()
        retry = _counting_retry(
            self.retry_count, total=RETRIES, connect=RETRIES, read=RETRIES, backoff_factor=0.5,
            status_forcelist=(500, 502, 503, 504), allowed_methods=None, raise_on_status=False,
        )  # fmt: skip
        read_timeout = float(os.environ.get("HALA_S3_READ_TIMEOUT", "120"))
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=read_timeout), retries=retry, maxsize=PARALLEL_PARTS * 4
        )
        self.client = Minio(
            parsed.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parsed.scheme == "https",
            region=region,
            http_client=http,
        )

    @classmethod
    def from_env(cls) -> ObjectStore:
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if not endpoint:
            raise StorageError("s3:// URIs need AWS_ENDPOINT_URL (and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in the environment")
        return cls(
            endpoint, os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_REGION")
        )

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kwargs):
        """Run one client call; turn connection and S3 errors into one line naming the endpoint.

        With ``missing_ok``, a missing object or key answers None instead.
        """
        import urllib3
        from minio.error import MinioException, S3Error

        before = self.retry_count.value
        try:
            return fn(*args, **kwargs)
        except S3Error as err:
            if missing_ok and err.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise StorageError(f"{what} at {self.endpoint}: {err.code}: {err.message}") from None
        except (urllib3.exceptions.HTTPError, MinioException, OSError) as err:
            reason = getattr(err, "reason", None) or err
            retried = self.retry_count.value - before
            raise StorageError(
                f"S3 endpoint {self.endpoint} failed {what} after {retried} retries: {type(reason).__name__}: {reason}"
            ) from None

    # -- single objects -------------------------------------------------------------------

    def stat(self, uri: str):
        """The object's stat, or None when there is none."""
        bucket, key = split_uri(uri)
        return self._call(f"stat of {uri}", self.client.stat_object, bucket, key, missing_ok=True)

    def same(self, path: Path, uri: str) -> bool:
        """Whether ``uri`` already holds exactly ``path`` (size and ETag)."""
        found = self.stat(uri)
        return found is not None and found.size == path.stat().st_size and _etag_matches(path, found.etag)

    def upload_file(self, path: Path, uri: str) -> int | None:
        """Upload ``path`` unless ``uri`` already holds it; returns the bytes moved (None: already there). Verified after."""
        path = Path(path)
        if self.same(path, uri):
            return None
        bucket, key = split_uri(uri)
        self._call(
            f"upload of {uri}", self.client.fput_object, bucket, key, str(path),
            part_size=PART_SIZE, num_parallel_uploads=PARALLEL_PARTS,
        )  # fmt: skip
        if not self.same(path, uri):
            raise StorageError(f"upload of {uri}: the stored object's size or ETag differs from {path}")
        return path.stat().st_size

    def download_file(self, uri: str, path: Path) -> int | None:
        """Download ``uri`` to ``path`` unless it is already there; returns the bytes moved (None: already there).

        Bytes go to ``path.<etag>.part`` as they arrive; a rerun after a cut asks only for the rest
        (an HTTP range from the part's length), and the whole is checked (size and ETag) before it
        becomes ``path``.
        """
        path = Path(path)
        found = self.stat(uri)
        if found is None:
            raise StorageError(f"{uri}: no such object at {self.endpoint}")
        if path.is_file() and path.stat().st_size == found.size and _etag_matches(path, found.etag):
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f"{path.name}.{found.etag.strip(chr(34))}.part")  # a new version starts a new part
        offset = part.stat().st_size if part.is_file() else 0
        if offset > found.size:
            part.unlink()
            offset = 0
        part.touch()
        bucket, key = split_uri(uri)
        moved = 0
        if offset < found.size:
            response = self._call(f"download of {uri}", self.client.get_object, bucket, key, offset=offset)
            try:
                with part.open("ab") as out:
                    for chunk in response.stream(amt=1 << 20):
                        out.write(chunk)
                        moved += len(chunk)
            except Exception as err:  # noqa: BLE001 - a cut stream: what arrived stays in the part file for the rerun
                raise StorageError(
                    f"S3 endpoint {self.endpoint} cut the download of {uri} after {offset + moved} of {found.size} bytes "
                    f"({type(err).__name__}); a rerun fetches the rest"
                ) from None
            finally:
                response.close()
                response.release_conn()
        if part.stat().st_size != found.size or not _etag_matches(part, found.etag):
            part.unlink()  # wrong bytes are not worth resuming
            raise StorageError(f"download of {uri}: {path} differs from the stored object (size or ETag)")
        part.replace(path)
        return moved

    # -- directories ----------------------------------------------------------------------

    def list(self, uri: str) -> Iterator[tuple[str, int]]:
        """(relative name, size) of every object under the prefix ``uri``."""
        bucket, prefix = split_uri(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        objects = self._call(f"listing of {uri}", lambda: list(self.client.list_objects(bucket, prefix=prefix, recursive=True)))
        for obj in objects:
            if not obj.is_dir:
                yield obj.object_name[len(prefix) :], obj.size

    def digest(self, uri: str) -> str | None:
        """One version id for everything under the prefix ``uri``: a hash of every object's name and ETag (None: empty)."""
        bucket, prefix = split_uri(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        objects = self._call(f"listing of {uri}", lambda: list(self.client.list_objects(bucket, prefix=prefix, recursive=True)))
        names = sorted((o.object_name[len(prefix) :], (o.etag or "").strip('"')) for o in objects if not o.is_dir)
        if not names:
            return None
        return "sha256:" + hashlib.sha256("\n".join(f"{n} {e}" for n, e in names).encode()).hexdigest()[:16]

    def upload_dir(self, local: Path, uri: str, workers: int = 4) -> Transfer:
        """Upload every file under ``local`` to the prefix ``uri``; files already there are skipped."""
        local = Path(local)
        if not local.is_dir():
            raise StorageError(f"upload of {uri}: {local} is not a folder")
        before = self.retry_count.value
        files = sorted(p for p in local.rglob("*") if p.is_file())
        jobs = [(p.stat().st_size, lambda p=p: self.upload_file(p, join_uri(uri, p.relative_to(local).as_posix()))) for p in files]
        result = _transfer(f"upload to {uri}", jobs, workers)
        result.retries = self.retry_count.value - before
        log.info("uploaded %s to %s: %d files, %d bytes, %d already there, %d retries", local, uri, result.files, result.bytes,
                 result.skipped, result.retries)  # fmt: skip
        return result

    def download_dir(self, uri: str, local: Path, workers: int = 4, include: Callable[[str], bool] | None = None) -> Transfer:
        """Download every object under the prefix ``uri`` (those whose relative name ``include``
        accepts, if given) into ``local``; files already there are skipped."""
        local = Path(local)
        before = self.retry_count.value  # the listing's retries count too
        objects = [(name, size) for name, size in self.list(uri) if include is None or include(name)]
        if not objects:
            raise StorageError(f"{uri}: no objects{' to download' if include else ''} under this prefix at {self.endpoint}")
        jobs = [(size, lambda name=name: self.download_file(join_uri(uri, name), local / name)) for name, size in objects]
        result = _transfer(f"download of {uri}", jobs, workers)
        result.retries = self.retry_count.value - before
        log.info("downloaded %s to %s: %d files, %d bytes, %d already there, %d retries", uri, local, result.files, result.bytes,
                 result.skipped, result.retries)  # fmt: skip
        return result

    def remove_prefix(self, uri: str) -> int:
        """Delete every object under the prefix ``uri``; returns how many there were."""
        from minio.deleteobjects import DeleteObject

        bucket, prefix = split_uri(uri)
        names = [f"{prefix.rstrip('/')}/{name}" if prefix else name for name, _ in self.list(uri)]
        errors = self._call(f"removal of {uri}", lambda: list(self.client.remove_objects(bucket, [DeleteObject(n) for n in names])))
        if errors:
            raise StorageError(f"removal of {uri}: {len(errors)} objects not deleted, e.g. {errors[0].name}: {errors[0].message}")
        return len(names)

    def check_writable(self, uri: str) -> None:
        """Write and delete a small object under ``uri``: the bucket exists and these keys may write."""
        import io

        bucket, key = split_uri(join_uri(uri, ".hala-write-check"))
        self._call(f"write check of {uri}", self.client.put_object, bucket, key, io.BytesIO(b"ok"), 2)
        self._call(f"write check of {uri}", self.client.remove_object, bucket, key)


def _transfer(desc: str, jobs: list[tuple[int, Callable[[], int | None]]], workers: int) -> Transfer:
    """Run (size, move) jobs on ``workers`` threads with a bytes progress bar; each move returns the bytes it moved (None: none needed)."""
    result = Transfer()
    with progress_bar(desc, total=sum(size for size, _ in jobs), unit="B") as bar, ThreadPoolExecutor(workers) as pool:
        for (size, _), moved in zip(jobs, pool.map(lambda job: job[1](), jobs), strict=True):
            result.files += 1
            result.bytes += moved or 0
            result.skipped += moved is None
            bar.update(size)
    return result


def _etag_matches(path: Path, etag: str) -> bool:
    """Compare a stored ETag with the local file's.

    A multipart ETag depends on the part size, which the object does not record: objects hala
    uploaded use PART_SIZE and are compared exactly; others, written with another part size,
    are compared by size alone (done by the caller).
    """
    etag = etag.strip('"')
    if "-" in etag:
        parts = int(etag.rsplit("-", 1)[1])
        size = path.stat().st_size
        if -(-size // PART_SIZE) != parts:
            return True
    return local_etag(path) == etag


def cache_dir() -> Path:
    """Where ``s3://`` models and datasets are kept on this machine (under ``$HALA_CACHE``)."""
    return cache_home() / "s3"


def fetch_file(uri: str) -> Path:
    """A local copy of the object ``uri`` (downloaded once, verified, refreshed when it changes)."""
    bucket, key = split_uri(uri)
    target = cache_dir() / bucket / key
    ObjectStore.from_env().download_file(uri, target)
    return target


def fetch_dir(uri: str, include: Callable[[str], bool] | None = None) -> Path:
    """A local copy of every object under the prefix ``uri`` (a model folder, a checkpoint), or of
    those whose relative name ``include`` accepts (a model's tokenizer files)."""
    bucket, key = split_uri(uri)
    target = cache_dir() / bucket / key
    ObjectStore.from_env().download_dir(uri, target, include=include)
    return target


def artifact_path(uri: str, path: str) -> Path:
    """Where a task reads an input artifact.

    KFP hands every input a local path; on a cluster its launcher has downloaded the artifact there.
    An artifact imported from ``s3://`` (``reuse`` in the recipe) has no such copy in a local run,
    so it is fetched into the cache instead.
    """
    local = Path(path)
    if local.exists():
        return local
    if uri.startswith("s3://"):
        store = ObjectStore.from_env()
        return fetch_file(uri) if store.stat(uri) is not None else fetch_dir(uri)
    raise FileNotFoundError(f"input artifact {uri} is not at {path}")

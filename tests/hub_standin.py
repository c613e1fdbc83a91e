"""A stand-in for the Hugging Face Hub's HTTP API on loopback, for the real huggingface_hub client.

It answers the calls hala makes, in the shapes the client parses (huggingface_hub's
``hf_raise_for_status`` reads ``X-Error-Code``; file metadata comes from a HEAD on
``/{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``):

- ``GET /api/{models,datasets}/{repo}/auth-check``: 200, 403 GatedRepo (unless the request
  carries a granted token), or 404 RepoNotFound;
- ``GET /api/{models,datasets}/{repo}[/revision/{rev}]``: the repository's info at a branch,
  tag or commit (``sha``, ``siblings``, ``cardData``), or 404 RevisionNotFound;
- ``GET /api/models/{repo}/tree/{rev}``: its files (snapshot_download lists them);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: a model file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


@dataclass
class Repo:
    kind: str  # "model" or "dataset"
    gated: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha
    files: dict[str, bytes] = field(default_factory=dict)  # the same files at every commit
    card: dict | None = None


def commit_of(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)  # tokens that may read gated repositories
    requests: list[str] = field(default_factory=list)

    def add_model_folder(self, repo: str, folder: Path, **kwargs) -> Repo:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.repos[repo] = Repo("model", files=files, **kwargs)
        return self.repos[repo]


def _split(path: str, hub: Hub) -> tuple[str, Repo, str] | None:
    """(repo id, repo, rest of the path) for a path that starts with a known repo id."""
    for repo_id, repo in hub.repos.items():
        if path == repo_id or path.startswith(repo_id + "/"):
            return repo_id, repo, path[len(repo_id) :].lstrip("/")
    return None


class _Handler(BaseHTTPRequestHandler):
    hub: Hub

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        self._send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code, "Content-Type": "application/json"})

    def _commit(self, repo: Repo, rev: str | None) -> str | None:
        rev = rev or "main"
        if rev in repo.refs:
            return repo.refs[rev]
        return rev if rev in repo.refs.values() else None

    def _allowed(self, repo: Repo) -> bool:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        return not repo.gated or token in self.hub.granted

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = unquote(self.path.split("?", 1)[0])
        self.hub.requests.append(f"{self.command} {path}")
        if path.startswith("/api/models/") or path.startswith("/api/datasets/"):
            kind = "model" if path.startswith("/api/models/") else "dataset"
            found = _split(path.removeprefix(f"/api/{kind}s/"), self.hub)
            if found is None or found[1].kind != kind:
                return self._error(404, "RepoNotFound")
            repo_id, repo, rest = found
            if rest == "auth-check":
                return self._send(200, b"{}") if self._allowed(repo) else self._error(403, "GatedRepo")
            if rest.startswith("tree/"):  # snapshot_download lists the files at the commit
                if self._commit(repo, rest.removeprefix("tree/").split("/", 1)[0]) is None:
                    return self._error(404, "RevisionNotFound")
                entries = [
                    {"type": "file", "path": name, "size": len(body), "oid": hashlib.sha1(body).hexdigest()}
                    for name, body in repo.files.items()
                ]
                return self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})
            if rest and not rest.startswith("revision/"):
                return self._error(404, "EntryNotFound")
            commit = self._commit(repo, rest.removeprefix("revision/") or None)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            info = {
                "id": repo_id,
                "sha": commit,
                "gated": "manual" if repo.gated else False,
                "private": False,
                "siblings": [{"rfilename": name} for name in repo.files],
            }
            if repo.card is not None:
                info["cardData"] = repo.card
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        found = _split(path.lstrip("/"), self.hub)
        if found is not None and found[2].startswith("resolve/"):
            repo_id, repo, rest = found
            rev, _, name = rest.removeprefix("resolve/").partition("/")
            commit = self._commit(repo, rev)
            if commit is None:
                return self._error(404, "RevisionNotFound")
            if not self._allowed(repo):
                return self._error(403, "GatedRepo")
            if name not in repo.files:
                return self._error(404, "EntryNotFound")
            body = repo.files[name]
            etag = f'"{hashlib.sha256(body).hexdigest()}"'
            return self._send(200, body, {"X-Repo-Commit": commit, "ETag": etag, "Content-Type": "application/octet-stream"})
        return self._error(404, "RepoNotFound")


class HubServer:
    """Serve ``hub`` on 127.0.0.1 (a free port) in a thread; ``url`` is its endpoint."""

    def __init__(self, hub: Hub):
        handler = type("Handler", (_Handler,), {"hub": hub})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A small HTTP server on 127.0.0.1 that answers the Hugging Face Hub's file-resolve protocol
(`/datasets/OWNER/NAME/resolve/REVISION/PATH`: HEAD and ranged GET, `X-Repo-Commit`, `ETag`,
`X-Error-Code` for missing repos, revisions and files, gated repos), reached through HF_ENDPOINT.
Plain paths (`/files/NAME`) serve the same files as an ordinary HTTPS-like origin."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

RESOLVE = re.compile(r"^/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    branches: tuple = ("main",)
    gated_for: str | None = None  # a token that may read it; any other is refused as gated


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    break_after: int | None = None  # cut every GET body after this many bytes
    authorizations: list = field(default_factory=list)

    def answer(self, method: str, path: str, headers) -> tuple[int, dict, bytes]:
        self.authorizations.append(headers.get("Authorization"))
        if path.startswith("/files/"):
            return self._file(
                headers, next((r.files[path[7:]] for r in self.repos.values() if path[7:] in r.files), None), {}
            )
        m = RESOLVE.match(path)
        if not m:
            return 404, {}, b"not found"
        repo = self.repos.get(m.group(1))
        if repo is None:
            return 401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}, b""
        if repo.gated_for and headers.get("Authorization") != f"Bearer {repo.gated_for}":
            return 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this dataset is restricted"}, b""
        if unquote(m.group(2)) not in (*repo.branches, repo.commit):  # as the Hub: refs%2Fconvert%2Fparquet
            return 404, {"X-Error-Code": "RevisionNotFound"}, b""
        if m.group(3) not in repo.files:
            return 404, {"X-Error-Code": "EntryNotFound"}, b""
        return self._file(headers, repo.files[m.group(3)], {"X-Repo-Commit": repo.commit})

    def _file(self, headers, data: bytes | None, extra: dict) -> tuple[int, dict, bytes]:
        if data is None:
            return 404, {}, b""
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        if headers.get("If-Match") not in (None, etag):
            return 412, {}, b""
        start = int(re.match(r"bytes=(\d+)-", headers.get("Range", "bytes=0-")).group(1))
        status = 206 if start else 200
        return (
            status,
            {**extra, "ETag": etag, "Content-Length": str(len(data) - start), "Accept-Ranges": "bytes"},
            data[start:],
        )


def serve(hub: Hub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, body: bool) -> None:
            status, headers, data = hub.answer(self.command, self.path, self.headers)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(data) if body else 0))
            self.end_headers()
            if body:
                cut = data if hub.break_after is None else data[: hub.break_after]
                self.wfile.write(cut)
                if len(cut) < len(data):
                    self.close_connection = True

        def do_HEAD(self):
            self._reply(body=False)

        def do_GET(self):
            self._reply(body=True)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

"""Read-only sources over HTTP: an `https://` URL, and a file of a Hugging Face Hub dataset
(`hf://datasets/OWNER/NAME[@REV]/PATH`, resolved with huggingface_hub, which honours HF_ENDPOINT and HF_TOKEN).

Reads stream; a broken connection resumes with a Range request pinned to the first response's ETag
(and, on the Hub, to the resolved commit), so a file replaced meanwhile is a clear error, never spliced.
"""

from __future__ import annotations

import io
import os
import re
import socket
import threading
from typing import Any, BinaryIO
from urllib.parse import unquote

from neosft.errors import UserError, redact
from neosft.storage.base import Readable

TIMEOUT_S = 10.0  # connect and read; with 3 retries a silent server ends within a minute
DEADLINE_S = 60.0  # for a response's status line and headers in all: a server trickling them ends here
RETRIES = 5


class HttpFile(Readable):
    def __init__(self, url: str, uri: str | None = None, headers: dict | None = None, revision: str | None = None):
        self.url, self.uri, self.headers, self.revision = url, uri or redact(url), headers or {}, revision

    def open(self) -> BinaryIO:
        return io.BufferedReader(_HttpReader(self), buffer_size=1 << 20)

    def size(self) -> int:
        response = _request(self, "HEAD", {})
        response.release_conn()
        return int(response.headers.get("Content-Length") or 0)

    def exists(self) -> bool:
        try:
            self.size()
        except UserError:
            return False
        return True


def hub_file(uri: str) -> HttpFile:
    """`hf://datasets/OWNER/NAME[@REV]/PATH`, resolved to the commit its revision names now."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url  # the Hub client: only for hf:// sources
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import build_hf_headers

    m = re.fullmatch(r"hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?/(.+)", uri)
    if not m:
        raise UserError(f"{uri}: a Hub source reads hf://datasets/OWNER/NAME[@REVISION]/PATH")
    # a revision holding '/' (refs/convert/parquet, refs/pr/1) is written URL-encoded, as huggingface_hub does
    repo, revision, path = m.group(1), unquote(m.group(2) or "main"), m.group(3)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    url = hf_hub_url(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint)
    where = f"the Hub at {redact(endpoint)}" if endpoint else "the Hugging Face Hub"
    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint, timeout=TIMEOUT_S)
    except GatedRepoError:
        raise UserError(f"{uri}: the dataset {repo} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UserError(f"{uri}: no dataset {repo} on {where} (or it is private: set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise UserError(f"{uri}: the dataset {repo} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise UserError(f"{uri}: the dataset {repo} has no file {path!r} at {revision}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise UserError(f"{uri}: {where} answered HTTP {status}") from None
    except Exception as e:  # httpx errors: connection refused, timeouts, TLS
        raise UserError(f"{uri}: cannot reach {where} ({type(e).__name__})") from None
    commit = meta.commit_hash or revision
    pinned = hf_hub_url(repo, path, repo_type="dataset", revision=commit, endpoint=endpoint)
    headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
    return HttpFile(pinned, uri=uri, headers=headers, revision=commit)


class _HttpReader(io.RawIOBase):
    def __init__(self, file: HttpFile):
        self.file, self.pos, self.etag = file, 0, None
        self.response = self._connect()

    def _connect(self):
        headers = {"Range": f"bytes={self.pos}-", **({"If-Match": self.etag} if self.etag else {})} if self.pos else {}
        response = _request(self.file, "GET", headers)
        if self.pos and response.status != 206:
            response.release_conn()
            raise UserError(f"{self.file.uri}: the server cannot resume a broken download (HTTP {response.status})")
        self.etag = self.etag or response.headers.get("ETag")
        return response

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        from urllib3.exceptions import HTTPError  # urllib3: only for http(s):// sources

        for attempt in range(RETRIES + 1):
            try:
                data = self.response.read1(len(buf))  # what has arrived: a later break loses nothing
                break
            except (HTTPError, OSError):
                if attempt == RETRIES:
                    raise UserError(
                        f"the download of {self.file.uri} broke off {RETRIES + 1} times; giving up"
                    ) from None
                self.response = self._connect()
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        self.response.release_conn()
        super().close()


def _request(file: HttpFile, method: str, headers: dict):
    import urllib3  # only for http(s):// sources

    try:
        response = _pool().request(
            method,
            file.url,
            headers={**file.headers, **headers},
            preload_content=False,
            redirect=True,
            retries=urllib3.Retry(total=3, redirect=5, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504)),
        )
    except _Late:
        raise UserError(
            f"{_host(file)} did not answer for {file.uri} within {DEADLINE_S:g} s: its status line and headers "
            "never completed"
        ) from None
    except urllib3.exceptions.HTTPError as e:
        host = _host(file)
        if isinstance(getattr(e, "reason", e), urllib3.exceptions.TimeoutError):
            raise UserError(f"{host} did not answer for {file.uri} within {TIMEOUT_S:g} s, 4 times") from None
        raise UserError(f"cannot reach {host} for {file.uri} ({type(e).__name__})") from None
    if response.status in (200, 206):
        return response
    response.release_conn()
    if response.status == 404:
        raise UserError(f"{file.uri} does not exist (HTTP 404)")
    if response.status in (401, 403):
        raise UserError(f"{file.uri}: access refused (HTTP {response.status})")
    if response.status == 412:
        raise UserError(f"{file.uri} was replaced while it was being read; run the build again")
    raise UserError(f"{file.uri}: HTTP {response.status}")


def _host(file: HttpFile) -> str:
    return redact(file.url).split("/")[2]


class _Late(Exception):
    """A response whose status line and headers took over DEADLINE_S: not an urllib3 error, so never retried
    (each retry would start the deadline afresh: a trickling server held a build 4 times as long)."""


_POOL = None


def _pool():
    global _POOL
    if _POOL is None:
        import urllib3  # only for http(s):// sources

        _POOL = urllib3.PoolManager(timeout=urllib3.Timeout(connect=TIMEOUT_S, read=TIMEOUT_S))
        _POOL.pool_classes_by_scheme = {
            "http": _deadlined(urllib3.HTTPConnectionPool),
            "https": _deadlined(urllib3.HTTPSConnectionPool),
        }
    return _POOL


def _deadlined(pool_class):
    """`pool_class` whose connections give up on a response whose status line and headers take over DEADLINE_S
    in all (a read timeout alone restarts with every byte a trickling server sends)."""
    base: Any = pool_class.ConnectionCls

    class Connection(base):
        def getresponse(self, *args, **kwargs):
            expired = threading.Event()
            timer = threading.Timer(DEADLINE_S, self._expire, (expired,))
            timer.daemon = True
            timer.start()
            try:
                response = super().getresponse(*args, **kwargs)
            except Exception:
                if expired.is_set():
                    raise _Late() from None
                raise
            finally:
                timer.cancel()
            if expired.is_set():  # the cut-off headers may have parsed as complete
                response.close()
                raise _Late()
            return response

        def _expire(self, expired: threading.Event) -> None:
            expired.set()
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns at once
                except OSError:
                    pass

    return type(pool_class.__name__, (pool_class,), {"ConnectionCls": Connection})

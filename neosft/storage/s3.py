"""`s3://bucket/key` as a `Location`: the only module that imports boto3 (lazily).

Standard AWS environment variables, plus `NEOSFT_S3_ENDPOINT` for S3-compatible servers (MinIO, Ceph,
R2, rclone), which switches to path-style addressing. Every request has a connect and a read timeout
(`NEOSFT_S3_TIMEOUT` seconds, default 8) and a bounded number of attempts (`AWS_MAX_ATTEMPTS`,
default 5, with jittered backoff), so a silent endpoint ends in one line within a minute. Every failure the user can fix
becomes a `UserError` that names the URI and never a secret (nor credentials inside the endpoint URL).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from neosft.errors import Unreachable, UserError, redact
from neosft.progress import log
from neosft.storage.base import Location

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_location(uri: str, endpoint: str | None = None) -> S3Location:
    """`uri` on the S3 server at `endpoint` ('' for AWS; None: NEOSFT_S3_ENDPOINT, or AWS when unset)."""
    bucket, _, key = uri[5:].partition("/")
    if "@" in bucket:
        raise UserError(
            f"{redact(uri)}: credentials do not belong in an S3 URI, where they would be printed and "
            "stored; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (in a cluster: the s3.secretName "
            "Secret)"
        )
    if not bucket:
        raise UserError(f"{uri}: an S3 URI needs a bucket, as in s3://bucket/prefix")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UserError(
            f"{uri}: {bucket!r} is not a valid bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
        )
    return S3Location(bucket, key.strip("/"), endpoint)


class S3Location(Location):
    CLEANUP_GRACE_S = 3600.0  # no lock on S3: parts another build uploaded within the hour are left alone

    def __init__(self, bucket: str, key: str, endpoint: str | None = None):
        self.bucket, self.key, self.endpoint = bucket, key, endpoint
        self.uri = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"

    def __truediv__(self, name: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name, self.endpoint)

    def _errors(self):
        return _s3_errors(self.uri, self.bucket, self.endpoint)

    def _client(self):
        return _client(self.endpoint)

    def _object_key(self) -> str:
        if not self.key:
            raise UserError(f"{self.uri} names a bucket, not an object: use s3://{self.bucket}/KEY")
        return self.key

    def check(self, create: bool = True) -> None:
        """The bucket exists and the credentials are accepted (an S3 prefix needs no creating)."""
        try:
            with self._errors():
                self._client().head_bucket(Bucket=self.bucket)
        except UserError as e:
            if isinstance(e.__cause__, _NotFound):
                raise UserError(f"bucket {self.bucket!r} does not exist ({self.uri})") from None
            raise

    def open(self) -> BinaryIO:
        return io.BufferedReader(
            _S3Reader(self.bucket, self._object_key(), self.uri, self.endpoint), buffer_size=1 << 20
        )

    def size(self) -> int:
        try:
            with self._errors():
                return self._client().head_object(Bucket=self.bucket, Key=self._object_key())["ContentLength"]
        except UserError as e:
            if isinstance(e.__cause__, _NotFound):
                self.check()  # a missing bucket says so
            raise

    def exists(self) -> bool:
        try:
            self.size()
        except UserError as e:
            if isinstance(e.__cause__, _NotFound):
                return False
            raise
        return True

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        """One PUT: S3 makes it atomic."""
        with self._errors():
            self._client().put_object(Bucket=self.bucket, Key=self._object_key(), Body=data)

    def move_from(self, src: Path) -> None:
        self.upload(src)
        os.unlink(src)

    UPLOAD_ATTEMPTS = 3

    def upload(self, src: Path) -> None:
        """Multipart when large; the object appears whole when the upload completes. A server that forgot the
        multipart upload meanwhile (restarted: NoSuchUpload, or 403 for the upload id it no longer knows) gets it
        again from its start."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError

        for attempt in range(1, self.UPLOAD_ATTEMPTS + 1):
            try:
                with self._errors():
                    self._client().upload_file(str(src), self.bucket, self._object_key(), Config=_transfer_config())
                return
            except S3UploadFailedError as e:  # s3transfer's wrapper of the ClientError of one of the upload's calls
                forgotten = any(code in str(e) for code in ("(NoSuchUpload)", "(AccessDenied)", "(403)"))
                if forgotten and attempt < self.UPLOAD_ATTEMPTS:
                    log(f"{self.uri}: the store forgot the upload (restarted?); uploading it again from the start")
                    continue
                if forgotten:
                    raise UserError(
                        f"{self.uri}: the store forgot the upload {attempt} times (restarted, or it "
                        "refuses access: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                    ) from None
                if isinstance(e.__context__, ClientError):
                    with self._errors():  # the same one line as any other call's
                        raise e.__context__ from None
                raise UserError(f"uploading to {self.uri} failed: {redact(str(e))}") from None

    def publish_dir(self, src: Path) -> None:
        """Upload every file, each whole (the caller's manifest, written last, makes them visible)."""
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            (self / path.relative_to(src).as_posix()).move_from(path)

    def download(self, dest: Path) -> None:
        with self._errors():
            self._client().download_file(self.bucket, self._object_key(), str(dest), Config=_transfer_config())

    def list(self, older_than_s: float = 0) -> list[str]:
        prefix = f"{self.key}/" if self.key else ""
        cutoff, names = time.time() - older_than_s, []
        with self._errors():
            for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                names += [
                    obj["Key"][len(prefix) :]
                    for obj in page.get("Contents", ())
                    if not older_than_s or obj["LastModified"].timestamp() < cutoff
                ]
        return sorted(names)

    def delete(self) -> None:
        with self._errors():
            self._client().delete_object(Bucket=self.bucket, Key=self._object_key())

    def lock(self):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="neosft-staging-") as folder:
            yield Path(folder)


class _S3Reader(io.RawIOBase):
    """A streaming GET that resumes with a Range request when the connection breaks, pinned to the
    version first read (`If-Match` its ETag): an object replaced meanwhile is a clear error, never spliced."""

    RETRIES = 5

    def __init__(self, bucket: str, key: str, uri: str, endpoint: str | None):
        self.bucket, self.key, self.uri, self.endpoint = bucket, key, uri, endpoint
        self.pos, self.etag = 0, None
        self.body: Any = None  # the botocore stream of the current GET
        self._connect()

    def _connect(self) -> None:
        extra = {"Range": f"bytes={self.pos}-", "IfMatch": self.etag} if self.pos else {}
        try:
            with _s3_errors(self.uri, self.bucket, self.endpoint):
                response = _client(self.endpoint).get_object(Bucket=self.bucket, Key=self.key, **extra)
        except UserError as e:
            if isinstance(e.__cause__, _Changed):
                raise UserError(f"{self.uri} was replaced while it was being read; run the build again") from None
            raise
        if self.etag and response.get("ETag") != self.etag:  # for servers that ignore If-Match
            response["Body"].close()
            raise UserError(f"{self.uri} was replaced while it was being read; run the build again")
        self.body = response["Body"]
        self.etag = response.get("ETag")

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        from botocore.exceptions import BotoCoreError  # botocore: loaded with the client, never by --help

        for attempt in range(self.RETRIES + 1):
            try:
                data = self.body.read(len(buf))
                break
            except (BotoCoreError, OSError):
                if attempt == self.RETRIES:
                    raise UserError(f"lost the connection while reading {self.uri}") from None
                self._connect()
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
        super().close()


class _NotFound(Exception):
    pass


class _Changed(Exception):
    pass


@contextlib.contextmanager
def _s3_errors(uri: str, bucket: str, endpoint: str | None) -> Iterator[None]:
    """Turn botocore failures into one clear `UserError` line."""
    from botocore.exceptions import (  # botocore: loaded with the client, never by --help
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ParamValidationError,
        ReadTimeoutError,
        SSLError,
    )

    try:
        yield
    except ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            raise UserError(f"bucket {bucket!r} does not exist ({uri})") from None
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            raise UserError(f"{uri} does not exist") from _NotFound()
        if code == "PreconditionFailed" or status == 412:
            raise UserError(f"{uri} changed") from _Changed()
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden") or status == 403:
            raise UserError(
                f"S3 refused access to {uri} ({code or status}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        if isinstance(status, int) and status >= 500:  # the server's own trouble: the same call may succeed later
            raise Unreachable(f"S3 answered {status} {code} for {uri}".rstrip()) from None
        raise UserError(f"S3 error on {uri}: {code} {err.get('Message', '')}".rstrip()) from None
    except NoCredentialsError:
        raise UserError(f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
    except SSLError:
        raise UserError(
            f"TLS failed with the S3 endpoint {_shown_endpoint(endpoint)} for {uri}: "
            "if the server speaks plain HTTP, use an http:// endpoint"
        ) from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise Unreachable(
            f"the S3 endpoint {_shown_endpoint(endpoint)} did not answer within {_timeout():g} s "
            f"({_attempts()} attempts) for {uri}; NEOSFT_S3_TIMEOUT and AWS_MAX_ATTEMPTS set the limits"
        ) from None
    except EndpointConnectionError:
        raise Unreachable(f"cannot reach the S3 endpoint {_shown_endpoint(endpoint)} for {uri}") from None
    except ParamValidationError as e:
        raise UserError(f"{uri}: invalid S3 request ({redact(str(e)).splitlines()[-1].strip()})") from None
    except BotoCoreError as e:
        raise UserError(f"S3 failed on {uri} via {_shown_endpoint(endpoint)}: {type(e).__name__}") from None


def _endpoint(given: str | None = None) -> str | None:
    """`given` ('' for AWS), else NEOSFT_S3_ENDPOINT, checked: it must be an http:// or https:// URL; None: AWS."""
    endpoint = (os.environ.get("NEOSFT_S3_ENDPOINT") if given is None else given) or None
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"S3 endpoint {redact(endpoint)!r} needs a scheme: http://HOST:PORT or https://HOST")
    return endpoint


def _shown_endpoint(given: str | None) -> str:
    endpoint = os.environ.get("NEOSFT_S3_ENDPOINT") if given is None else given
    return redact(endpoint) if endpoint else "of AWS"


def _timeout() -> float:
    return _number("NEOSFT_S3_TIMEOUT", 8.0)


def _attempts() -> int:
    return int(_number("AWS_MAX_ATTEMPTS", 5))


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        number = float(value) if value else default
    except ValueError:
        number = -1
    if number <= 0:
        raise UserError(f"{name}={value!r} must be a positive number")
    return number


@functools.cache
def _client_for(endpoint: str | None, region: str, timeout: float, attempts: int, _credentials: tuple):
    import boto3  # about 0.3 s: only for the first S3 request
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        connect_timeout=timeout,
        read_timeout=timeout,
        # a body whose checksum is checked is wrapped unparseably when the answer is an error (botocore: a 5xx with
        # checksum headers, as rclone sends for an object listed a moment ago, crashed its parser)
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": attempts},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _client(endpoint: str | None = None):
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    credentials = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    return _client_for(
        _endpoint(endpoint), region, _timeout(), _attempts(), credentials
    )  # a new client when the environment changes


def forget_clients() -> None:
    """Drop cached clients, e.g. in a forked child, which must open its own connections."""
    _client_for.cache_clear()


def _transfer_config():
    from boto3.s3.transfer import TransferConfig  # with boto3, on the first transfer

    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)

"""Object storage behind one small interface: a local path (or `file://`) and `s3://bucket/key` look alike.

S3 uses the standard AWS environment variables, plus `NEOSFT_S3_ENDPOINT` for S3-compatible servers
(MinIO, Ceph, R2, rclone), which switches to path-style addressing. No other module imports boto3.
Every failure the user can fix (missing object or bucket, refused credentials, unreachable endpoint)
becomes a `UserError` that names the URI and never a secret.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from neosft.errors import UserError

EMBEDDED_STORE = ".neosft/store"  # the embedded default's object store: a local folder, one sub-folder per bucket
EMBEDDED_DATA = f"{EMBEDDED_STORE}/neosft/data"


def location(uri: str | os.PathLike) -> "Location":
    """The `Location` for a local path, a `file://` URI or an `s3://bucket/key` URI."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        if not bucket:
            raise UserError(f"{uri}: an S3 URI needs a bucket, as in s3://bucket/prefix")
        return S3Location(bucket, key.strip("/"))
    if uri.startswith("file://"):
        uri = uri[7:]
    elif "://" in uri:
        raise UserError(f"{uri}: unsupported storage scheme; use a local path or s3://bucket/key")
    return LocalLocation(Path(uri))


class Location:
    """A file or a folder (prefix) in a store. Subclasses implement the same methods."""

    uri: str

    def __truediv__(self, name: str) -> "Location":
        raise NotImplementedError

    def __str__(self) -> str:
        return self.uri

    def upload_dir(self, src: Path) -> None:
        """Copy every file below the local folder `src` under this prefix."""
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            (self / path.relative_to(src).as_posix()).upload(path)

    def download_dir(self, dest: Path) -> None:
        """Copy every file below this prefix into the local folder `dest`."""
        for name in self.list():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (self / name).download(dest / name)

    def delete_dir(self) -> None:
        """Delete every file below this prefix."""
        for name in self.list():
            (self / name).delete()


class LocalLocation(Location):
    def __init__(self, path: Path):
        self.path = path
        self.uri = str(path)

    def __truediv__(self, name: str) -> "LocalLocation":
        return LocalLocation(self.path / name)

    def check(self) -> None:
        """Make sure this folder can be written to."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.uri}: {e.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise UserError(f"{self.uri} is not writable")

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            raise UserError(f"{self.uri} does not exist") from None
        except IsADirectoryError:
            raise UserError(f"{self.uri} is a folder, not a file") from None
        except PermissionError:
            raise UserError(f"{self.uri} is not readable (permission denied)") from None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            raise UserError(f"{self.uri} does not exist") from None

    def exists(self) -> bool:
        return self.path.exists()

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
        """Write atomically: readers see the old content or the new, never a part."""
        with _local_errors(self.uri):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; published files are meant to be read
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def move_from(self, src: Path) -> None:
        """Move a finished local file here atomically (a rename when on the same filesystem)."""
        with _local_errors(self.uri):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, self.path)
            except OSError:  # another filesystem: copy beside the target, then rename
                tmp = self.path.with_name(f".{self.path.name}.part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, self.path)
                os.unlink(src)

    def upload(self, src: Path) -> None:
        """Copy a local file here atomically, keeping `src`."""
        with _local_errors(self.uri):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, self.path)

    def download(self, dest: Path) -> None:
        with _local_errors(self.uri):
            shutil.copyfile(self.path, dest)

    def list(self) -> list[str]:
        """Paths of every file below this folder, relative to it, sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def delete_dir(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def _local_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write {uri}: {e.strerror or e}") from None


class S3Location(Location):
    def __init__(self, bucket: str, key: str):
        self.bucket, self.key = bucket, key
        self.uri = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"

    def __truediv__(self, name: str) -> "S3Location":
        return S3Location(self.bucket, f"{self.key}/{name}" if self.key else name)

    def check(self) -> None:
        """Make sure the bucket exists and the credentials are accepted."""
        try:
            with _s3_errors(self.uri, self.bucket):
                _client().head_bucket(Bucket=self.bucket)
        except UserError as e:
            if isinstance(e.__cause__, _NotFound):
                raise UserError(f"bucket {self.bucket!r} does not exist ({self.uri})") from None
            raise

    def open(self) -> BinaryIO:
        return io.BufferedReader(_S3Reader(self), buffer_size=1 << 20)

    def size(self) -> int:
        try:
            with _s3_errors(self.uri, self.bucket):
                return _client().head_object(Bucket=self.bucket, Key=self.key)["ContentLength"]
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
        with _s3_errors(self.uri, self.bucket):
            _client().put_object(Bucket=self.bucket, Key=self.key, Body=data)

    def move_from(self, src: Path) -> None:
        """Upload a finished local file (multipart when large), then remove the local copy."""
        self.upload(src)
        os.unlink(src)

    def upload(self, src: Path) -> None:
        with _s3_errors(self.uri, self.bucket):
            _client().upload_file(str(src), self.bucket, self.key, Config=_transfer_config())

    def download(self, dest: Path) -> None:
        with _s3_errors(self.uri, self.bucket):
            _client().download_file(self.bucket, self.key, str(dest), Config=_transfer_config())

    def list(self) -> list[str]:
        prefix = f"{self.key}/" if self.key else ""
        names = []
        with _s3_errors(self.uri, self.bucket):
            for page in _client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                names += [obj["Key"][len(prefix) :] for obj in page.get("Contents", ())]
        return sorted(names)

    def delete(self) -> None:
        with _s3_errors(self.uri, self.bucket):
            _client().delete_object(Bucket=self.bucket, Key=self.key)


class _S3Reader(io.RawIOBase):
    """A streaming GET that resumes with a Range request when the connection breaks."""

    RETRIES = 5

    def __init__(self, loc: S3Location):
        self.loc, self.pos, self.body = loc, 0, None
        self._connect()

    def _connect(self) -> None:
        extra = {"Range": f"bytes={self.pos}-"} if self.pos else {}
        with _s3_errors(self.loc.uri, self.loc.bucket):
            self.body = _client().get_object(Bucket=self.loc.bucket, Key=self.loc.key, **extra)["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        from botocore.exceptions import BotoCoreError

        for attempt in range(self.RETRIES + 1):
            try:
                data = self.body.read(len(buf))
                break
            except (BotoCoreError, OSError):
                if attempt == self.RETRIES:
                    raise UserError(f"lost the connection while reading {self.loc.uri}") from None
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


@contextlib.contextmanager
def _s3_errors(uri: str, bucket: str) -> Iterator[None]:
    """Turn botocore failures into one clear `UserError` line."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

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
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden") or status == 403:
            raise UserError(
                f"S3 refused access to {uri} ({code or status}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        raise UserError(f"S3 error on {uri}: {code} {err.get('Message', '')}".rstrip()) from None
    except NoCredentialsError:
        raise UserError(f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
    except EndpointConnectionError:
        raise UserError(f"cannot reach the S3 endpoint {_endpoint() or 'of AWS'} for {uri}") from None


def _endpoint() -> str | None:
    return os.environ.get("NEOSFT_S3_ENDPOINT") or None


@functools.lru_cache(maxsize=None)
def _client_for(endpoint: str | None, region: str, _credentials: tuple):
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", 10))},  # rides out restarts
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _client():
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    credentials = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    return _client_for(_endpoint(), region, credentials)  # a new client when the environment changes


def forget_clients() -> None:
    """Drop cached clients, e.g. in a forked child, which must open its own connections."""
    _client_for.cache_clear()


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)

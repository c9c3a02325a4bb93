"""A local folder or file as a `Location`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from neosft.errors import UserError, path_error
from neosft.storage.base import Location

STAGING_PREFIX = ".neosft-staging-"
_held: dict[Path, int] = {}  # staging folder -> the open lock file that marks it as in use


class LocalLocation(Location):
    def __init__(self, path: Path):
        self.path = path
        self.uri = str(path)

    def __truediv__(self, name: str) -> LocalLocation:
        return LocalLocation(self.path / name)

    def check(self, create: bool = True) -> None:
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot create {self.uri}: {e.strerror}") from None
        elif not self.path.exists():
            raise UserError(f"{self.uri} does not exist")
        if not self.path.is_dir():
            raise UserError(f"{self.uri} is not a folder")
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise UserError(f"{self.uri} is not writable")

    def open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise UserError(path_error(self.uri, e)) from None

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError as e:
            raise UserError(path_error(self.uri, e)) from None

    def exists(self) -> bool:
        try:
            self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as e:  # not "absent": a loop, a name too long, a file where a folder should be
            raise UserError(path_error(self.uri, e)) from None
        return True

    def local_path(self) -> Path | None:
        """The file itself when it is a regular file; a named pipe or a device (/dev/stdin) is streamed once and
        spooled where random access is needed, as remote sources are."""
        try:
            return self.path if stat.S_ISREG(self.path.stat().st_mode) else None
        except OSError:
            return None

    def read_bytes(self) -> bytes:
        with self.open() as f:
            return f.read()

    def write_bytes(self, data: bytes) -> None:
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
        with _local_errors(self.uri):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, self.path)
            except OSError:  # another filesystem: copy beside the target, then rename
                self.upload(src)
                os.unlink(src)

    def upload(self, src: Path) -> None:
        with _local_errors(self.uri):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, self.path)
            except BaseException:  # a full disk: the half copy would keep it full
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def publish_dir(self, src: Path) -> None:
        with _local_errors(self.uri):
            if self.path.exists():  # already published by an identical build: its files are whole
                shutil.rmtree(src)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.rename(src, self.path)  # the staging folder is on this filesystem

    def download(self, dest: Path) -> None:
        with _local_errors(self.uri):
            shutil.copyfile(self.path, dest)

    def list(self, older_than_s: float = 0) -> list[str]:
        if not self.path.is_dir():
            return []
        cutoff = time.time() - older_than_s
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() and (not older_than_s or p.stat().st_mtime < cutoff)
        )

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def delete_dir(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with _local_errors(self.uri), open(self.path / ".neosft-publish.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """`.neosft-staging-<random>` inside this folder, locked (through `<it>.lock` beside it) while in use;
        what killed builds left (unlocked) is removed, running builds' folders never."""
        path = self._new_staging()
        try:
            yield path
        finally:
            _release(path)

    def _new_staging(self) -> Path:
        with _local_errors(self.uri):
            self.path.mkdir(parents=True, exist_ok=True)
            for stale in self.path.glob(f"{STAGING_PREFIX}*"):
                folder = stale.with_suffix("") if stale.suffix == ".lock" else stale
                if folder not in _held and _unlocked(folder):
                    shutil.rmtree(folder, ignore_errors=True)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_lock_file(folder))
            path = self.path / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
            fd = os.open(_lock_file(path), os.O_CREAT | os.O_WRONLY, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _held[path] = fd
            path.mkdir()
            return path


def _release(path: Path) -> None:
    """Remove a staging folder (what is left of it) and drop its lock."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held.pop(path, None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_lock_file(path))
        os.close(fd)


def _lock_file(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _unlocked(folder: Path) -> bool:
    try:
        fd = os.open(_lock_file(folder), os.O_WRONLY)
    except OSError:  # no lock: a build killed before it took one, or one taking it right now
        return time.time() - folder.stat().st_mtime > 60 if folder.exists() else True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def _local_errors(uri: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write {uri}: {e.strerror or e}") from None

"""The abstract interfaces: `Readable` (a file a build reads) and `Location` (a file or folder in a store)."""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, TypeVar

from neosft.errors import Unreachable

T = TypeVar("T")


class Readable(abc.ABC):
    """A file that can be streamed: a stored object, a local file, an HTTPS or Hugging Face Hub file."""

    uri: str
    revision: str | None = None  # the exact version read, where the origin has one (a Hub commit sha)

    def __str__(self) -> str:
        return self.uri

    @abc.abstractmethod
    def open(self) -> BinaryIO:
        """A binary stream of the whole file; a broken connection resumes on the same version or fails clearly."""

    @abc.abstractmethod
    def size(self) -> int:
        """Bytes; a `UserError` when it does not exist."""

    @abc.abstractmethod
    def exists(self) -> bool: ...

    def local_path(self) -> Path | None:
        """The file on this machine's disk, when it is one (random access without a download)."""
        return None


class Location(Readable):
    """A file or a folder (prefix) in a store: a local path or an `s3://` prefix."""

    @abc.abstractmethod
    def __truediv__(self, name: str) -> Location: ...

    @abc.abstractmethod
    def check(self, create: bool = True) -> None:
        """Make sure this folder can be written to; with `create=False`, that it exists, creating nothing."""

    @abc.abstractmethod
    def read_bytes(self) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, data: bytes) -> None:
        """Write atomically: readers see the old content or the new, never a part."""

    @abc.abstractmethod
    def upload(self, src: Path) -> None:
        """Copy a finished local file here atomically, keeping `src`."""

    @abc.abstractmethod
    def move_from(self, src: Path) -> None:
        """Move a finished local file here atomically."""

    @abc.abstractmethod
    def publish_dir(self, src: Path) -> None:
        """Move the finished local folder `src` to this new folder; a reader sees its files only once all are there
        when this location is local (one rename), and each file whole on S3."""

    @abc.abstractmethod
    def download(self, dest: Path) -> None: ...

    @abc.abstractmethod
    def list(self, older_than_s: float = 0) -> list[str]:
        """Paths of every file below this folder, relative to it, sorted; with `older_than_s`, only files
        last written more than that many seconds ago."""

    @abc.abstractmethod
    def delete(self) -> None: ...

    @abc.abstractmethod
    def staging(self) -> AbstractContextManager[Path]:
        """A new local folder, unique to the caller, for files to be published under this location, removed
        on exit. A local store keeps it on the same filesystem (publishing is a rename) and hidden."""

    # Publishing: how long a file another build just published here is safe from this build's clean-up.
    # Local builds stage in hidden folders and publish under `lock()`; S3 has neither, so it waits.
    CLEANUP_GRACE_S: float = 0

    @abc.abstractmethod
    def lock(self) -> AbstractContextManager[None]:
        """Exclusive among builds publishing into this folder where the store can lock (local); else a no-op."""

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


def patiently(action: Callable[[], T], log: Callable[[str], None]) -> T:
    """`action()`, tried again while the store is unreachable, for up to NEOSFT_STORE_PATIENCE_S seconds (600).

    For writes worth waiting for (a checkpoint, the final loss log): a store that restarts or flaps for a
    few minutes costs a pause, not the run.
    """
    deadline = time.monotonic() + float(os.environ.get("NEOSFT_STORE_PATIENCE_S", 600))
    pause = 2.0
    while True:
        try:
            return action()
        except Unreachable as e:
            if time.monotonic() + pause > deadline:
                raise
            log(f"{e}; trying again in {pause:g} s")
            time.sleep(pause)
            pause = min(pause * 2, 60.0)

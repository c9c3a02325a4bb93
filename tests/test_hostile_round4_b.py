"""Hostile round 4 (issue 27), items 11 to 22: every artifact checked when read back, the new options, secrets
and terminals, and the faults left from earlier rounds."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading

import pytest
from conftest import assert_user_error, neosft
from test_hostile_round3 import serving

SECRET = "pw-that-must-never-show"


def neosft_with(setup: str, *args) -> subprocess.CompletedProcess:
    """`neosft ARGS` in a subprocess that first runs `setup` (a test's internal setting, e.g. a short deadline)."""
    code = f"{setup}\nfrom neosft.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)


# --- F. secrets and terminals ----------------------------------------------------------------------------------


def test_run_refuses_credentials_in_its_store_uri_unechoed():
    """Item 18: as `data build` does, before any work; the secret is printed nowhere."""
    result = neosft("run", "--store", f"s3://KEY:{SECRET}@bucket/prefix")
    assert_user_error(result, "credentials", "AWS_ACCESS_KEY_ID")
    assert SECRET not in result.stderr + result.stdout


# --- G. left from earlier rounds -------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_source_trickling_its_headers_ends_at_the_deadline_in_one_line(tmp_path):
    """Item 22: the deadline for a status line and headers holds for the request, not once per retry (the old
    code asked 4 times, each with a fresh deadline). The server never completes its headers."""
    stop, requests = threading.Event(), []

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            requests.append(self.command)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + b"X-Pad: " + b"x" * 100_000:
                if stop.wait(0.02):  # a byte per interval, until the test ends
                    return
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    with serving(Trickle) as url:
        try:
            result = neosft_with(
                "import neosft.storage.http as h; h.DEADLINE_S = 0.5",
                "data", "build", f"{url}/c.json", "--out", tmp_path / "o",
            )  # fmt: skip
        finally:
            stop.set()
    assert_user_error(result, "within 0.5 s", "headers")
    assert len(requests) == 1, requests


def test_status_prints_an_event_message_escaped(kube):
    """Item 19: an Event's reason and message (any client may write them) cannot drive the terminal."""
    from kube_api import event

    assert neosft("submit", "--run-id", "r1").returncode == 0
    [job] = kube.objects["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"].values()
    hostile = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202e\x9b"
    kube.add("ml", "events", event(job, "Bad\x1b[1m", hostile, 1))
    result = neosft("status", "r1")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stdout for c in "\x1b\x07\u202e\x9b"), repr(result.stdout)
    assert "Bad\\x1b[1m: \\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred\\u202e\\x9b" in result.stdout

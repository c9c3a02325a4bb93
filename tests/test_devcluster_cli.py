"""scripts/devcluster's faults without a build: bad arguments, a busy port, no Go, a DIR that is not up."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "devcluster"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_unknown_command_is_refused():
    done = run("sideways", "--dir", "/tmp/x")
    assert done.returncode == 2 and "invalid choice" in done.stderr and "Traceback" not in done.stderr


def test_port_base_out_of_range_is_refused(tmp_path):
    done = run("up", "--dir", str(tmp_path), "--port-base", "80")
    assert done.returncode == 2 and "--port-base" in done.stderr


def test_busy_port_is_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = run("up", "--dir", str(tmp_path / "c"), "--port-base", str(port - 2))
    assert done.returncode == 2
    assert done.stderr.strip() == f"devcluster: port {port} on 127.0.0.1 is busy (choose another --port-base)"
    assert not (tmp_path / "c" / "state.json").exists()


def test_no_go_is_one_line(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    if subprocess.run(["sh", "-c", "command -v go"], env=env, capture_output=True).returncode == 0:
        pytest.skip("go is on /usr/bin or /bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    done = run("up", "--dir", str(tmp_path / "c"), "--port-base", str(free), env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("devcluster: no Go on PATH")


def test_status_and_down_of_a_dir_never_up(tmp_path):
    status = run("status", "--dir", str(tmp_path))
    assert status.returncode == 2 and "is not up" in status.stderr
    down = run("down", "--dir", str(tmp_path))
    assert down.returncode == 0 and "nothing of ours" in down.stdout


def test_down_never_stops_a_process_it_did_not_start(tmp_path):
    """A recorded pid now held by another process (its start time differs) survives `down`."""
    import json

    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = {"name": "etcd", "argv": ["etcd"], "port": 1, "health": "tcp", "version": "v3.6.8"}
        record |= {"pid": stranger.pid, "start_time": 1}
        (tmp_path / "state.json").write_text(json.dumps([record]))
        down = run("down", "--dir", str(tmp_path))
        assert down.returncode == 0
        assert stranger.poll() is None
        status = run("status", "--dir", str(tmp_path))
        assert "not up" in status.stderr
    finally:
        stranger.kill()
        stranger.wait()

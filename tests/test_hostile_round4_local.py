"""Hostile round 4 (issue 27), items 1-10: a local run has one live owner, the local backend's own files, and
resume checks what it resumes. Each test drives a real `neosft run` (its data Job blocked on a named pipe
that nobody writes, so it stays Running until the test acts) and waits on files and process states."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neosft.backends import pods

ROOT = Path(__file__).resolve().parents[1]
RUN = "r4"


def _env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), **os.environ}  # a PYTHONPATH given (another checkout) wins


def neosft(cwd: Path, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "neosft", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def until(condition, what: str, timeout: float = 120):
    """Poll `condition` (a file's or a process's state) until it holds; fail naming `what` past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def states(cwd: Path) -> dict:
    try:
        return json.loads((cwd / ".neosft" / "runs" / RUN / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def running_pod(cwd: Path, other_than: int | None = None) -> dict | None:
    """The data Job's state entry once it is Running (with a pid other than `other_than`)."""
    entry = states(cwd).get(f"Job/neosft-{RUN}-data", {})
    return entry if entry.get("state") == "Running" and entry.get("pid") != other_than else None


def alive(pid: int) -> bool:
    return pods.started_at(pid) is not None


class Runs:
    """`neosft run` processes of one run id in `cwd`, their data Job reading a named pipe nobody writes."""

    def __init__(self, cwd: Path):
        self.cwd, self.started = cwd, []
        self.fifo = cwd / "corpus.jsonl"
        os.mkfifo(self.fifo)

    def start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neosft", "run", "--source", str(self.fifo), "--variant", "single"]
            + ["--steps", "2", "--run-id", RUN],
            cwd=self.cwd,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def children(self, proc: subprocess.Popen) -> list[int]:
        """The processes `proc` started (its pods and its S3 server)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2 :].split()[1]) == proc.pid:
                found.append(int(stat.parent.name))
        return found

    def close(self) -> None:
        """Leave nothing running, whatever the code under test left."""
        pids = [pid for p in self.started for pid in self.children(p)]
        pids += [e["pid"] for e in states(self.cwd).values() if "pid" in e]
        for proc in self.started:
            proc.kill()
            proc.communicate()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it may end between the look and the kill
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runs(tmp_path):
    found = Runs(tmp_path)
    yield found
    found.close()


def test_a_second_run_of_one_id_is_refused_while_the_first_lives_and_resumes_once_it_died(runs):
    first = runs.start()
    pod = until(lambda: running_pod(runs.cwd), "the first run's data Job")

    second = neosft(runs.cwd, "run", "--source", str(runs.fifo), "--variant", "single", "--run-id", RUN, timeout=60)
    assert second.returncode == 2 and "already running" in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and running_pod(runs.cwd) == pod  # the first's state intact

    first.kill()  # dies without a word: the kernel frees its lock
    first.communicate()
    third = runs.start()
    resumed = until(lambda: running_pod(runs.cwd, other_than=pod["pid"]), "the resumed run's data Job")
    assert not alive(pod["pid"]) and alive(resumed["pid"])  # the dead owner's pod stopped, the run running again
    third.send_signal(signal.SIGTERM)
    third.communicate(timeout=60)


def test_a_reused_pid_is_neither_reported_running_nor_signalled(tmp_path, monkeypatch):
    from neosft.backends import backend_for

    monkeypatch.chdir(tmp_path)
    with backend_for(local=True, store=str(tmp_path / "store")) as backend:
        run = backend.render({"train": {"enabled": False}, "data": {"source": "sample"}}, RUN, None, print)
        [name] = backend.submit(run, print, print)
        ours = subprocess.Popen(["sleep", "600"], start_new_session=True)
        backend._set_state(RUN, name, "Running", print, pid=ours.pid)  # as `wait` records its pod
    ours.kill()
    ours.wait()
    path = tmp_path / ".neosft" / "runs" / RUN / "state.json"
    recorded = json.loads(path.read_text())
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    while pods.started_at(stranger.pid) == recorded[name]["started"]:  # the same clock tick: not yet another process
        stranger.kill()
        stranger.wait()
        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        recorded[name]["pid"] = stranger.pid  # the kernel gave our dead pod's pid to another process
        path.write_text(json.dumps(recorded))
        found = backend_for(RUN)
        assert found.status(RUN).parts[0].state == "Stopped"
        found.delete(RUN)
        assert stranger.poll() is None  # never signalled
    finally:
        stranger.kill()
        stranger.wait()


def test_deleting_a_running_run_ends_its_waiter_in_one_line(runs):
    waiter = runs.start()
    pod = until(lambda: running_pod(runs.cwd), "the data Job")
    deleted = neosft(runs.cwd, "delete", RUN)
    assert deleted.returncode == 0, deleted.stderr
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].endswith(f"run {RUN} was deleted (`neosft delete {RUN}`)"), err
    assert not alive(pod["pid"]) and not (runs.cwd / ".neosft" / "runs" / RUN).exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_waiter_stops_what_it_started_and_records_it(runs, sig):
    waiter = runs.start()
    pod = until(lambda: running_pod(runs.cwd), "the data Job")
    started = runs.children(waiter)  # the S3 server and the pod
    assert pod["pid"] in started and len(started) >= 2
    waiter.send_signal(sig)
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 130 and "Traceback" not in err
    assert [pid for pid in started if alive(pid)] == []
    assert states(runs.cwd)[f"Job/neosft-{RUN}-data"]["state"] == "Stopped"


def test_a_part_left_pending_by_a_dead_waiter_is_reported_and_its_log_ends(tmp_path, monkeypatch):
    from neosft.backends import backend_for

    monkeypatch.chdir(tmp_path)
    values = {"train": {"enabled": False}, "data": {"source": "sample"}}
    with backend_for(local=True, store=str(tmp_path / "store")) as backend:
        backend.submit(backend.render(values, RUN, None, print), print, print)
        backend.wait(RUN, print, 600)  # a finished first attempt: its log is there
    script = (
        "import sys; from neosft.backends import backend_for\n"
        f"b = backend_for(local=True, store={str(tmp_path / 'store')!r})\n"
        f"b.submit(b.render({values!r}, {RUN!r}, None, print), print, print)\n"
        "print('submitted', flush=True); sys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        until(lambda: owner.stdout and owner.stdout.readline() == b"submitted\n", "the second attempt's submit")
        owner.kill()  # dies before it starts its pod: the part stays Pending
        owner.wait()
        status = backend_for(RUN).status(RUN)
        assert [p.state for p in status.parts] == ["Stopped"] and "is gone" in " ".join(status.problems)
        follow = neosft(tmp_path, "logs", RUN, "--variant", "data", "--follow", timeout=60)
        assert follow.returncode == 0 and "manifest.json" in follow.stdout
    finally:
        owner.kill()
        owner.wait()


def test_deleting_a_run_keeps_the_logs_of_a_run_whose_id_it_prefixes(tmp_path, monkeypatch):
    from neosft.backends import backend_for

    monkeypatch.chdir(tmp_path)
    values = {"train": {"enabled": False}, "data": {"source": "sample"}}
    with backend_for(local=True, store=str(tmp_path / "store")) as backend:
        for run_id in ("job", "job-2"):
            backend.submit(backend.render(values, run_id, None, print), print, print)
            log = backend._log(run_id, "data")  # as `wait` writes a pod's log
            pods.start_logged(pods.Process("build", ["true"], {}), log, {}).wait()
    backend_for("job").delete("job")
    assert not (tmp_path / ".neosft/logs/job-data.log").exists()
    assert (tmp_path / ".neosft/logs/job-2-data.log").exists() and backend_for("job-2").status("job-2")


def _limited(limit: int):
    """A child's file size limit (a full disk, as writes see it: EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_file_where_the_work_folder_should_be_is_one_line_naming_it(tmp_path):
    (tmp_path / ".neosft").write_text("not a folder")
    result = neosft(tmp_path, "run", "--source", "sample", "--run-id", RUN)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert ".neosft" in line


def test_a_full_disk_under_the_work_folder_is_one_line_naming_the_file(tmp_path):
    result = neosft(tmp_path, "run", "--source", "sample", "--run-id", RUN, preexec_fn=_limited(100))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after the run's progress
    assert ".neosft/runs/r4/" in line and "too large" in line


def test_a_tiny_model_cut_short_by_a_full_disk_leaves_nothing_taken_as_made(tmp_path):
    dest = tmp_path / "models" / "tiny"
    script = (
        "import sys; from neosft.train.tiny import make_tiny_qwen2\n"
        "make_tiny_qwen2(sys.argv[1], ['a small corpus of words'] * 20)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(dest)],
        cwd=tmp_path,  # not the checkout: `-c` imports from the working folder first
        env=_env(),
        capture_output=True,
        text=True,
        preexec_fn=_limited(100_000),  # the tokenizer fits, the weights do not
        timeout=300,
    )
    assert result.returncode != 0
    assert list((tmp_path / "models").iterdir()) == []


def test_a_failed_write_to_a_local_store_removes_its_part_file(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 1_000_000)
    store = tmp_path / "store"
    store.mkdir()
    script = "import sys, pathlib; from neosft.storage import location\nlocation(sys.argv[2]).upload(pathlib.Path(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", script, str(src), str(store / "big.bin")],
        cwd=tmp_path,  # not the checkout: `-c` imports from the working folder first
        env=_env(),
        capture_output=True,
        text=True,
        preexec_fn=_limited(100_000),
        timeout=120,
    )
    assert result.returncode != 0 and "cannot write" in result.stderr
    assert list(store.iterdir()) == []


def test_a_checkpoint_made_by_another_run_is_refused_in_one_line_saying_what_differs(tmp_path):
    from neosft.errors import UserError
    from neosft.storage import location
    from neosft.train.checkpoints import CheckpointUploader, resume_point

    output = location(str(tmp_path / "output"))
    staged = tmp_path / "staged" / "checkpoint-2"
    staged.mkdir(parents=True)
    (staged / "adapter_model.safetensors").write_bytes(b"weights")
    made_by = {"variant": "single", "model": "m", "dataset_sha256": "a" * 64, "method": "lora", "lora.rank": 16}
    CheckpointUploader(output, 2, lambda: b"", made_by)._upload(staged, "checkpoint-2")  # as training saves it

    assert resume_point(output, tmp_path / "work", made_by) == tmp_path / "work" / "checkpoints" / "checkpoint-2"
    other = {**made_by, "dataset_sha256": "b" * 64, "lora.rank": 8}
    with pytest.raises(UserError) as refused:
        resume_point(output, tmp_path / "work", other)
    message = str(refused.value)
    assert (
        f'dataset_sha256 "{"a" * 64}" there, "{"b" * 64}" here' in message and "lora.rank 16 there, 8 here" in message
    )
    assert f"delete {output}/checkpoints" in message and "\n" not in message


@pytest.mark.slow
def test_train_resumes_only_a_checkpoint_of_the_same_method_settings_and_dataset(tmp_path, tiny_model, sample_dataset):
    from conftest import neosft as train

    from neosft.data.build import build
    from neosft.sample import SAMPLE_CORPUS

    out = tmp_path / "out"  # each `neosft` runs in tmp_path: `-m` imports from the working folder first
    common = ["train", "--variant", "single", "--output", out, "--model", tiny_model, "--deepspeed", "none"]
    common += ["--max-steps", "2", "--save-steps", "1", "--work-dir", tmp_path / "work"]
    first = train(*common, "--data", sample_dataset, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    shutil.rmtree(out / "final")  # as if killed after its checkpoint: resumable, not finished
    assert (out / "checkpoints" / "checkpoint-1" / "COMPLETE.json").exists()

    other_rank = train(*common, "--data", sample_dataset, "--lora-rank", "8", cwd=tmp_path)
    assert other_rank.returncode == 2 and "Traceback" not in other_rank.stderr, other_rank.stderr[-2000:]
    assert "lora.rank 16 there, 8 here" in other_rank.stderr.strip().splitlines()[-1]

    other_data = tmp_path / "other-data"
    build(str(SAMPLE_CORPUS), str(other_data), ["single"], holdout="10")
    another = train(*common, "--data", other_data, cwd=tmp_path)
    assert another.returncode == 2 and "dataset_sha256" in another.stderr.strip().splitlines()[-1]
    assert not (out / "final").exists()  # nothing trained on the other dataset

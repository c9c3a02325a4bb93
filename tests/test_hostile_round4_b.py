"""Hostile round 4 (issue 27), items 11 to 22: every artifact checked when read back, the new options, secrets
and terminals, and the faults left from earlier rounds."""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import assert_user_error, neosft
from test_hostile_round3 import serving

from neosft.artifacts import EvalRecord, LossRecord, LossSummary, losses_jsonl
from neosft.errors import UserError

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


# --- D. every artifact is checked when read back ----------------------------------------------------------------


def loss_record(step: int, loss: float) -> LossRecord:
    return LossRecord(step, 2, 0.5 * step, 100 * step, 10.0, 50.0 * step, 1.0 * step, "0:00:01", "0:00:01", loss=loss)


def eval_record(loss: float) -> EvalRecord:
    summary = LossSummary(loss, math.exp(loss) if math.isfinite(loss) else loss, 40, 2)
    return EvalRecord(
        "single", "lora", "out/final", "data", "0" * 64, 1024, summary, [loss * 20, loss * 20], [20, 20],
        {"single": summary}, [{"prompt": "q", "answer": "a"}], 1, 1.0, 10.0, "0",
    )  # fmt: skip


def a_run(root: Path, loss: float, record: bytes | None = None) -> Path:
    """<root>/runs/r1/single as the trainer and `neosft eval` write it (the real writers), `loss` its every loss."""
    output = root / "runs" / "r1" / "single"
    output.mkdir(parents=True)
    (output / "loss.jsonl").write_bytes(losses_jsonl([loss_record(1, loss), loss_record(2, loss)]))
    (output / "eval.json").write_bytes(record if record is not None else eval_record(loss).to_json())
    return output


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda r: r["chat"].update(loss="0.5"), "chat.loss"),
        (lambda r: r.update(samples={"prompt": "q"}), "samples"),
        (lambda r: r["samples"].append({"prompt": 1, "answer": "a"}), "samples[1].prompt"),
        (lambda r: r["chat"].update(loss=1e308), "chat.loss"),
        (lambda r: r["matrix"]["single"].update(tokens=-1), "matrix.single.tokens"),
    ],
)
@pytest.mark.parametrize("command", ["compare", "status"])
def test_an_eval_record_of_wrong_types_is_one_line_naming_it(tmp_path, change, needle, command):
    """Item 14: the eval record has the typed checks of every other reader."""
    raw = json.loads(eval_record(0.5).to_json())
    change(raw)
    a_run(tmp_path, 0.5, json.dumps(raw).encode())
    args = ("compare", tmp_path / "runs" / "r1") if command == "compare" else ("status", "r1", "--store", tmp_path)
    assert_user_error(neosft(*args), "eval.json", needle)


def test_a_diverged_run_reads_back_and_shows_as_diverged(tmp_path):
    """Item 15: NaN losses, as the trainer and `neosft eval` write them, are read back and shown as diverged by
    `plot`, `status --store` and `compare` (whose chat loss plot once crashed on them), never refused."""
    output = a_run(tmp_path, math.nan)
    assert b"NaN" in (output / "loss.jsonl").read_bytes()  # what the writer writes
    plotted = neosft("plot", output, "--out", tmp_path / "p.png")
    assert plotted.returncode == 0, plotted.stderr
    status = neosft("status", "r1", "--store", tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[1:3] == ["2/2", "diverged"], status.stdout
    compared = neosft("compare", tmp_path / "runs" / "r1")
    assert compared.returncode == 0, compared.stderr
    assert "diverged" in compared.stdout
    assert (tmp_path / "runs" / "r1" / "eval.png").read_bytes().startswith(b"\x89PNG")


# --- E. the new options ------------------------------------------------------------------------------------------


def test_reilx_single_rows_holding_nan_or_infinity_are_left_out_and_counted(tmp_path, capsys):
    """Item 16: REILX's `single` script copies a NaN or Infinity as found, and `json.dump` writes it as the bare
    word; the trainer leaves such rows out and counts them, as it does other rows that are not of strings."""
    from neosft.data.build import build
    from neosft.train.dataset import manifest_entry, rows

    qa = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    records = [{"conversations": qa}, {"conversations": [{**qa[0], "value": math.nan}, qa[1]]}]
    records.append({"conversations": [qa[0], {**qa[1], "value": math.inf}]})
    (tmp_path / "c.json").write_text(json.dumps(records))
    build(str(tmp_path / "c.json"), str(tmp_path / "d"), rules="reilx")
    _, entry = manifest_entry(str(tmp_path / "d"), "single")
    assert entry.rows == 3  # the script wrote all three
    assert list(rows(str(tmp_path / "d"), "single", entry, reilx=True)) == [{"instruction": "q", "output": "a"}]
    assert "warning: 2 single rows hold a value that is not a string" in capsys.readouterr().err


def test_eval_of_a_local_run_reads_its_dataset_in_the_store_folder(tmp_path):
    """Item 12: a local run's record names its dataset as the pods saw it, s3://neosft/data/RUN; `neosft eval
    OUTPUT` reads it in the store folder that holds OUTPUT, with no S3 credentials (see also test_run.py)."""
    from neosft.data.build import build
    from neosft.eval.evaluate import read_heldout
    from neosft.eval.outputs import dataset_of

    bucket = tmp_path / "store" / "neosft"
    build("sample", str(bucket / "data" / "r1"), holdout="10%")
    output = bucket / "runs" / "r1" / "single"
    output.mkdir(parents=True)
    assert dataset_of("s3://neosft/data/r1", str(output)) == str(bucket / "data" / "r1")
    assert read_heldout(dataset_of("s3://neosft/data/r1", str(output))).conversations
    assert dataset_of("s3://neosft/data/r2", str(output)) == "s3://neosft/data/r2"  # not here: as recorded
    assert dataset_of("s3://neosft/data/r1", "s3://b/runs/r1/single") == "s3://neosft/data/r1"


@pytest.fixture(scope="module")
def held_dataset(tmp_path_factory) -> Path:
    from neosft.data.build import build

    folder = tmp_path_factory.mktemp("held") / "d"
    build("sample", str(folder), holdout="20%")
    return folder


def damaged(held_dataset: Path, tmp_path: Path, change) -> str:
    """A copy of the dataset that `change(folder, manifest as JSON)` damaged."""
    import shutil

    folder = tmp_path / "d"
    shutil.copytree(held_dataset, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(folder, manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def truncate(folder: Path, manifest: dict) -> None:
    path = folder / manifest["heldout"]["file"]
    path.write_bytes(path.read_bytes()[:-40])


def drop_last_line(folder: Path, manifest: dict) -> None:
    path = folder / manifest["heldout"]["variants"]["single"]["files"][0]
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))


def a_bad_record(folder: Path, manifest: dict) -> None:  # under a matching sha256: the shape is checked too
    path = folder / manifest["heldout"]["file"]
    path.write_bytes(b'{"conversations": 7}\n' + path.read_bytes())
    manifest["heldout"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def a_bad_row(folder: Path, manifest: dict) -> None:
    path = folder / manifest["heldout"]["variants"]["single"]["files"][0]
    path.write_bytes(b'{"instruction": 1, "output": "a"}\n' + path.read_bytes())
    manifest["heldout"]["variants"]["single"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def outside(folder: Path, manifest: dict) -> None:
    manifest["heldout"]["file"] = "../../etc/passwd"


def training_rows(folder: Path, manifest: dict) -> None:
    manifest["heldout"]["variants"]["single"] = manifest["variants"]["single"]


@pytest.mark.parametrize(
    "change, needle",
    [
        (truncate, "truncated"),
        (drop_last_line, "sha256"),
        (a_bad_record, "not a conversation"),
        (a_bad_row, "not a row"),
        (outside, "leaves the dataset folder"),
        (training_rows, "holds training rows"),
    ],
)
def test_held_out_files_are_checked_before_scoring(held_dataset, tmp_path, change, needle):
    """Item 11: sha256 and shape, paths inside the dataset, no training rows; each one line naming the problem."""
    from neosft.eval.evaluate import read_heldout

    folder = damaged(held_dataset, tmp_path, change)
    with pytest.raises(UserError, match=needle) as refused:
        read_heldout(folder)
    assert "\n" not in str(refused.value)
    assert read_heldout(str(held_dataset)).conversations  # the undamaged dataset reads


@pytest.mark.parametrize(
    "setting, needle",
    [("train.lora.rank=100000000", "--lora-rank 100000000: above 512"), ("train.lora.target=no_such_proj", "no_such")],
)
def test_lora_settings_are_bound_by_the_architecture_at_submit(setting, needle):
    """Item 17: a rank above the smallest side of a wrapped module (Qwen2-7B's k_proj: 3584 x 512), a target the
    architecture lacks: refused at submit, from the table, before any pod."""
    assert_user_error(neosft("submit", "--dry-run", "--set", setting), "train.lora", needle)
    assert neosft("submit", "--dry-run", "--set", "train.lora.rank=512").returncode == 0


def test_a_lora_rank_above_the_models_dimensions_is_one_line_at_train(sample_dataset, tiny_model, tmp_path):
    """Item 17: `train --lora-rank 100000000` once ended in an allocation traceback."""
    args = ["train", "--variant", "single", "--data", sample_dataset, "--output", tmp_path / "o", "--model", tiny_model]
    result = neosft(*args, "--deepspeed", "none", "--work-dir", tmp_path / "w", "--lora-rank", "100000000")
    assert_user_error(result, "--lora-rank 100000000: above")
    assert not (tmp_path / "o" / "final").exists()

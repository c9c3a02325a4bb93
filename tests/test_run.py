"""`neosft run`: the whole pipeline on one machine, through a real local S3 server."""

import os
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from conftest import assert_user_error, neosft

from neosft.artifacts import EvalRecord, Manifest, RunRecord, read_losses
from neosft.storage import location


@pytest.mark.slow
def test_run_builds_trains_and_plots_where_a_cluster_run_would(tmp_path):
    store = tmp_path / "store"
    cache = {
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/neosft-torch-ext"))
    }
    result = neosft(
        "run", "--variant", "single", "--steps", "4", "--store", store, "--run-id", "r1", cwd=tmp_path, env=cache
    )
    assert result.returncode == 0, result.stderr[-3000:]
    bucket = store / "neosft"
    manifest = Manifest.read(str(bucket / "data" / "r1"))
    assert manifest.build_id == "r1" and set(manifest.variants) == {"conversations", "multi", "single", "all_pair"}
    run = bucket / "runs" / "r1"
    losses = read_losses((run / "single" / "loss.jsonl").read_bytes())
    assert [r.current_steps for r in losses] == [1, 2, 3, 4]
    record = RunRecord.read(location(run / "single"))
    assert record.variant == "single" and record.overrides["gradient_accumulation_steps"] == 8  # the visible override
    assert record.batch["overridden"] == ["gradient_accumulation_steps"] and record.batch["total_train_batch"] == 8
    assert record.dataset["uri"] == "s3://neosft/data/r1"  # the run's own dataset
    assert (run / "single" / "loss.png").read_bytes()[:4] == (run / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    row = next(line for line in result.stdout.splitlines() if line.startswith("single"))
    assert row.split()[1:3] == [str(manifest.variants["single"].rows), "4"]
    assert "skipped: malformed 5, no_rounds 2, bad_turn_order 2, empty_turn 2" in result.stdout
    # the held-out records: in no variant, scored by the trained model and the base, compared
    assert manifest.heldout.records == 48
    base = EvalRecord.read(location(run / "base"))
    assert base.method == "base" and base.chat.tokens == EvalRecord.read(location(run / "single")).chat.tokens
    assert "chat loss on the held-out conversations" in result.stdout and (run / "eval.png").exists()
    assert "| single |" in (run / "comparison.md").read_text()
    assert "chat loss [95 %]" in result.stdout and "vs base [95 %]" in result.stdout  # the intervals, and a verdict:
    verdicts = [
        line for line in result.stdout.splitlines() if "over 48 conversations." in line or "vs base: no" in line
    ]
    assert len(verdicts) == 1 and "single" in verdicts[0] and "base" in verdicts[0]
    assert "neosft-local-secret" not in result.stdout + result.stderr  # the local server's key stays in the environment

    status = neosft("status", "r1", "--store", store)  # what the trainer wrote, read back with no cluster
    assert status.returncode == 0, status.stderr
    header, single = status.stdout.splitlines()
    assert header.split() == ["VARIANT", "STEP", "LOSS", "TOKENS/S", "ELAPSED", "ETA", "CHAT", "LOSS"]
    assert single.split()[:3] == ["single", "4/4", f"{losses[-1].loss:.4f}"]
    evaluated = EvalRecord.read(location(run / "single"))
    assert single.split()[-1] == f"{evaluated.chat.loss:.4f}"
    plotted = neosft("plot", run / "single", "--out", tmp_path / "single.png")
    assert plotted.returncode == 0 and (tmp_path / "single.png").read_bytes()[:4] == b"\x89PNG"
    assert_user_error(neosft("status", "r2", "--store", store), "no run r2 in")
    # `neosft eval OUTPUT` exactly as its --help shows it: the run's s3://neosft/data/r1 is read in the store folder
    unset = {k: "" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    again = neosft("eval", run / "single", "--samples", "1", "--max-new-tokens", "2", cwd=tmp_path, env=unset)
    assert again.returncode == 0 and "single" in again.stdout, again.stderr[-2000:]

    # it ran what the chart renders: the manifests kept in the run folder hold the command that ran (a TrainJob:
    # its runtime's torchrun, with the TrainJob's arguments and the rendezvous Trainer's torch plugin injects)
    kept = [o for o in yaml.safe_load_all((run / "manifests.yaml").read_text()) if o]
    [job] = [o for o in kept if o["kind"] == "TrainJob"]
    [runtime] = [o for o in kept if o["kind"] == "TrainingRuntime"]
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"
    ]
    rendered = node["command"] + job["spec"]["trainer"]["args"]
    ran = shlex.split((tmp_path / ".neosft" / "logs" / "r1-single.log").read_text().splitlines()[0][2:])
    port = next(arg for arg in ran if arg.startswith("--master-port=")).split("=")[1]
    assert ran[3:] == [
        arg.replace("$(PET_NODE_RANK)", "0")
        .replace("$(PET_MASTER_ADDR)", "127.0.0.1")
        .replace("$(PET_MASTER_PORT)", port)
        for arg in rendered[1:]
    ]
    assert ran[:3] == [sys.executable, "-m", "torch.distributed.run"] and rendered[0] == "torchrun"

    again = neosft(
        "run", "--variant", "single", "--steps", "4", "--store", store, "--run-id", "r1", cwd=tmp_path, env=cache
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert RunRecord.read(location(run / "single")) == record  # complete: not trained again
    assert "holds a finished run" in (tmp_path / ".neosft" / "logs" / "r1-single.log").read_text()

    # status, logs and delete find the local run as they find a cluster run
    no_cluster = {"KUBECONFIG": str(tmp_path / "no-kubeconfig")}
    shown = neosft("status", "r1", cwd=tmp_path, env=no_cluster)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[1]: line.split() for line in shown.stdout.splitlines()[1:]}
    assert rows["neosft-r1-single"][:4] == ["TrainJob", "neosft-r1-single", "single", "Succeeded"]
    assert " ".join(rows["neosft-r1-single"][-4:]) == f"{losses[-1].loss:.4f} @ step 4/4"
    assert rows["neosft-r1-data"][:4] == ["Job", "neosft-r1-data", "data", "Succeeded"]
    printed = neosft("logs", "r1", "--variant", "single", cwd=tmp_path, env=no_cluster)
    assert printed.returncode == 0 and "wrote s3://neosft/runs/r1/single/final" in printed.stdout
    deleted = neosft("delete", "r1", cwd=tmp_path, env=no_cluster)
    assert deleted.returncode == 0 and "deleted TrainJob/neosft-r1-single" in deleted.stdout
    assert not (tmp_path / ".neosft" / "runs" / "r1").exists() and (run / "single" / "loss.jsonl").exists()
    assert_user_error(neosft("status", "r1", cwd=tmp_path, env=no_cluster), "no Kubernetes configuration")


def test_a_failed_data_build_is_one_line(tmp_path):
    result = neosft(
        "run",
        "--variant",
        "single",
        "--source",
        tmp_path / "missing.json",
        "--store",
        tmp_path / "store",
        "--run-id",
        "r1",
        cwd=tmp_path,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [
        lines[-1]
    ] and "missing.json does not exist" in lines[-1]
    assert not (tmp_path / "store" / "neosft" / "runs" / "r1" / "single").exists()  # nothing trained


def test_run_rules_reach_the_data_job_it_renders(tmp_path):
    from neosft.k8s.manifests import manifests
    from neosft.run import values

    objects = manifests(values(["single"], "sample", 4, tmp_path / "model", rules="reilx", holdout="0"), "r1", "local")
    [job] = [o for o in objects if o["kind"] == "Job"]
    [build] = job["spec"]["template"]["spec"]["initContainers"]
    assert build["args"][:3] == ["data", "build", "sample"] and build["args"][-3:] == [
        "--rules",
        "reilx",
        "--holdout=0",
    ]


def test_run_reilx_sets_the_rules_and_method_itself(tmp_path):
    for flag, value in (("--rules", "seed"), ("--method", "full")):
        result = neosft("run", "--reilx", flag, value, "--store", tmp_path / "store", cwd=tmp_path)
        assert_user_error(result, f"--reilx sets {flag} itself")
    assert not (tmp_path / "store").exists()

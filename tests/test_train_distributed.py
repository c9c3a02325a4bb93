"""`neosft train` for real: two ranks under torchrun (gloo), DeepSpeed ZeRO-3 and ZeRO-2, plain DDP,
outputs in the local S3 server, and a run killed with SIGKILL that resumes to the same losses; full fine-tuning
and LoRA."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from neosft.artifacts import Manifest, RunRecord, read_losses, train_losses
from neosft.data.build import build
from neosft.sample import SAMPLE_CORPUS
from neosft.storage import location
from neosft.storage import s3 as storage
from neosft.variants import VARIANTS

pytestmark = pytest.mark.slow

STEPS, SAVE = 12, 4
QUICK = ["--set", "cutoff_len=256", "--set", "gradient_accumulation_steps=2", "--set", "learning_rate=1e-3"]


def torchrun(*args, env: dict, log: Path, **popen) -> subprocess.Popen:
    """Two CPU ranks of `neosft train`, one thread each; output goes to `log`."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        **env,
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/neosft-torch-ext")),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *map(str, args)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        **popen,
    )


def kill_pod(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every process below it, as a pod's end does (its workers run in sessions of their own)."""

    def tree(pid: int) -> list[int]:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return [pid]
        return [pid, *(p for child in children for p in tree(int(child)))]

    for pid in tree(proc.pid):
        with contextlib.suppress(ProcessLookupError):  # it ended between the listing and the kill: as wanted
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def finished(proc: subprocess.Popen, log: Path, timeout: int = 240) -> None:
    if proc.wait(timeout) != 0:
        text = log.read_text()
        errors = [line for line in text.splitlines() if line.startswith("error: ") or "Error" in line[:40]]
        raise AssertionError("\n".join(errors[:10]) + "\n...\n" + text[-3000:])


# LoRA's update starts at zero (lora_B = 0): on a random tiny model it needs a higher rate to show its loss going down
LORA_QUICK = ["--set", "learning_rate=5e-3"]


def train_args(data, output, model, work, *extra, method="full"):
    return [
        "-m",
        "neosft",
        "train",
        "--variant",
        "single",
        "--data",
        data,
        "--output",
        output,
        "--model",
        model,
        "--method",
        method,
        "--max-steps",
        STEPS,
        "--save-steps",
        SAVE,
        "--work-dir",
        work,
        *QUICK,
        *(LORA_QUICK if method == "lora" else []),
        *extra,
    ]


def records(output: str):
    return read_losses(location(f"{output}/loss.jsonl").read_bytes())


def losses(output: str) -> list[tuple[int, float]]:
    return [(r.current_steps, r.loss) for r in train_losses(records(output))]


def run_record(output) -> RunRecord:
    return RunRecord.read(location(str(output)))


def went_down(output: str) -> bool:
    values = [loss for _, loss in losses(output)]
    return sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.05


@pytest.fixture(scope="module")
def bucket(s3_server):
    """A bucket holding the built dataset, with the environment pointing at the server."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.env().items():
            mp.setenv(key, value)
        storage._client().create_bucket(Bucket="train")  # through the API: the server caches its folder listing
        build(str(SAMPLE_CORPUS), "s3://train/data", ["single"])
        yield "s3://train"


def uninterrupted(bucket, s3_server, tiny_model, tmp_path_factory, method: str) -> str:
    """An uninterrupted ZeRO-3 run from and to S3."""
    output, tmp = f"{bucket}/runs/ref-{method}/single", tmp_path_factory.mktemp(f"ref-{method}")
    proc = torchrun(
        *train_args(f"{bucket}/data", output, tiny_model, tmp / "work", "--deepspeed", "zero3", method=method),
        env=s3_server.env(),
        log=tmp / "log",
    )
    finished(proc, tmp / "log")
    return output


@pytest.fixture(scope="module")
def reference(bucket, s3_server, tiny_model, tmp_path_factory):
    return uninterrupted(bucket, s3_server, tiny_model, tmp_path_factory, "full")


@pytest.fixture(scope="module")
def lora_reference(bucket, s3_server, tiny_model, tmp_path_factory):
    return uninterrupted(bucket, s3_server, tiny_model, tmp_path_factory, "lora")


def test_zero3_run_writes_everything_to_s3(reference, bucket):
    out = location(reference)
    names = out.list()
    for name in (
        "loss.jsonl",
        "loss.png",
        "final/model.safetensors",
        "final/config.json",
        "final/tokenizer.json",
        "final/run.json",
    ):
        assert name in names, name
    assert out.__truediv__("loss.png").read_bytes()[:4] == b"\x89PNG"
    assert [step for step, _ in losses(reference)] == list(range(1, STEPS + 1))
    assert went_down(reference)
    last = records(reference)[-1]
    assert None not in (last.loss, last.lr, last.grad_norm)
    assert last.total_steps == STEPS and last.total_tokens > 0 and last.throughput > 0

    run = run_record(reference)
    manifest = Manifest.read(f"{bucket}/data")
    assert run.variant == "single" and run.world_size == 2 and run.deepspeed == "zero3"
    assert run.hyperparameters == {**VARIANTS["single"].hyperparameters(), "cutoff_len": 256, "learning_rate": 1e-3}
    assert run.overrides == {"cutoff_len": 256, "gradient_accumulation_steps": 2, "learning_rate": 1e-3}
    assert run.batch["gradient_accumulation_steps"] == 2 and run.batch["overridden"] == ["gradient_accumulation_steps"]
    assert run.training_arguments["learning_rate"] == 1e-3 and run.training_arguments["seed"] == 42
    assert run.dataset["sha256"] == manifest.variants["single"].sha256
    assert run.dataset["source_sha256"] == manifest.source.sha256
    assert run.steps == STEPS and run.tokens == last.total_tokens and run.final_loss == last.loss
    assert run.wall_time_s > 0 and run.neosft_version and run.resumed_from is None

    # the last two complete checkpoints are kept, each marked complete; the last step went to final/
    checkpoints = {n.split("/")[1] for n in names if n.startswith("checkpoints/")}
    assert checkpoints == {f"checkpoint-{STEPS - 2 * SAVE}", f"checkpoint-{STEPS - SAVE}"}
    assert all(f"checkpoints/{c}/COMPLETE.json" in names for c in checkpoints)

    # ZeRO-3 gathered the real weights into final/, and they moved away from the initial ones
    from safetensors.numpy import load

    weights = load((out / "final/model.safetensors").read_bytes())
    config = json.loads((out / "final/config.json").read_bytes())
    assert weights["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])


def test_zero3_lora_run_writes_the_adapter_to_s3(lora_reference, reference, tiny_model):
    from safetensors.numpy import load

    out = location(lora_reference)
    names = out.list()
    for name in (
        "loss.jsonl",
        "loss.png",
        "final/adapter_model.safetensors",
        "final/adapter_config.json",
        "final/tokenizer.json",
        "final/run.json",
    ):
        assert name in names, name
    assert "final/model.safetensors" not in names
    assert [step for step, _ in losses(lora_reference)] == list(range(1, STEPS + 1)) and went_down(lora_reference)
    run = run_record(lora_reference)
    assert run.method == "lora" and run.deepspeed == "zero3" and run.lora["rank"] == 16
    # ZeRO-3 gathered every rank's shard of the adapter: full shapes, trained
    weights = load((out / "final/adapter_model.safetensors").read_bytes())
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    a = weights["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (16, config["hidden_size"]) and len(weights) == 2 * 7 * config["num_hidden_layers"]
    assert all(abs(w).sum() > 0 for name, w in weights.items() if "lora_B" in name)

    # a checkpoint holds the adapter and its optimizer state, not the frozen base: a fraction of full fine-tuning's
    def checkpoint(output: str) -> dict[str, int]:
        folder = location(f"{output}/checkpoints/checkpoint-{SAVE * 2}")
        return {name: (folder / name).size() for name in folder.list()}

    lora, full = checkpoint(lora_reference), checkpoint(reference)
    assert "adapter_model.safetensors" in lora and not any(
        name.endswith("model.safetensors") and "adapter" not in name for name in lora
    )
    assert sum(lora.values()) < sum(full.values()) / 2, (lora, full)


def test_killed_lora_run_resumes_to_the_same_losses(lora_reference, bucket, s3_server, tiny_model, tmp_path):
    killed_and_resumed(lora_reference, bucket, s3_server, tiny_model, tmp_path, "right after a checkpoint", "lora")


@pytest.mark.parametrize("moment", ["right after a checkpoint", "between checkpoints"])
def test_killed_run_resumes_to_the_same_losses(reference, bucket, s3_server, tiny_model, tmp_path, moment):
    killed_and_resumed(reference, bucket, s3_server, tiny_model, tmp_path, moment, "full")


def killed_and_resumed(reference, bucket, s3_server, tiny_model, tmp_path, moment: str, method: str) -> None:
    """Kill a run at `moment`, start it again on a new pod: it resumes and logs the uninterrupted `reference`'s
    losses."""
    output = f"{bucket}/runs/killed-{method}-{moment.split()[0]}/single"
    marker = location(f"{output}/checkpoints/checkpoint-{SAVE}/COMPLETE.json")
    log = tmp_path / "log-1"
    proc = torchrun(
        *train_args(f"{bucket}/data", output, tiny_model, tmp_path / "work-1", "--deepspeed", "zero3", method=method),
        env=s3_server.env(),
        log=log,
    )

    def reached() -> bool:  # after checkpoint-4 is complete, or once step 6 of 12 is logged
        return marker.exists() if moment.startswith("right") else log.read_text().count("'loss':") >= SAVE + 2

    deadline = time.monotonic() + 180
    while not reached():
        assert proc.poll() is None, log.read_text()[-5000:]
        assert time.monotonic() < deadline, f"never reached {moment}"
        time.sleep(0.05)
    kill_pod(proc)
    assert not location(f"{output}/final/run.json").exists(), "the run ended before it was killed"

    # a new pod: empty local disk, same OUTPUT_URI
    proc = torchrun(
        *train_args(f"{bucket}/data", output, tiny_model, tmp_path / "work-2", "--deepspeed", "zero3", method=method),
        env=s3_server.env(),
        log=tmp_path / "log-2",
    )
    finished(proc, tmp_path / "log-2")
    run = run_record(output)
    assert run.resumed_from is not None and run.steps == STEPS
    resumed, expected = losses(output), losses(reference)
    assert [s for s, _ in resumed] == [s for s, _ in expected]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in expected], rel=1e-5)
    assert run.tokens == records(reference)[-1].total_tokens


@pytest.mark.parametrize("method", ["full", "lora"])
def test_zero2_with_packing_and_eval(sample_dataset, tiny_model, tmp_path, method):
    output = tmp_path / "out"
    proc = torchrun(
        *train_args(
            sample_dataset,
            output,
            tiny_model,
            tmp_path / "work",
            "--deepspeed",
            "zero2",
            "--packing",
            "--val-size",
            "0.2",
            method=method,
        ),
        env={},
        log=tmp_path / "log",
    )
    finished(proc, tmp_path / "log")
    assert went_down(str(output))
    evals = [r for r in records(str(output)) if r.eval_loss is not None]
    assert [r.current_steps for r in evals] == list(range(SAVE, STEPS + 1, SAVE))
    run = run_record(output)
    assert run.packing and run.deepspeed == "zero2" and run.method == method
    assert run.batch["per_device_eval"] == 32 and run.batch["total_eval_batch"] == 64  # 2 ranks
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (output / "final" / weights).exists() and (output / "loss.png").exists()


DDP_CHECK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from neosft.train.recipe import setup, train
    from neosft.train.spec import TrainSpec as Options
    data, output, model, work, method = sys.argv[1:6]
    run = setup(Options("single", data, output, model, deepspeed="none", max_steps=2, save_steps=100,
                        overrides=sys.argv[6:], work_dir=work, method=method))
    before = torch.cat([p.detach().flatten().clone() for p in run.trainer.model.parameters()])
    train(run)
    after = torch.cat([p.detach().flatten() for p in run.trainer.model.parameters()])
    gathered = [None, None]
    dist.all_gather_object(gathered, after.tolist())
    assert not torch.equal(before, after), "the weights did not move"
    assert gathered[0] == gathered[1], "the ranks' weights differ: gradients were not synchronised"
    print("RANKS IN SYNC")
""")


@pytest.mark.parametrize("method", ["full", "lora"])
def test_ddp_ranks_stay_in_sync(sample_dataset, tiny_model, tmp_path, method):
    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_CHECK)
    proc = torchrun(
        script,
        sample_dataset,
        tmp_path / "out",
        tiny_model,
        tmp_path / "work",
        method,
        *QUICK[1::2],
        env={},
        log=tmp_path / "log",
    )
    finished(proc, tmp_path / "log")
    assert "RANKS IN SYNC" in (tmp_path / "log").read_text()


def test_checkpoints_ride_out_an_s3_restart_and_no_secret_leaks(reference, bucket, s3_server, tiny_model, tmp_path):
    output = f"{bucket}/runs/flaky/single"
    first = location(f"{output}/checkpoints/checkpoint-{SAVE}/COMPLETE.json")
    proc = torchrun(
        *train_args(f"{bucket}/data", output, tiny_model, tmp_path / "work"), env=s3_server.env(), log=tmp_path / "log"
    )
    deadline = time.monotonic() + 180
    while not first.exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()[-5000:]
        time.sleep(0.05)
    s3_server.stop(kill=True)  # down while the next checkpoint is saved and uploaded
    while "trying again in" not in (tmp_path / "log").read_text():  # until an upload met the closed store
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()[-5000:]
        time.sleep(0.05)
    s3_server.start()
    finished(proc, tmp_path / "log")
    names = location(output).list()
    assert f"checkpoints/checkpoint-{2 * SAVE}/COMPLETE.json" in names
    assert [loss for _, loss in losses(output)] == pytest.approx([loss for _, loss in losses(reference)], rel=1e-5)
    secret = s3_server.secret_key
    assert secret not in location(f"{output}/final/run.json").read_bytes().decode()
    assert secret not in (tmp_path / "log").read_text()


def test_two_ranks_train_at_total_batch_64_and_leave_tensorboard_events(sample_dataset, tiny_model, tmp_path):
    output = tmp_path / "out"
    proc = torchrun(
        "-m",
        "neosft",
        "train",
        "--variant",
        "single",
        "--data",
        sample_dataset,
        "--output",
        output,
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--max-steps",
        2,
        "--work-dir",
        tmp_path / "work",
        "--set",
        "cutoff_len=128",
        "--report-to",
        "tensorboard",
        env={},
        log=tmp_path / "log",
    )
    finished(proc, tmp_path / "log")
    run = run_record(output)
    assert run.batch == {
        "world_size": 2,
        "per_device": 1,
        "gradient_accumulation_steps": 32,
        "total_train_batch": 64,
        "per_device_eval": 32,
        "total_eval_batch": 64,
        "overridden": [],
    }
    assert run.training_arguments["gradient_accumulation_steps"] == 32 and run.report_to == "tensorboard"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (output / "tensorboard").glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    steps = [e.step for e in accumulator.Scalars("train/loss")]
    assert steps == [1, 2]
    assert [e.value for e in accumulator.Scalars("train/loss")] == pytest.approx(
        [r.loss for r in train_losses(records(str(output)))]
    )


@pytest.fixture(scope="module")
def heldout_dataset(tmp_path_factory) -> Path:
    """The sample corpus built with 12 records held out, which `--eval` scores."""
    dest = tmp_path_factory.mktemp("heldout") / "data"
    build(str(SAMPLE_CORPUS), str(dest), ["single"], holdout="12")
    return dest


@pytest.mark.parametrize("procs", [1, 2])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_zero3_trains_merges_and_evaluates(heldout_dataset, tiny_model, tmp_path, method, procs):
    """After ZeRO-3 training, the merge and the eval load plain (not partitioned) models: the DeepSpeed config that
    transformers and accelerate registered was released when training ended."""
    output = tmp_path / "out"
    args = train_args(heldout_dataset, output, tiny_model, tmp_path / "work", "--deepspeed", "zero3", method=method)
    args = [*args, "--eval", "--eval-samples", "2", *(["--merge"] if method == "lora" else [])]
    args[args.index("--max-steps") + 1] = 2
    log = tmp_path / "log"
    if procs == 2:
        proc = torchrun(*args, env={}, log=log)
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, *map(str, args)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
        )
    finished(proc, log)
    from neosft.artifacts import EvalRecord

    assert run_record(output).deepspeed == "zero3" and run_record(output).world_size == procs
    assert EvalRecord.read(location(str(output))) is not None
    if method == "lora":
        from transformers import AutoModelForCausalLM

        merged = AutoModelForCausalLM.from_pretrained(output / "merged")
        assert merged.model.embed_tokens.weight.dim() == 2
        assert not any("lora" in name for name, _ in merged.named_parameters())

"""`neosft run`: the whole pipeline on one machine, no cluster and no GPU.

A local S3-compatible server over a folder stands in for object storage, the shipped sample corpus
for the real one, and a tiny random Qwen2 for Qwen2-7B. The same commands the cluster runs
(`neosft data build`, `neosft train` with DeepSpeed) write to the same places:
`<store>/data/`, `<store>/runs/<run-id>/<variant>/` and `<store>/runs/<run-id>/comparison.png`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from neosft.artifacts import LossRecord, read_losses, train_losses
from neosft.errors import UserError
from neosft.local_s3 import LocalS3
from neosft.progress import log
from neosft.storage import EMBEDDED_STORE, Location, location
from neosft.variants import VARIANTS

BUCKET = "neosft"  # the bucket the local server serves: EMBEDDED_STORE/neosft/
STEPS = 40
# A tiny random model learns nothing in a few dozen steps at 7B learning rates: scale every
# variant's rate by the same factor (kept in run.json as a --set override), so curves still compare.
LEARNING_RATE_SCALE = 40
# One CPU process would accumulate 64 micro-steps per step to keep the cluster's total batch: rehearse at 8 instead,
# as an explicit --set that run.json records among the overrides.
REHEARSAL_ACCUMULATION = 8
WORK = Path(".neosft")
PROGRESS_EVERY_S = 10.0


def run(variants: list[str], source: str, store: str | None, run_id: str | None, steps: int = STEPS) -> dict:
    """Build, train every variant, plot; returns the summary that `neosft run` prints."""
    run_id = run_id or datetime.now(timezone.utc).strftime("local-%Y%m%d-%H%M%S")
    with _object_store(store) as (prefix, folder, env):
        log(f"object store: {prefix}" + (f", served from {folder}" if folder else ""))
        here = _reader(prefix, folder)
        data = f"{prefix}/data"
        _child([sys.executable, "-m", "neosft", "data", "build", source, "--out", data, "--build-id", run_id], env)
        manifest = json.loads(here(f"{data}/manifest.json").read_bytes())
        model = _tiny_model(here, data, manifest)
        runs = {}
        for i, name in enumerate(variants, 1):
            log(f"[{i}/{len(variants)}] training {name}: {steps} steps of a tiny Qwen2 on CPU with DeepSpeed ZeRO-2")
            runs[name] = _train(here, name, data, f"{prefix}/runs/{run_id}/{name}", model, steps, env)
        if runs:
            from neosft.train.lossplot import compare_plot

            here(f"{prefix}/runs/{run_id}/comparison.png").write_bytes(compare_plot(runs))
        return {"store": str(folder) if folder else prefix, "run_id": run_id, "manifest": manifest, "runs": runs}


@contextlib.contextmanager
def _object_store(store: str | None) -> Iterator[tuple[str, Path | None, dict[str, str]]]:
    """(s3:// prefix to work under, local folder behind it, environment of the processes that use it): the given
    prefix with this environment, or a local server over a folder with its endpoint and keys."""
    if store and store.startswith("s3://"):
        yield store.rstrip("/"), None, {}
        return
    folder = Path(store or EMBEDDED_STORE)
    (folder / BUCKET).mkdir(parents=True, exist_ok=True)
    with LocalS3(folder) as server:
        yield f"s3://{BUCKET}", folder / BUCKET, server.env()


def _reader(prefix: str, folder: Path | None) -> Callable[[str], Location]:
    """How this process reaches a URI under `prefix`: through the folder the local server serves, else as given."""
    if folder is None:
        return location
    return lambda uri: location(folder / uri.removeprefix(prefix).lstrip("/"))


def _child(command: list[str], env: dict[str, str]) -> None:
    """Run a neosft command with `env` added to this environment; its output goes to stderr, its error line is ours."""
    process = subprocess.Popen(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    error = None
    for line in process.stderr:
        if line.startswith("error: "):
            error = line.removeprefix("error: ").strip()
        else:
            sys.stderr.write(line)
    if process.wait():
        raise UserError(error or f"{' '.join(command[2:5])} failed with exit code {process.returncode}")


def _tiny_model(here: Callable[[str], Location], data: str, manifest: dict) -> str:
    """A tiny random Qwen2 with a BPE tokenizer trained on the dataset's rows; made once per dataset."""
    folder = WORK / "models" / f"tiny-qwen2-{manifest['source']['sha256'][:12]}"
    if not (folder / "config.json").exists():
        from neosft.train.tiny import make_tiny_qwen2

        entry = next(iter(manifest["variants"].values()))
        texts = [row["instruction"] + "\n" + row["output"] for file in entry["files"]
                 for row in map(json.loads, here(f"{data}/{file}").read_bytes().splitlines())]
        log(f"making a tiny Qwen2 from a config in {folder}")
        make_tiny_qwen2(folder, texts)
    return str(folder)


def _train(here: Callable[[str], Location], name: str, data: str, output: str, model: str, steps: int,
           env: dict[str, str]) -> list[LossRecord]:
    """One `neosft train` process, as a PyTorchJob pod runs it; its output goes to a log file."""
    log_file = WORK / "logs" / ("-".join(output.split("/")[-2:]) + ".log")  # <run-id>-<variant>.log
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(WORK / "torch-extensions"))}
    command = [sys.executable, "-m", "neosft", "train", "--variant", name, "--data", data, "--output", output,
               "--model", model, "--deepspeed", "zero2", "--max-steps", str(steps), "--save-steps", str(max(1, steps // 2)),
               "--set", f"learning_rate={VARIANTS[name].learning_rate * LEARNING_RATE_SCALE:g}",
               "--set", f"gradient_accumulation_steps={REHEARSAL_ACCUMULATION}",
               "--work-dir", str(WORK / "work" / name)]
    started = time.monotonic()
    with open(log_file, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        while True:  # progress: the steps the Trainer has logged so far
            try:
                process.wait(PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                done = log_file.read_text(errors="replace").count("'loss':")
                log(f"    {name}: step {min(done, steps)}/{steps}, {time.monotonic() - started:.0f} s")
    if process.returncode:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"training {name} failed: {tail[0]} (full log: {log_file})")
    records = read_losses(here(f"{output}/loss.jsonl").read_bytes())
    losses = train_losses(records)
    log(f"    {name}: loss {losses[0].loss:.3f} -> {losses[-1].loss:.3f} in {time.monotonic() - started:.0f} s")
    return records


def summary(result: dict) -> str:
    """The table `neosft run` ends with."""
    manifest, runs = result["manifest"], result["runs"]
    lines = [f"run {result['run_id']} in {result['store']}",
             f"source: {manifest['source']['records']:,} records, {manifest['kept']:,} kept; skipped: "
             + ", ".join(f"{k} {v}" for k, v in manifest["skipped"].items()), "",
             f"{'variant':<14}{'rows':>7}{'steps':>7}{'first loss':>12}{'last loss':>11}  loss plot"]
    for name, entry in manifest["variants"].items():
        records = train_losses(runs.get(name, []))
        if records:
            lines.append(f"{name:<14}{entry['rows']:>7,}{records[-1].current_steps:>7}{records[0].loss:>12.3f}"
                         f"{records[-1].loss:>11.3f}  {result['store']}/runs/{result['run_id']}/{name}/loss.png")
        else:
            lines.append(f"{name:<14}{entry['rows']:>7,}{'-':>7}")
    if runs:
        lines += ["", f"comparison of the variants: {result['store']}/runs/{result['run_id']}/comparison.png"]
    return "\n".join(lines)

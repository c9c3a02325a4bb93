"""`neosft run`: the whole pipeline on one machine, no cluster and no GPU, as the chart would run it.

A local S3-compatible server over a folder stands in for object storage, and a tiny random Qwen2
for Qwen2-7B. The chart is rendered with local values and its pods' containers run here, in the
order a cluster runs them (`neosft/backends/local.py`): the data Job builds `<store>/data/<run-id>/`,
then each variant's training container trains into `<store>/runs/<run-id>/<variant>/`. The
rendered manifests are kept beside them, in `<store>/runs/<run-id>/manifests.yaml`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from neosft.artifacts import LossRecord, Manifest, read_losses, train_losses
from neosft.backends import local
from neosft.errors import UserError
from neosft.local_s3 import LocalS3
from neosft.progress import log
from neosft.runfolder import LOCAL_BUCKET
from neosft.storage import EMBEDDED_STORE, Location, location
from neosft.variants import VARIANTS

STEPS = 40
# A tiny random model learns nothing in a few dozen steps at 7B learning rates: scale every
# variant's rate by the same factor (kept in run.json as a --set override), so curves still compare.
LEARNING_RATE_SCALE = 40
# One CPU process would accumulate 64 micro-steps per step to keep the cluster's total batch: rehearse at 8 instead,
# as an explicit --set that run.json records among the overrides.
REHEARSAL_ACCUMULATION = 8
# Held-out records of the shipped sample (311 records): 48 conversations, some 12k label tokens of chat loss.
HOLDOUT = "48"
WORK = Path(".neosft")
PROGRESS_EVERY_S = 10.0
SECRET = "neosft-s3"  # the chart's default s3.secretName, answered here with the store's keys


@dataclass(frozen=True)
class Store:
    """Where a local run writes: `uri` for its pods, `root` for this process, the keys its Secret holds,
    and the folder a local server serves it from (None for a remote store)."""

    uri: str
    endpoint: str
    root: Location
    keys: tuple[str, str]
    served_from: Path | None = None


def run(variants: list[str], source: str, store: str | None, run_id: str | None, steps: int = STEPS) -> dict:
    """Render the chart for a local run, execute its pods, plot; returns the summary `neosft run` prints."""
    from neosft.k8s.render import to_yaml
    from neosft.k8s.runs import check_run_id, manifests

    run_id = check_run_id(run_id or datetime.now(timezone.utc).strftime("local-%Y%m%d-%H%M%S"))
    model = (WORK / "models" / f"tiny-qwen2-{run_id}").resolve()
    with _object_store(store) as s:
        log(f"object store: {s.uri}" + (f", served from {s.served_from}" if s.served_from else ""))
        objects = manifests(_values(variants, source, s, run_id, steps, model), run_id, "local")
        folder = s.root / "runs" / run_id
        (folder / "manifests.yaml").write_bytes(to_yaml(objects).encode())
        secrets = {(SECRET, "AWS_ACCESS_KEY_ID"): s.keys[0], (SECRET, "AWS_SECRET_ACCESS_KEY"): s.keys[1]}
        [data_job] = [o for o in objects if o["kind"] == "Job"]
        _run_data_job(data_job, secrets)
        dataset = s.root / "data" / run_id
        manifest = Manifest.read(dataset)
        _tiny_model(model, dataset, manifest)
        records = {}
        for i, job in enumerate(o for o in objects if o["kind"] == "PyTorchJob"):
            name = job["metadata"]["labels"]["neosft.io/variant"]
            log(f"[{i + 1}/{len(variants)}] training {name}: {steps} steps of a tiny Qwen2 on CPU with DeepSpeed ZeRO-2")
            records[name] = _train(job, name, secrets, folder / name, WORK / "work" / run_id / name,
                                   WORK / "logs" / f"{run_id}-{name}.log", steps)
        if records:
            from neosft.train.lossplot import compare_plot

            (folder / "comparison.png").write_bytes(compare_plot(records))
        return {"store": str(s.root), "run_id": run_id, "manifest": manifest, "runs": records}


def _values(variants: list[str], source: str, store: Store, run_id: str, steps: int, model: Path) -> dict:
    """Chart values of a local run: one node of one CPU process, the tiny model, the local store."""
    bucket, _, prefix = store.uri[5:].partition("/")
    return {
        "runId": run_id, "variants": variants,
        "s3": {"bucket": bucket, "prefix": prefix, "endpoint": store.endpoint, "secretName": SECRET},
        "data": {"source": source if "://" in source or source == "sample" else str(Path(source).resolve()),
                 "holdout": HOLDOUT},
        "train": {"nodes": 1, "gpusPerNode": 1, "model": str(model), "deepspeed": "zero2", "maxSteps": steps,
                  "saveSteps": max(1, steps // 2), "workVolume": {"type": "emptyDir", "size": "10Gi"},
                  "set": {"gradient_accumulation_steps": REHEARSAL_ACCUMULATION},
                  "variantSet": {name: {"learning_rate": f"{VARIANTS[name].learning_rate * LEARNING_RATE_SCALE:g}"}
                                 for name in variants}},
    }


@contextlib.contextmanager
def _object_store(store: str | None) -> Iterator[Store]:
    """The given s3:// prefix (with this environment's keys), or a local S3 server over a folder."""
    if store and store.startswith("s3://"):
        keys = (os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
        yield Store(store.rstrip("/"), os.environ.get("NEOSFT_S3_ENDPOINT", ""), location(store.rstrip("/")), keys)
        return
    folder = Path(store or EMBEDDED_STORE)
    (folder / LOCAL_BUCKET).mkdir(parents=True, exist_ok=True)
    with LocalS3(folder) as server:
        yield Store(f"s3://{LOCAL_BUCKET}", server.endpoint, location(folder / LOCAL_BUCKET), (server.access_key, server.secret_key),
                    folder)


def _run_data_job(job: dict, secrets: dict) -> None:
    """The data Job's containers in order; its `release` step is this backend's own: training follows."""
    spec = local.pod_spec(job)
    for process in local.processes(spec, secrets, local.volume_folders(spec, WORK / "work"), {}):
        if process.argv[3:4] != ["release"]:
            local.run_attached(process, local.base_environment())


def _tiny_model(folder: Path, dataset: Location, manifest: Manifest) -> None:
    """A tiny random Qwen2 with a BPE tokenizer trained on the dataset's rows: the local run's 'download'."""
    if (folder / "config.json").exists():
        return
    from neosft.train.tiny import make_tiny_qwen2

    entry = next(iter(manifest.variants.values()))
    texts = [row["instruction"] + "\n" + row["output"] for file in entry.files
             for row in map(json.loads, (dataset / file).read_bytes().splitlines())]
    log(f"making a tiny Qwen2 from a config in {folder}")
    make_tiny_qwen2(folder, texts)


def _train(job: dict, name: str, secrets: dict, output: Location, work: Path, log_file: Path,
           steps: int) -> list[LossRecord]:
    """The training object's master container as rendered, its output in a log file; progress every few seconds."""
    spec = local.pod_spec(job)
    [process] = local.processes(spec, secrets, local.volume_folders(spec, work), local.torch_injected())
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str((WORK / "torch-extensions").resolve()),
           **local.base_environment()}
    started = time.monotonic()
    child = local.start_logged(process, log_file, env)
    while True:  # progress: the steps the Trainer has logged so far
        try:
            child.wait(PROGRESS_EVERY_S)
            break
        except subprocess.TimeoutExpired:
            done = log_file.read_text(errors="replace").count("'loss':")
            log(f"    {name}: step {min(done, steps)}/{steps}, {time.monotonic() - started:.0f} s")
    if child.returncode:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"training {name} failed: {tail[0]} (full log: {log_file})")
    records = read_losses((output / "loss.jsonl").read_bytes())
    losses = [r.loss for r in train_losses(records)]
    log(f"    {name}: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {time.monotonic() - started:.0f} s")
    return records


def summary(result: dict) -> str:
    """The table `neosft run` ends with."""
    manifest, runs = result["manifest"], result["runs"]
    lines = [f"run {result['run_id']} in {result['store']}",
             f"source: {manifest.source.records:,} records, {manifest.kept:,} kept; skipped: "
             + ", ".join(f"{k} {v}" for k, v in manifest.skipped.items()), "",
             f"{'variant':<14}{'rows':>7}{'steps':>7}{'first loss':>12}{'last loss':>11}  loss plot"]
    for name, entry in manifest.variants.items():
        records = train_losses(runs.get(name, []))
        if records:
            lines.append(f"{name:<14}{entry.rows:>7,}{records[-1].current_steps:>7}{records[0].loss:>12.3f}"
                         f"{records[-1].loss:>11.3f}  {result['store']}/runs/{result['run_id']}/{name}/loss.png")
        else:
            lines.append(f"{name:<14}{entry.rows:>7,}{'-':>7}")
    if runs:
        lines += ["", f"comparison of the variants: {result['store']}/runs/{result['run_id']}/comparison.png"]
        from neosft.eval.report import summary as comparison

        folder = f"{result['store']}/runs/{result['run_id']}"
        lines += ["", "chat loss on the held-out conversations (lower is better):", comparison(location(folder)),
                  f"comparison: {folder}/comparison.md and {folder}/eval.png"]
    return "\n".join(lines)

"""`neosft run`: the whole pipeline on one machine, no cluster and no GPU, as the chart would run it.

The chart's values for a rehearsal (one node of one CPU process, a tiny random Qwen2 for Qwen2-7B),
given to the local backend (`neosft/backends/local.py`): it submits the run and, while this process
waits, runs its pods here. The data Job builds `<store>/data/<run-id>/`, then each variant's training
container trains into `<store>/runs/<run-id>/<variant>/`; the manifests are kept beside them, in
`<store>/runs/<run-id>/manifests.yaml`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from neosft.artifacts import LossRecord, Manifest, read_losses, shown, train_losses
from neosft.backends.base import ExecutionBackend
from neosft.backends.types import RenderedRun
from neosft.errors import UserError
from neosft.progress import log
from neosft.storage import Location
from neosft.variants import DEFAULT_METHOD, DEFAULT_RULES, VARIANTS

STEPS = 40
# A tiny random model learns nothing in a few dozen steps at 7B learning rates: scale every
# variant's rate by the same factor (kept in run.json as a --set override), so curves still compare.
LEARNING_RATE_SCALE = 40
# One CPU process would accumulate 64 micro-steps per step to keep the cluster's total batch: rehearse at 8 instead,
# as an explicit --set that run.json records among the overrides.
REHEARSAL_ACCUMULATION = 8
MODELS = Path(".neosft/models")
# Held-out records of the shipped sample (311 records): 48 conversations, some 12k label tokens of chat loss.
HOLDOUT = "48"


@dataclass(frozen=True)
class Result:
    """What `neosft run` ends with: the run as rendered, its dataset's manifest, each variant's loss log."""

    run: RenderedRun
    manifest: Manifest
    losses: dict[str, list[LossRecord]]

    @property
    def folder(self) -> str:
        """The run folder as this machine names it (a local folder for a local store)."""
        return self.run.store.location(self.run.folder).uri


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("local-%Y%m%d-%H%M%S")


def model_folder(run_id: str) -> Path:
    return (MODELS / f"tiny-qwen2-{run_id}").resolve()


def values(
    variants: list[str],
    source: str,
    steps: int,
    model: Path,
    *,
    method: str = DEFAULT_METHOD,
    rules: str = DEFAULT_RULES,
    holdout: str = HOLDOUT,
    benchmarks: tuple[str, ...] = (),
) -> dict:
    """Chart values of a local run: one node of one CPU process, the tiny model (the store is the backend's)."""
    return {
        "eval": {"benchmarks": list(benchmarks)},
        "variants": variants,
        "data": {
            "source": source if "://" in source or source == "sample" else str(Path(source).resolve()),
            "rules": rules,
            "holdout": holdout,
        },
        "train": {
            "nodes": 1,
            "gpusPerNode": 1,
            "model": str(model),
            "method": method,
            "deepspeed": "zero2",
            "maxSteps": steps,
            "saveSteps": max(1, steps // 2),
            "workVolume": {"type": "emptyDir", "size": "10Gi"},
            "set": {"gradient_accumulation_steps": REHEARSAL_ACCUMULATION},
            "variantSet": {
                name: {"learning_rate": f"{VARIANTS[name].learning_rate * LEARNING_RATE_SCALE:g}"} for name in variants
            },
        },
    }


def run(
    backend: ExecutionBackend,
    variants: list[str],
    source: str,
    run_id: str,
    steps: int,
    trainer_kind: str,
    *,
    method: str = DEFAULT_METHOD,
    rules: str = DEFAULT_RULES,
    holdout: str = HOLDOUT,
    benchmarks: tuple[str, ...] = (),
) -> Result:
    """Render, submit and wait for a local run, then plot its variants' losses side by side."""
    rendered = backend.render(
        values(
            variants,
            source,
            steps,
            model_folder(run_id),
            method=method,
            rules=rules,
            holdout=holdout,
            benchmarks=benchmarks,
        ),
        run_id,
        trainer_kind,
        log,
    )
    log(
        f"object store: {rendered.store.root}"
        + (f", served from {rendered.store.folder}" if rendered.store.folder else "")
    )
    backend.submit(rendered, log, log)
    log(f"training {steps} steps per variant of a tiny Qwen2 on CPU ({method}, DeepSpeed ZeRO-2), after the data Job")
    backend.wait(run_id, log, math.inf)
    losses = {
        name: read_losses(rendered.store.location(f"{uri}/loss.jsonl").read_bytes())
        for name, uri in rendered.outputs().items()
        if name != "data"
    }
    if losses:
        from neosft.train.lossplot import compare_plot  # matplotlib: only once there is something to plot

        rendered.store.location(f"{rendered.folder}/comparison.png").write_bytes(compare_plot(losses))
    return Result(rendered, Manifest.read(rendered.store.location(rendered.data_uri)), losses)


def tiny_model(folder: Path, dataset: Location) -> None:
    """A tiny random Qwen2 with a BPE tokenizer trained on the dataset's rows: the local run's 'download'."""
    if (folder / "config.json").exists():
        return
    manifest = Manifest.read(dataset)
    entry = next(iter(manifest.variants.values()))
    texts = [
        f"{row['instruction']}\n{row['output']}"  # f-string: REILX's single rows copy values as found, strings or not
        for file in entry.files
        for row in map(json.loads, (dataset / file).read_bytes().splitlines())
    ]
    log(f"making a tiny Qwen2 from a config in {folder}")
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed, under transformers, prints its accelerator to stdout
        from safetensors import SafetensorError

        from neosft.train.tiny import make_tiny_qwen2  # transformers and tokenizers: only for a local run

        try:
            make_tiny_qwen2(folder, texts)
        except (OSError, SafetensorError) as e:  # a full disk: nothing was left at `folder`
            raise UserError(f"cannot write the tiny model to {folder}: {getattr(e, 'strerror', None) or e}") from None


def summary(result: Result) -> str:
    """The table `neosft run` ends with."""
    manifest, folder = result.manifest, result.folder
    lines = [
        f"run {result.run.run_id} in {folder.rsplit('/runs/', 1)[0]}",
        f"source: {manifest.source.records:,} records, {manifest.kept:,} kept; skipped: "
        + ", ".join(f"{k} {v}" for k, v in manifest.skipped.items()),
        "",
        f"{'variant':<14}{'rows':>7}{'steps':>7}{'first loss':>12}{'last loss':>11}  loss plot",
    ]
    for name, entry in manifest.variants.items():
        records = train_losses(result.losses.get(name, []))
        if records:
            lines.append(
                f"{name:<14}{entry.rows:>7,}{records[-1].current_steps:>7}{shown(records[0].loss, 3):>12}"
                f"{shown(records[-1].loss, 3):>11}  {folder}/{name}/loss.png"
            )
        else:
            lines.append(f"{name:<14}{entry.rows:>7,}{'-':>7}")
    if result.losses:
        lines += ["", f"comparison of the variants: {folder}/comparison.png"]
    if result.losses and manifest.heldout is None:
        lines += ["no held-out records (--holdout 0): no evaluation"]
    elif result.losses:
        from neosft.eval.report import summary as comparison  # the eval's report: only once there is a run to show

        lines += [
            "",
            "chat loss on the held-out conversations (lower is better):",
            comparison(result.run.store.location(result.run.folder)),
            f"comparison: {folder}/comparison.md and {folder}/eval.png",
        ]
    return "\n".join(lines)

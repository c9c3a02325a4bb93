"""Evaluate what a run left: a variant's OUTPUT (`eval_output`, -> OUTPUT/eval.json) or the run's base model
(`eval_base`, -> RUN/base/eval.json); each then refreshes RUN/comparison.md and RUN/eval.png.

A run's variants live side by side in RUN/<variant>/ (`neosft run` and the chart both lay runs out so).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from neosft.artifacts import EvalRecord
from neosft.errors import UserError
from neosft.eval import report
from neosft.eval.evaluate import (
    DEFAULTS,
    Settings,
    evaluate,
    finished_run,
    load_model,
    load_output,
    load_tokenizer,
    local_final,
    local_tokenizer,
    read_heldout,
    same_tokenizer,
)
from neosft.progress import log
from neosft.runfolder import output_and_work_dir
from neosft.storage import Location, location
from neosft.train import dist


def run_of(output: str) -> str:
    """RUN: the folder above OUTPUT."""
    output = output.rstrip("/")
    return output.rsplit("/", 1)[0] if "/" in output else "."


def in_run(output: str, variant: str) -> bool:
    """Whether OUTPUT is laid out as RUN/<variant>, so that RUN holds a comparison."""
    return output.rstrip("/").rsplit("/", 1)[-1] == variant


def _finish(record: EvalRecord, where: Location, run: Location | None) -> EvalRecord:
    """Write the record (rank 0) and refresh the comparison of its `run` (None: not in a run's layout)."""
    if dist.shard()[0] == 0:
        record.write(where)
        if run is not None:
            report.write(run)
        log(
            f"wrote {where}/eval.json"
            + (
                f" and {run}/{report.COMPARISON}"
                if run is not None
                else " (not in a run folder RUN/<variant>: no comparison)"
            )
        )
    dist.barrier()
    return record


def eval_output(
    output: str, data: str | None = None, settings: Settings = DEFAULTS, final: Path | None = None
) -> EvalRecord:
    """Score the finished run at OUTPUT on the held-out records of its dataset (or `data`); `final`: a local copy
    of its final/ (default: read from OUTPUT)."""
    out = location(output.rstrip("/"))
    record = finished_run(out)
    held = read_heldout(data or record.dataset["uri"])
    with tempfile.TemporaryDirectory(prefix="neosft-eval-") as work:
        model, tokenizer, method = load_output(final or local_final(out, Path(work)))
    result = evaluate(model, tokenizer, held, record.variant, method, f"{out}/final", settings)
    return _finish(result, out, location(run_of(output)) if in_run(output, record.variant) else None)


def eval_base(run: str, model: str | None = None, data: str | None = None, settings: Settings = DEFAULTS) -> EvalRecord:
    """Score the base model of the run in RUN (the one its variants trained from, or `model`) into RUN/base/."""
    folder = location(run.rstrip("/"))
    records = [v.run for v in report.collect(folder)[0] if v.run]
    if not records and not (model and data):
        raise UserError(f"{run} holds no finished variant (RUN/<variant>/final/run.json): name --model and --data")
    name = model or records[0].model
    held = read_heldout(data or records[0].dataset["uri"])
    tokenizer = load_tokenizer(name)
    if records:
        with tempfile.TemporaryDirectory(prefix="neosft-eval-") as work:
            run_tokenizer = load_tokenizer(local_tokenizer(folder / records[0].variant, Path(work)))
        same_tokenizer(tokenizer, run_tokenizer, f"the base model {name}", f"{folder}/{records[0].variant}/final")
    result = evaluate(load_model(name), tokenizer, held, report.BASE, "base", name, settings)
    return _finish(result, folder / report.BASE, folder)


def after_training(
    output: str,
    data: str,
    model: str,
    work_dir: str | None = None,
    samples: int = DEFAULTS.samples,
    base: bool = False,
) -> None:
    """The end of `neosft train --eval` on every rank: OUTPUT/eval.json (and, with `base`, RUN/base/eval.json)
    unless already there or the dataset has no held-out records. Each rank scores its share with its own copy of
    the model, read from this node's final/ (downloaded once per node where training saved it elsewhere)."""
    import gc

    import torch

    from neosft.artifacts import Manifest

    out, work = output_and_work_dir(output, work_dir)
    if EvalRecord.read(out) is not None:
        log(f"{out}/eval.json exists: not evaluated again")
        return
    if Manifest.read(data).heldout is None:
        log(f"{data} has no held-out records (built with --holdout 0): no eval")
        return
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    final = work / "final"
    if not any((final / name).exists() for name in ("config.json", "adapter_config.json")):
        final = work / "eval-final"
        if dist.local_rank() == 0:
            (out / "final").download_dir(final)
        dist.barrier()
    settings = Settings(samples=samples)
    eval_output(output, data, settings, final)
    if base:
        eval_base(run_of(output), model, data, settings)

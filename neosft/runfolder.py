"""What a run's folder in the store says, with no cluster: per variant, progress from its loss log.

A run lives at <store>/runs/<run-id>/<variant>/ (`neosft run` keeps its store's bucket `neosft` as a
sub-folder of a local store folder, so a local store may also be given as that folder).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from neosft.artifacts import LOSSES, MANIFEST, EvalRecord, read_losses
from neosft.errors import UserError
from neosft.progress import hms
from neosft.storage import EMBEDDED_STORE, Location, location
from neosft.variants import VARIANTS

LOCAL_BUCKET = "neosft"  # the bucket `neosft run`'s local S3 server serves from <store>/neosft/


def output_and_work_dir(output: str, work_dir: str | None) -> tuple[Location, Path]:
    """OUTPUT (checked reachable) and the local work folder: `work_dir`, else one per OUTPUT in the temp folder."""
    out = location(output)
    out.check()
    work = Path(work_dir or Path(tempfile.gettempdir()) / f"neosft-{hashlib.sha256(out.uri.encode()).hexdigest()[:12]}")
    return out, work


@dataclass(frozen=True)
class TrainingProgress:
    """The latest loss record of one variant's OUTPUT."""

    step: int
    total_steps: int
    loss: float | None
    tokens_per_s: float | None
    elapsed_s: float
    eta_s: float | None

    def row(self) -> list[str]:
        return [
            f"{self.step}/{self.total_steps}",
            "-" if self.loss is None else f"{self.loss:.4f}",
            "-" if self.tokens_per_s is None else f"{self.tokens_per_s:,.0f}",
            hms(self.elapsed_s),
            "-" if self.eta_s is None else hms(self.eta_s),
        ]


def run_folder(store: str, run_id: str) -> Location:
    """<store>/runs/<run-id>, for a store given as `neosft run --store` or as s3://bucket/prefix."""
    root = location(store.rstrip("/"))
    if not store.startswith("s3://") and not (root / "runs").exists() and (root / LOCAL_BUCKET / "runs").exists():
        root = root / LOCAL_BUCKET
    folder = root / "runs" / run_id
    if not any((folder / name / LOSSES).exists() for name in VARIANTS):
        raise UserError(f"no run {run_id} in {store}: no {root}/runs/{run_id}/<variant>/loss.jsonl yet")
    return folder


def newest_local_dataset() -> str:
    """The dataset of the newest `neosft run` in the embedded store (each run builds its own)."""
    manifests = sorted(
        Path(EMBEDDED_STORE, LOCAL_BUCKET, "data").glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime
    )
    if not manifests:
        raise UserError(f"no dataset in {EMBEDDED_STORE}: run `neosft run` first, or name one with --data")
    return str(manifests[-1].parent)


def progress(output: Location) -> TrainingProgress | None:
    """Progress of the variant training into `output`; None before its first logged step."""
    log = output / LOSSES
    if not log.exists():
        return None
    records = [r for r in read_losses(log.read_bytes()) if r.loss is not None]
    if not records:
        return None
    last = records[-1]
    rate = last.elapsed_s / max(last.current_steps, 1)  # over the whole run, restarts included
    return TrainingProgress(
        last.current_steps,
        last.total_steps,
        last.loss,
        last.throughput,
        last.elapsed_s,
        rate * (last.total_steps - last.current_steps) if last.total_steps else None,
    )


STORE_HEADERS = ["VARIANT", "STEP", "LOSS", "TOKENS/S", "ELAPSED", "ETA", "CHAT LOSS"]


def store_rows(store: str, run_id: str) -> list[list[str]]:
    """STORE_HEADERS of every variant of the run found in the store; CHAT LOSS once its eval.json is written."""
    folder = run_folder(store, run_id)
    rows = []
    for name in VARIANTS:
        done = progress(folder / name)
        if done is not None or (folder / name / LOSSES).exists():
            evaluated = EvalRecord.read(folder / name)
            rows.append(
                [
                    name,
                    *(done.row() if done else ["0", "-", "-", "-", "-"]),
                    f"{evaluated.chat.loss:.4f}" if evaluated else "-",
                ]
            )
    return rows

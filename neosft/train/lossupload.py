"""loss.jsonl, loss.png and the TensorBoard event files to OUTPUT while the run moves: every `every_s` seconds, at
each checkpoint and at the end, from global rank 0, on a background thread that never holds up a step."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from transformers import TrainerCallback

from neosft.artifacts import LOSSES, losses_jsonl
from neosft.errors import UserError
from neosft.progress import log
from neosft.storage import Location
from neosft.storage.base import patiently
from neosft.train.losslog import LossLog
from neosft.train.lossplot import run_plot

TENSORBOARD = "tensorboard"  # OUTPUT/tensorboard/: `tensorboard --logdir` on OUTPUT or on its run folder finds it


class LossUploader(TrainerCallback):
    def __init__(self, output: Location, loss_log: LossLog, title: str, every_s: float, events: Path | None):
        self.output, self.loss_log, self.title, self.every_s, self.events = output, loss_log, title, every_s, events
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neosft-loss")
        self.pending: Future | None = None
        self.last = time.monotonic()

    def on_log(self, args, state, control, **kwargs):
        if state.is_world_process_zero and time.monotonic() - self.last >= self.every_s:
            self.upload()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.upload()

    def upload(self) -> None:
        """Start an upload of the records so far, unless one is still running (the next tick catches up)."""
        if self.pending is not None and not self.pending.done():
            return
        self.wait()
        self.last = time.monotonic()
        self.pending = self.pool.submit(self._write, list(self.loss_log.records))

    def wait(self) -> None:
        """Block until the current upload is done. Its failure is a warning: the next upload writes the same
        records and more, and the final one must succeed."""
        if self.pending is not None:
            try:
                self.pending.result()
            except UserError as e:
                log(f"loss log not uploaded this time: {e}")
            self.pending = None

    def final(self) -> None:
        """The last upload, after training: every record and event, waiting out a store that restarts."""
        self.wait()
        patiently(lambda: self._write(list(self.loss_log.records)), log)

    def _write(self, records) -> None:
        (self.output / LOSSES).write_bytes(losses_jsonl(records))
        (self.output / "loss.png").write_bytes(run_plot(records, self.title))
        if self.events is not None and self.events.is_dir():
            (self.output / TENSORBOARD).upload_dir(self.events)

"""Checkpoints in object storage: uploaded in the background as each one completes, marked complete last,
and the newest complete one fetched at start so a killed run resumes where it left off.

Each node uploads the files its ranks wrote, then `.nodes/node-K`; node 0 waits for every node, then
writes `COMPLETE.json` last. Only a checkpoint with that
marker is ever resumed from; the older ones beyond the last `keep` are deleted, marker first.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from transformers import TrainerCallback

from neosft.artifacts import LOSSES
from neosft.progress import log
from neosft.storage import Location
from neosft.storage.base import patiently
from neosft.train import dist

MARKER = "COMPLETE.json"
NODES_TIMEOUT_S = 3600


def _step(name: str) -> int:
    return int(name.removeprefix("checkpoint-"))


def _checkpoints(output: Location) -> dict[str, bool]:
    """Every checkpoint under OUTPUT_URI/checkpoints: name -> complete."""
    found: dict[str, bool] = {}
    for path in (output / "checkpoints").list():
        name, _, rest = path.partition("/")
        if name.startswith("checkpoint-") and name[11:].isdigit():
            found[name] = found.get(name, False) or rest == MARKER
    return found


def resume_point(output: Location, work_dir: Path) -> Path | None:
    """Fetch the newest complete checkpoint to every node's `work_dir`, or None to start afresh.

    Rank 0 first deletes the incomplete checkpoints after it: they would be saved again.
    """
    found = _checkpoints(output)
    complete = sorted((n for n, ok in found.items() if ok), key=_step)
    newest = complete[-1] if complete else None
    local = Path(work_dir) / "checkpoints"
    if dist.rank() == 0:
        for name, ok in found.items():
            if not ok and (newest is None or _step(name) > _step(newest)):
                (output / "checkpoints" / name).delete_dir()
    if dist.local_rank() == 0:
        shutil.rmtree(local, ignore_errors=True)
        if newest:
            log(f"resuming from {output}/checkpoints/{newest}")
            (output / "checkpoints" / newest).download_dir(local / newest)
    dist.barrier()
    return local / newest if newest else None


class CheckpointUploader(TrainerCallback):
    """Uploads each saved checkpoint on a background thread, one at a time, from one process per node.

    `losses()` runs on node 0 as the checkpoint is saved: its loss.jsonl goes into the checkpoint, so that a resumed
    run continues it.
    """

    def __init__(self, output: Location, keep: int, losses: Callable[[], bytes]):
        self.output, self.keep, self.losses = output, keep, losses
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neosft-upload")
        self.pending: Future | None = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:  # the last step goes to final/: a resume never starts at the end
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        dist.barrier()  # every rank has written its part of the checkpoint
        if not state.is_local_process_zero:
            return
        name = f"checkpoint-{state.global_step}"
        staged = Path(args.output_dir) / ".uploading" / name
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(Path(args.output_dir) / name, staged, copy_function=os.link)  # rotation may delete the original
        if dist.node() == 0:
            (staged / LOSSES).write_bytes(self.losses())
        self.wait()
        self.pending = self.pool.submit(self._upload, staged, name)

    def on_train_end(self, args, state, control, **kwargs):
        self.wait()

    def wait(self) -> None:
        """Block until the current upload is done; re-raise its failure."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def _upload(self, staged: Path, name: str) -> None:
        remote = self.output / "checkpoints" / name
        patiently(lambda: remote.upload_dir(staged), log)  # a store that restarts costs a pause, not the run
        patiently(lambda: (remote / ".nodes" / f"node-{dist.node()}").write_bytes(b""), log)
        shutil.rmtree(staged)
        if dist.node() != 0:
            return
        deadline = time.monotonic() + NODES_TIMEOUT_S
        while len(patiently((remote / ".nodes").list, log)) < dist.nodes():
            if time.monotonic() > deadline:
                log(f"{remote}: not every node uploaded its part; the checkpoint stays incomplete")
                return
            time.sleep(1)
        patiently(
            lambda: (remote / MARKER).write_bytes(json.dumps({"step": _step(name), "nodes": dist.nodes()}).encode()),
            log,
        )
        log(f"{remote} complete")
        patiently(lambda: self._prune(_step(name)), log)

    def _prune(self, newest: int) -> None:
        """Keep the newest `keep` complete checkpoints; delete older ones (marker first) and older partial ones."""
        found = _checkpoints(self.output)
        kept = sorted((n for n, ok in found.items() if ok), key=_step)[-self.keep :]
        for name in found:
            if name not in kept and _step(name) < newest:
                (self.output / "checkpoints" / name / MARKER).delete()
                (self.output / "checkpoints" / name).delete_dir()

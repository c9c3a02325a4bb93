"""The loss log: a `LossRecord` (neosft.artifacts) per logging step of rank 0, continued across resumes."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from neosft.artifacts import LossRecord
from neosft.progress import hms


class LossLog(TrainerCallback):
    """Collects the records; a resumed run starts from the records saved in its checkpoint."""

    def __init__(self, records: list[LossRecord] | None = None):
        self.records = list(records or [])
        self.elapsed_before = self.records[-1].elapsed_s if self.records else 0.0
        self.base: tuple[int, int] = (0, 0)  # (step, tokens) when this process started training

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.started = time.monotonic(), False

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.started:  # here, unlike at train begin, a resumed state is loaded
            self.base, self.started = (state.global_step, state.num_input_tokens_seen), True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or not ({"loss", "eval_loss"} & logs.keys()):
            return
        run_s = time.monotonic() - self.start
        elapsed = self.elapsed_before + run_s
        steps = max(state.global_step - self.base[0], 1)
        self.records.append(
            LossRecord(
                current_steps=state.global_step,
                total_steps=state.max_steps,
                epoch=round(state.epoch or 0.0, 4),
                loss=logs.get("loss"),
                eval_loss=logs.get("eval_loss"),
                grad_norm=logs.get("grad_norm"),
                lr=logs.get("learning_rate"),
                total_tokens=state.num_input_tokens_seen,
                throughput=round((state.num_input_tokens_seen - self.base[1]) / max(run_s, 1e-9), 2),
                percentage=round(100 * state.global_step / max(state.max_steps, 1), 2),
                elapsed_s=round(elapsed, 3),
                elapsed_time=hms(elapsed),
                remaining_time=hms(run_s / steps * (state.max_steps - state.global_step)),
            )
        )

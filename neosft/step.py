"""One training pod's work, composed: train (ends at save) -> merge (--merge) -> eval (--eval).

`neosft train` runs this; `neosft eval` runs the eval alone. Training knows nothing of evaluation: this floor sits
above both."""

from __future__ import annotations

from neosft.artifacts import RunRecord
from neosft.train.recipe import fine_tune, merge_output
from neosft.train.spec import TrainSpec


def train_step(options: TrainSpec) -> RunRecord:
    """Train the variant, then merge and score it as `options` ask; returns the run record."""
    record = fine_tune(options)  # the Trainer and its optimizer go with fine_tune's frame, before a model loads again
    merge_output(options)
    if options.eval:
        from neosft.eval.outputs import after_training

        after_training(
            options.output,
            options.data,
            options.model,
            options.work_dir,
            options.eval_samples,
            options.eval_base,
        )
    return record

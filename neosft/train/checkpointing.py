"""Activation checkpointing: what the user set (`--set gradient_checkpointing=...`, the name users know, or
transformers 5's `activation_checkpointing`), else the memory plan's answer: off where the step fits the GPU
without it (it then costs a third more compute for nothing), on otherwise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from neosft.errors import UserError
from neosft.variants import Lora

NAMES = ("gradient_checkpointing", "activation_checkpointing")  # the old name and transformers 5's


@dataclass(frozen=True)
class Checkpointing:
    enabled: bool
    reason: str

    def record(self) -> dict:
        """run.json's `checkpointing`."""
        return asdict(self)


def asked(overrides: dict) -> bool | None:
    """The value the user set under either name, None when unset; both names with different values are refused."""
    values = {overrides[name] for name in NAMES if name in overrides}
    if len(values) > 1:
        raise UserError("--set gradient_checkpointing and activation_checkpointing disagree: set one of them")
    return values.pop() if values else None


def decide(
    overrides: dict,
    *,
    gpu_memory_gb: float | None,
    stage: str,
    gpus: int,
    cutoff_len: int,
    config: dict,
    lora: Lora | None,
    liger: bool,
) -> Checkpointing:
    """The user's value, else off without a GPU (`gpu_memory_gb` None), else the plan's: off when one micro-step
    at `cutoff_len` without checkpointing fits `HEADROOM` of the GPU's memory under ZeRO `stage`."""
    from neosft.train.memory import HEADROOM, memory  # DeepSpeed's estimators: only once training starts

    value = asked(overrides)
    if value is not None:
        return Checkpointing(value, f"--set gradient_checkpointing={str(value).lower()}")
    if gpu_memory_gb is None:
        return Checkpointing(False, "no GPU: training on CPU")
    if stage not in ("zero2", "zero3"):
        stage = "zero2"  # plain DDP or a custom config: every GPU keeps whole weights, as under ZeRO-2
    need = memory(stage, gpus, cutoff_len, liger, config, lora, checkpointing=False).total
    budget = gpu_memory_gb * 1e9 * HEADROOM
    fits = need <= budget
    return Checkpointing(
        not fits,
        f"the plan needs {need / 1e9:.1f} GB per GPU without checkpointing at cutoff_len {cutoff_len} under {stage}; "
        f"{'within' if fits else 'over'} {budget / 1e9:.1f} GB ({HEADROOM:.0%} of {gpu_memory_gb:.0f} GB)",
    )

"""TrainingArguments from the variant table, the command's flags and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
from importlib.resources import files
from pathlib import Path
from typing import Any

from neosft.errors import UserError
from neosft.progress import log
from neosft.train.checkpointing import asked as asked_checkpointing
from neosft.variants import get, gradient_accumulation, per_device_eval_batch

DEEPSPEED_CONFIGS = ("zero3", "zero2")
# --deepspeed when not given, per method: `neosft plan --method lora --gpu-memory 80` shows a frozen bf16 Qwen2-7B with
# its adapter fits each GPU under ZeRO-2 with room, so LoRA skips ZeRO-3's all-gathers; full fine-tuning as before.
DEFAULT_DEEPSPEED = {"lora": "zero2", "full": "zero3"}
TOKENIZER_KEYS = {"cutoff_len"}  # table keys that the tokenizer applies, not TrainingArguments
RENAMED = {"warmup_ratio": "warmup_steps"}  # transformers 5 reads a float warmup_steps < 1 as the ratio
POSITIVE = {
    "cutoff_len",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "num_train_epochs",
}
CHECKPOINTING = ("gradient_checkpointing", "activation_checkpointing")  # decided in neosft.train.checkpointing
# NCCL's collective timeout: transformers' default, 1800 s, would end a run whose rank 0 still tokenizes or uploads a
# checkpoint (107-122 GB under full fine-tuning) while the other ranks wait in a barrier
DDP_TIMEOUT_S = 3 * 3600
REPORT_TO = ("tensorboard", "wandb", "mlflow", "none")
FLAGS = {
    "report_to": "--report-to tensorboard|wandb|mlflow|none",
    "use_liger_kernel": "--liger",
    "deepspeed": "--deepspeed",
    "output_dir": "--output and --work-dir",
}  # settings that have their own option


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict:
    """`["learning_rate=1e-5", "lr_scheduler_type=linear"]` -> typed values (JSON when it parses, else text)."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected key=value")
        try:
            overrides[key.strip()] = json.loads(text)
        except ValueError:
            overrides[key.strip()] = text
    return overrides


def checked_overrides(variant: str, pairs: tuple[str, ...] | list[str]) -> tuple[dict, dict]:
    """(overrides, hyper-parameters) of `--set key=value` pairs, each checked as it will be used: a key with its
    own option, a key neither in the table nor a TrainingArguments field, a value of the wrong type or sign are one
    line. `neosft train` runs it before any work, `neosft submit` on every training object's arguments."""
    overrides = parse_overrides(pairs)
    for key, flag in FLAGS.items():
        if key in overrides:
            raise UserError(f"--set {key}: use {flag}")
    table = get(variant).hyperparameters()
    outside = set(overrides) - set(table)
    fields = _training_fields() if outside else {}
    if fields is None:
        log(
            f"warning: --set {', '.join(sorted(outside))}: not checked here (transformers is not installed); the "
            "trainer checks them when it starts"
        )
    unknown = sorted(outside - set(fields)) if fields else []
    if unknown:
        raise UserError(f"--set {unknown[0]}: not a hyper-parameter of the table nor a TrainingArguments field")
    asked_checkpointing(overrides)  # both names, disagreeing: refused here
    return overrides, hyperparameters(variant, overrides)


def _training_fields() -> dict[str, Any] | None:
    """TrainingArguments' fields and their types; None where transformers is not installed (`neosft submit` from
    `[submit]`)."""
    try:
        from transformers import TrainingArguments  # heavy: only once there are overrides to check
    except ImportError:
        return None

    return {f.name: f.type for f in dataclasses.fields(TrainingArguments) if f.init}


def deepspeed_config(name: str) -> str | None:
    """Path of a packaged config (`zero3`, `zero2`), of the user's JSON file, or None for `none` (plain DDP)."""
    if name == "none":
        return None
    if name in DEEPSPEED_CONFIGS:
        return str(files("neosft.configs") / f"{name}.json")
    if not Path(name).is_file():
        raise UserError(f"--deepspeed {name}: not zero3, zero2, none or an existing JSON file")
    return name


def hyperparameters(name: str, overrides: dict) -> dict:
    """The variant's table row with the overrides of its keys applied; every override's value checked."""
    table = get(name).hyperparameters()
    check_values(overrides, table)
    return {key: overrides.get(key, value) for key, value in table.items()}


def check_values(overrides: dict, table: dict) -> None:
    """Refuse an override whose value is not of its field's type (a number, an integer, a flag), not finite, or not
    positive where only a positive value makes sense: one line, before any model is loaded."""
    if not overrides:
        return
    types = _training_fields() or {}
    types.update({key: type(value) for key, value in table.items()})
    for key, value in overrides.items():
        kind = types.get(key)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        elif kind is int:
            ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif kind is bool:
            ok, expected = isinstance(value, bool), "true or false"
        else:
            continue
        if ok and key in POSITIVE and value <= 0:
            ok, expected = False, f"{expected} above 0"
        if not ok:
            raise UserError(f"--set {key}={json.dumps(value)}: expected {expected}")


def batch_settings(hp: dict, overrides: dict, world_size: int) -> dict:
    """Per-device batches and gradient accumulation that keep the table's total batches at `world_size`,
    except where `--set` gives them explicitly (run.json records the overrides)."""
    per_device = hp["per_device_train_batch_size"]
    accumulation = overrides.get("gradient_accumulation_steps") or gradient_accumulation(world_size, per_device)
    eval_batch = overrides.get("per_device_eval_batch_size") or per_device_eval_batch(world_size)
    return {"gradient_accumulation_steps": accumulation, "per_device_eval_batch_size": eval_batch}


def training_arguments(
    hp: dict,
    overrides: dict,
    output_dir: Path,
    *,
    deepspeed: str | None,
    max_steps: int,
    save_steps: int,
    evaluate: bool,
    world_size: int = 1,
    report_to: str = "none",
    liger: bool = False,
    checkpointing: bool = False,
):
    """`transformers.TrainingArguments`: the table, the batches for `world_size`, neosft's defaults, then every override.

    On GPU: bf16 and, with `liger`, the Trainer's Liger kernels. Activation checkpointing as decided
    (`neosft.train.checkpointing`), under whichever name this transformers reads. On CPU without DeepSpeed:
    `use_cpu`, without which DDP may skip the gradient sync (with DeepSpeed it would keep DeepSpeed's process group
    from starting).
    """
    import torch
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    renamed = {old: new for old, new in RENAMED.items() if old not in fields}
    table = {renamed.get(k, k): v for k, v in hp.items() if k not in TOKENIZER_KEYS}
    name = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    gpu = torch.cuda.is_available()
    settings = {
        **table,
        **batch_settings(hp, overrides, world_size),
        "output_dir": str(output_dir),
        "deepspeed": deepspeed,
        "max_steps": max_steps,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if evaluate else "no",
        "eval_steps": save_steps,
        "logging_steps": 1,
        "ddp_timeout": DDP_TIMEOUT_S,
        "include_num_input_tokens_seen": "non_padding",
        "remove_unused_columns": False,
        "report_to": report_to,
        "use_liger_kernel": liger and gpu,
        "bf16": gpu,
        name: checkpointing,
        f"{name}_kwargs": {"use_reentrant": False},
        "use_cpu": not gpu and not deepspeed,
        **{k: v for k, v in overrides.items() if k in fields and k not in CHECKPOINTING},
    }
    try:
        return TrainingArguments(**settings)
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid training arguments: {e}") from None


def arguments_record(hp: dict, overrides: dict, args) -> dict:
    """The arguments as run.json records them: the table row, the overrides, and every TrainingArguments field."""
    return {"hyperparameters": hp, "overrides": overrides, "training_arguments": args.to_dict()}


def checkpointing_of(args) -> bool:
    """Whether `args` (TrainingArguments) checkpoint activations, under whichever name this transformers reads."""
    return bool(getattr(args, "activation_checkpointing", args.gradient_checkpointing))

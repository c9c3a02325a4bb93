"""`TrainSpec`: every `neosft train` option declared once (type, default, help, chart key), as TRL's `SFTConfig`
declares its fields for `HfArgumentParser`. The Click options are generated from it (`click_options`), the recipe
reads it, and the chart test parses the rendered arguments back into one."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from neosft.chat import DEFAULT_SYSTEM
from neosft.train import DEFAULT_MODEL
from neosft.train.args import DEFAULT_DEEPSPEED
from neosft.variants import DEFAULT_METHOD, LORA, METHODS, VARIANTS, Lora

EVAL_SAMPLES = 20  # greedy answers per model, to the first held-out prompts


class Finite(click.FloatRange):
    """A number option that refuses nan and inf (click's FloatRange lets nan through any bound)."""

    name = "finite number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def option(flag: str, help: str, chart: str | None = None, **click_kwargs: Any) -> dict[str, Any]:
    """A field's metadata: its flag (`--x` or `--x/--no-x`), help, the chart value that sets it (dotted, under
    the chart's values; None: the chart derives it) and any further `click.option` arguments."""
    return {"flag": flag, "help": help, "chart": chart, "click": click_kwargs}


@dataclass
class TrainSpec:
    """The `neosft train` command line: one field per option."""

    variant: str = field(
        metadata=option("--variant", "Which dataset and hyper-parameters.", type=click.Choice(list(VARIANTS)))
    )
    data: str = field(metadata=option("--data", "The built dataset folder: a local path or s3://bucket/prefix."))
    output: str = field(metadata=option("--output", "Where this run writes: a local path or s3://bucket/prefix."))
    model: str = field(default=DEFAULT_MODEL, metadata=option("--model", "Model ID or local folder.", "train.model"))
    method: str = field(
        default=DEFAULT_METHOD,
        metadata=option(
            "--method",
            "lora: train a LoRA adapter on the frozen model (the seed's method); full: every weight.",
            "train.method",
            type=click.Choice(METHODS),
        ),
    )
    lora_rank: int = field(
        default=LORA.rank,
        metadata=option("--lora-rank", "LoRA rank r.", "train.lora.rank", type=click.IntRange(min=1)),
    )
    lora_alpha: int = field(
        default=LORA.alpha,
        metadata=option(
            "--lora-alpha",
            "LoRA alpha (the update is scaled by alpha / r).",
            "train.lora.alpha",
            type=click.IntRange(min=1),
        ),
    )
    lora_dropout: float = field(
        default=LORA.dropout,
        metadata=option(
            "--lora-dropout",
            "Dropout on the LoRA path.",
            "train.lora.dropout",
            type=click.FloatRange(0, 1, max_open=True),
        ),
    )
    lora_target: str = field(
        default=LORA.target,
        metadata=option(
            "--lora-target",
            "Modules wrapped: `all` (every linear module but lm_head, LLaMA-Factory's rule) or names (q_proj,v_proj).",
            "train.lora.target",
        ),
    )
    merge: bool = field(
        default=False,
        metadata=option("--merge", "LoRA: once trained, also write OUTPUT/merged (plain weights).", "train.merge"),
    )
    deepspeed: str | None = field(
        default=None,
        metadata=option(
            "--deepspeed",
            "zero3, zero2, none (plain DDP) or a JSON config  [default: zero2 with lora, zero3 with full]",
            "train.deepspeed",
            show_default=False,
        ),
    )
    packing: bool = field(
        default=False,
        metadata=option(
            "--packing", "Pack several samples per sequence, without attention across them.", "train.packing"
        ),
    )
    max_steps: int = field(
        default=-1, metadata=option("--max-steps", "Stop after N optimizer steps (-1: all epochs).", "train.maxSteps")
    )
    save_steps: int = field(
        default=100,
        metadata=option("--save-steps", "Checkpoint every N steps.", "train.saveSteps", type=click.IntRange(min=1)),
    )
    val_size: float = field(
        default=0.0,
        metadata=option("--val-size", "Fraction of rows held out for eval loss.", "train.valSize", type=Finite()),
    )
    overrides: list[str] = field(
        default_factory=list,
        metadata=option(
            "--set",
            "Override a table hyper-parameter or any TrainingArguments field (recorded in run.json).",
            multiple=True,
            metavar="KEY=VALUE",
        ),
    )
    work_dir: str | None = field(
        default=None,
        metadata=option(
            "--work-dir",
            "Local scratch folder for checkpoints and tokens.",
            envvar="NEOSFT_WORK_DIR",
            show_default=False,
        ),
    )
    default_system: str = field(
        default=DEFAULT_SYSTEM,
        metadata=option(
            "--default-system", "System prompt of rows without one (or with an empty one); recorded in run.json."
        ),
    )
    chat_format: str = field(
        default="auto",
        metadata=option(
            "--chat-format",
            "auto: the tokenizer's chat template when it has one, else ChatML (Qwen2's format).",
            type=click.Choice(["auto", "chatml"]),
        ),
    )
    report_to: str = field(
        default="none",
        metadata=option(
            "--report-to",
            "Experiment tracker; tensorboard writes event files to OUTPUT/tensorboard.",
            "train.reportTo",
            type=click.Choice(["tensorboard", "wandb", "mlflow", "none"]),
        ),
    )
    liger: bool = field(
        default=False,
        metadata=option(
            "--liger", "Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) on GPU.", "train.liger"
        ),
    )
    upload_every_s: float = field(
        default=60.0,
        metadata=option(
            "--upload-every",
            "Seconds between uploads of loss.jsonl, loss.png and events to OUTPUT.",
            type=Finite(min=1),
        ),
    )
    eval: bool = field(
        default=True,
        metadata=option(
            "--eval/--no-eval",
            "Then score the model on the dataset's held-out records into OUTPUT/eval.json (if it has any).",
            "eval.enabled",
        ),
    )
    eval_samples: int = field(
        default=EVAL_SAMPLES,
        metadata=option(
            "--eval-samples",
            "Greedy answers to the first N held-out prompts.",
            "eval.samples",
            type=click.IntRange(min=0),
        ),
    )
    eval_base: bool = field(
        default=False,
        metadata=option("--eval-base", "Also score MODEL itself into the run's base/ (RUN: OUTPUT's folder)."),
    )
    eval_benchmarks: list[str] = field(
        default_factory=list,
        metadata=option(
            "--benchmarks",
            "After the chat loss: lm-evaluation-harness tasks TASK[,TASK...] (names or task YAMLs). Needs neosft[eval].",
            "eval.benchmarks",
            callback=lambda ctx, param, value: _benchmarks(value),
        ),
    )

    @property
    def lora(self) -> Lora:
        """The LoRA settings asked for."""
        return Lora(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_target)

    @property
    def zero(self) -> str:
        """The DeepSpeed config asked for, else the method's default."""
        return self.deepspeed or DEFAULT_DEEPSPEED[self.method]


def _benchmarks(spec: str | None) -> list[str]:
    """--benchmarks TASK[,TASK...] as its tasks (`neosft.step` has the harness check them before training)."""
    return [] if spec is None else [task.strip() for task in spec.split(",")]


def click_options(command: Callable) -> Callable:
    """`command` with one Click option per `TrainSpec` field, in the field's order, each passed as the field's name."""
    for spec in reversed(dataclasses.fields(TrainSpec)):
        meta = spec.metadata
        kwargs: dict[str, Any] = {"help": meta["help"], **meta["click"]}
        if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        elif spec.default_factory is dataclasses.MISSING:
            kwargs["default"] = spec.default
            kwargs.setdefault("show_default", spec.type != "bool" or "/" in meta["flag"])
        if spec.type == "bool" and "/" not in meta["flag"]:
            kwargs["is_flag"] = True
        elif spec.type == "int" and "type" not in kwargs:
            kwargs["type"] = int
        command = click.option(meta["flag"], spec.name, **kwargs)(command)
    return command


def from_params(params: dict[str, Any]) -> TrainSpec:
    """The spec of a parsed command line (Click's params by field name)."""
    params = dict(params)
    params["overrides"] = list(params.get("overrides", ()))
    return TrainSpec(**params)

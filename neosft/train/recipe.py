"""The training recipe: `setup` (data, model, Trainer, resume point) -> `train` -> `save` (final model and run.json)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from neosft import __version__
from neosft.errors import UserError
from neosft.progress import log
from neosft.storage import Location, location
from neosft.train import DEFAULT_MODEL, dist
from neosft.train.args import arguments_record, deepspeed_config, hyperparameters, parse_overrides, training_arguments


@dataclass
class Options:
    """The `neosft train` command line."""

    variant: str
    data: str
    output: str
    model: str = DEFAULT_MODEL
    deepspeed: str = "zero3"
    packing: bool = False
    max_steps: int = -1
    save_steps: int = 100
    val_size: float = 0.0
    overrides: list[str] = field(default_factory=list)
    work_dir: str | None = None


@dataclass
class Run:
    """Everything `setup` prepared."""

    options: Options
    trainer: object
    hyperparameters: dict
    overrides: dict
    manifest: dict
    entry: dict
    output: Location
    work_dir: Path
    resume: Path | None
    loss_log: object
    title: str
    samples: int
    truncated: int
    started: float = field(default_factory=time.monotonic)


def run(options: Options) -> dict:
    """Train one variant end to end; returns run.json."""
    prepared = setup(options)
    return save(prepared, train(prepared))


def setup(options: Options) -> Run:
    """Check the inputs, tokenize (once), build the datasets, model and Trainer, and find the resume point."""
    from transformers import AutoTokenizer, Trainer

    from neosft.train.checkpoints import CheckpointUploader, resume_point
    from neosft.train.data import manifest_entry, tokenized
    from neosft.train.losslog import LossLog, from_jsonl

    warnings.filterwarnings("ignore", "`torch.distributed.*` is deprecated", FutureWarning)  # DeepSpeed's, per step
    if not 0 <= options.val_size < 1:
        raise UserError(f"--val-size {options.val_size}: expected a fraction in [0, 1)")
    overrides = parse_overrides(options.overrides)
    hp = hyperparameters(options.variant, overrides)
    manifest, entry = manifest_entry(options.data, options.variant)
    output = location(options.output)
    output.check()
    work_dir = Path(options.work_dir or os.environ.get("NEOSFT_WORK_DIR") or
                    Path(tempfile.gettempdir()) / f"neosft-{hashlib.sha256(output.uri.encode()).hexdigest()[:12]}")
    ds_config = deepspeed_config(options.deepspeed)
    if ds_config:
        dist.single_process_env()
    args = training_arguments(hp, overrides, work_dir / "checkpoints", deepspeed=ds_config,
                              max_steps=options.max_steps, save_steps=options.save_steps, evaluate=options.val_size > 0)
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
    except OSError as e:  # no such folder or model ID, no network, no access
        raise UserError(f"--model {options.model}: {str(e).splitlines()[0]}") from None
    tokens = tokenized(options.data, options.variant, entry, tokenizer, hp["cutoff_len"], output, work_dir)
    if not len(tokens):
        raise UserError(f"{options.data}: the {options.variant} dataset has no rows")
    train_set, eval_set, collator = _datasets(tokens, tokenizer, options, hp["cutoff_len"], args.seed)

    resume = resume_point(output, work_dir)
    loss_log = LossLog(from_jsonl((resume / "loss.jsonl").read_bytes()) if resume else [])
    title = (f"{options.variant}: lr {hp['learning_rate']:g}, cutoff_len {hp['cutoff_len']}, "
             f"batch {args.per_device_train_batch_size}x{args.gradient_accumulation_steps}x{dist.world_size()}, "
             f"{hp['lr_scheduler_type']}, {hp['num_train_epochs']} epochs")
    uploader = CheckpointUploader(output, args.save_total_limit or 2, lambda: _publish(loss_log, title))
    trainer = Trainer(model=_model(options, args, ds_config), args=args, train_dataset=train_set,
                      eval_dataset=eval_set, data_collator=collator, processing_class=tokenizer,
                      callbacks=[loss_log, uploader])
    return Run(options, trainer, hp, overrides, manifest, entry, output, work_dir, resume, loss_log, title,
               len(tokens), tokens.truncated)


def _datasets(tokens, tokenizer, options: Options, cutoff_len: int, seed: int):
    """(train set, eval set or None, collator): a seeded `--val-size` split, packed or one sample per item."""
    import numpy as np
    from transformers import DataCollatorForSeq2Seq

    from neosft.train.packing import FlattenCollator, PackedDataset, SampleDataset
    from neosft.train.tokenize import IGNORE_INDEX

    order = np.random.default_rng(seed).permutation(len(tokens))
    n_eval = round(len(tokens) * options.val_size)
    if options.packing:
        make, collator = (lambda idx: PackedDataset(tokens, idx, cutoff_len)), FlattenCollator()
    else:
        make, collator = (lambda idx: SampleDataset(tokens, idx)), DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
    return make(order[n_eval:]), make(order[:n_eval]) if n_eval else None, collator


def _model(options: Options, args, ds_config: str | None):
    """The model to train; created after TrainingArguments so that ZeRO-3 partitions it while it loads."""
    import torch
    from transformers import AutoModelForCausalLM

    from neosft.train.packing import register_varlen_attention

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        attention = "flash_attention_2"
    else:
        attention = register_varlen_attention() if options.packing else "sdpa"
    dtype = torch.bfloat16 if args.bf16 and ds_config else torch.float32  # DDP keeps fp32 weights under autocast
    model = AutoModelForCausalLM.from_pretrained(options.model, dtype=dtype, attn_implementation=attention)
    model.config.use_cache = False  # a KV cache would also hide packed samples' borders from the attention mask
    return model


def _publish(loss_log, title: str) -> dict[str, bytes]:
    """loss.jsonl and loss.png, as written beside the run."""
    from neosft.train.losslog import to_jsonl
    from neosft.train.lossplot import run_plot

    return {"loss.jsonl": to_jsonl(loss_log.records), "loss.png": run_plot(loss_log.records, title)}


def train(run: Run):
    return run.trainer.train(resume_from_checkpoint=str(run.resume) if run.resume else None)


def save(run: Run, result) -> dict:
    """final/: the model in safetensors, tokenizer and config, then run.json; loss.jsonl and loss.png beside."""
    final = run.work_dir / "final"
    run.trainer.save_model(str(final))  # ZeRO-3: every rank takes part in gathering the 16-bit weights
    record = run_record(run, result)
    if dist.rank() == 0:
        (final / "run.json").unlink(missing_ok=True)
        (run.output / "final").upload_dir(final)
        for name, data in _publish(run.loss_log, run.title).items():
            (run.output / name).write_bytes(data)
        (run.output / "final" / "run.json").write_bytes(json.dumps(record, indent=2).encode())
        log(f"wrote {run.output}/final (loss {record['final_loss']}, {record['steps']} steps, "
            f"{record['tokens']:,} tokens, {record['wall_time_s']:.0f} s)")
    dist.barrier()
    return record


def run_record(run: Run, result) -> dict:
    """run.json: what was trained, on what, with which arguments, and how it went."""
    state = run.trainer.state
    losses = [r["loss"] for r in run.loss_log.records if "loss" in r]
    return {
        "variant": run.options.variant,
        "model": run.options.model,
        **arguments_record(run.hyperparameters, run.overrides, run.trainer.args),
        "deepspeed": run.options.deepspeed,
        "packing": run.options.packing,
        "world_size": dist.world_size(),
        "dataset": {"uri": run.options.data, "sha256": run.entry["sha256"], "rows": run.entry["rows"],
                    "source_sha256": run.manifest["source"]["sha256"]},
        "samples": run.samples,
        "truncated": run.truncated,
        "resumed_from": run.resume.name if run.resume else None,
        "neosft_version": __version__,
        "steps": state.global_step,
        "tokens": state.num_input_tokens_seen,
        "wall_time_s": round(run.loss_log.elapsed_before + time.monotonic() - run.started, 3),
        "train_runtime_s": result.metrics["train_runtime"],
        "train_loss": result.training_loss,
        "final_loss": losses[-1] if losses else None,
    }

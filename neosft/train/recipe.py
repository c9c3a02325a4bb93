"""The training recipe, read top to bottom: `setup` (its `_setup_*` steps: inputs, dataset, output, model config, LoRA
targets, tokenizer, tokens, resume point, Trainer) -> `train` -> `save` (final model or adapter, loss files, run.json
last)."""

from __future__ import annotations

import importlib.util
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neosft import __version__
from neosft.artifacts import LOSSES, Manifest, RunRecord, VariantData, losses_jsonl, read_losses, train_losses
from neosft.chat import ChatFormat
from neosft.errors import UserError
from neosft.progress import log
from neosft.runfolder import output_and_work_dir
from neosft.storage import Location, location
from neosft.train import dist
from neosft.train.args import (
    REPORT_TO,
    arguments_record,
    checked_overrides,
    deepspeed_config,
    training_arguments,
)
from neosft.train.dataset import held_out, manifest_entry, split, tokenized
from neosft.train.spec import TrainSpec
from neosft.variants import LORA, METHODS

MERGED = "merged"  # OUTPUT/merged: the adapter merged into the base, with --merge

if TYPE_CHECKING:  # transformers and torch: imported by the steps that use them, after the inputs are checked
    from collections.abc import Callable

    from torch.utils.data import Dataset
    from transformers import Trainer

    from neosft.train.checkpointing import Checkpointing
    from neosft.train.losslog import LossLog
    from neosft.train.lossupload import LossUploader


@dataclass
class Prepared:
    """Everything `setup` prepared."""

    options: TrainSpec
    trainer: Trainer
    hyperparameters: dict
    overrides: dict
    manifest: Manifest
    entry: VariantData
    output: Location
    work_dir: Path
    resume: Path | None
    loss_log: LossLog
    uploader: LossUploader
    chat: ChatFormat
    samples: int
    truncated: int
    lora_targets: list[str]  # the modules the adapter wraps (empty with full fine-tuning)
    checkpointing: Checkpointing
    started: float = field(default_factory=time.monotonic)


def fine_tune(options: TrainSpec) -> RunRecord:
    """Train one variant and save it; returns its run record. A run that already finished is not trained again.
    Merging and evaluating come after, in `neosft.step`."""
    record = finished(options)
    if record is None:
        prepared = setup(options)
        record = save(prepared, train(prepared))
    return record


def merge_output(options: TrainSpec) -> None:
    """With --merge, write OUTPUT/merged (base + adapter as plain weights) on rank 0 unless already there."""
    if options.merge and dist.rank() == 0 and not (location(options.output) / MERGED / "config.json").exists():
        from neosft.train.lora import merge

        merge(options.output, f"{options.output.rstrip('/')}/{MERGED}")
        log(f"wrote {options.output.rstrip('/')}/{MERGED}")


def finished(options: TrainSpec) -> RunRecord | None:
    """The run record at OUTPUT when that run is complete."""
    output = location(options.output)
    record = RunRecord.read(output)
    if record is not None:
        log(
            f"{output} holds a finished run ({record.steps} steps, final loss {record.final_loss}): nothing to do; "
            "train into another --output to train again"
        )
    return record


def setup(options: TrainSpec) -> Prepared:
    """The steps, in order: check the inputs, find the dataset and the output, check the model's config and weights
    (and LoRA's targets), decide the arguments, load the tokenizer and tokenize (once), find the resume point, build
    the Trainer."""
    from neosft.train.losslog import LossLog

    warnings.filterwarnings("ignore", "`torch.distributed.*` is deprecated", FutureWarning)  # DeepSpeed's, per step
    overrides, hp = _setup_inputs(options)
    manifest, entry = _setup_dataset(options)
    output, work_dir = output_and_work_dir(options.output, options.work_dir)
    model_config = _setup_model_config(options)
    lora_targets = _setup_lora_targets(options, model_config)  # before ZeRO-3 is configured: a meta model
    _setup_weights(options, model_config)
    checkpointing = _setup_checkpointing(options, overrides, hp, model_config)
    ds_config = deepspeed_config(options.zero)
    if ds_config:
        dist.single_process_env()
        dist.without_shm_comm()
    args = training_arguments(
        hp,
        overrides,
        work_dir / "checkpoints",
        deepspeed=ds_config,
        max_steps=options.max_steps,
        save_steps=options.save_steps,
        evaluate=options.val_size > 0,
        world_size=dist.world_size(),
        report_to=options.report_to,
        liger=options.liger,
        checkpointing=checkpointing.enabled,
    )
    tokenizer, chat = _setup_tokenizer(options)
    tokens = _setup_tokens(options, manifest, entry, tokenizer, chat, hp["cutoff_len"], output, work_dir)
    train_set, eval_set, collator = _datasets(tokens, tokenizer, options, hp["cutoff_len"], args.seed)
    made_by = _made_by(options, entry)
    resume = _setup_resume(output, work_dir, made_by)
    loss_log = LossLog(read_losses((resume / LOSSES).read_bytes()) if resume else [])
    title = (
        f"{options.variant}: lr {hp['learning_rate']:g}, cutoff_len {hp['cutoff_len']}, "
        f"batch {args.per_device_train_batch_size}x{args.gradient_accumulation_steps}x{dist.world_size()}, "
        f"{hp['lr_scheduler_type']}, {hp['num_train_epochs']} epochs"
    )
    trainer, uploader = _setup_trainer(
        options,
        args,
        ds_config,
        model_config,
        lora_targets,
        tokenizer,
        train_set,
        eval_set,
        collator,
        output,
        work_dir,
        loss_log,
        title,
        made_by,
    )
    return Prepared(
        options,
        trainer,
        hp,
        overrides,
        manifest,
        entry,
        output,
        work_dir,
        resume,
        loss_log,
        uploader,
        chat,
        len(tokens),
        tokens.truncated,
        lora_targets,
        checkpointing,
    )


def _setup_inputs(options: TrainSpec) -> tuple[dict, dict]:
    """(overrides, hyper-parameters), every value checked: a bad one is one line before anything loads."""
    if options.method not in METHODS:
        raise UserError(f"--method {options.method}: choose from {', '.join(METHODS)}")
    if options.method == "lora":
        options.lora.check()
    elif options.merge:
        raise UserError("--merge merges a LoRA adapter: it needs --method lora")
    elif options.lora != LORA:
        raise UserError(
            "--lora-rank, --lora-alpha, --lora-dropout and --lora-target set a LoRA adapter: they need --method lora"
        )
    if not 0 <= options.val_size < 1:
        raise UserError(f"--val-size {options.val_size}: expected a fraction in [0, 1)")
    if options.report_to not in REPORT_TO:
        raise UserError(f"--report-to {options.report_to}: choose from {', '.join(REPORT_TO)}")
    if options.report_to != "none" and importlib.util.find_spec(options.report_to) is None:
        raise UserError(f"--report-to {options.report_to}: the {options.report_to} package is not installed")
    if options.liger and importlib.util.find_spec("liger_kernel") is None and _gpu():
        raise UserError("--liger: the liger-kernel package is not installed (pip install liger-kernel)")
    if options.liger and not _gpu():
        log("--liger: no GPU here; training without Liger kernels")
    return checked_overrides(options.variant, options.overrides)


def _gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _setup_checkpointing(options: TrainSpec, overrides: dict, hp: dict, model_config):
    """Activation checkpointing: the user's `--set`, else the memory plan's decision for this GPU (see
    `neosft.train.checkpointing`); logged with its reason, recorded in run.json."""
    import torch

    from neosft.train.checkpointing import decide

    gpu = torch.cuda.get_device_properties(0).total_memory / 1e9 if torch.cuda.is_available() else None
    decision = decide(
        overrides,
        gpu_memory_gb=gpu,
        stage=options.zero,
        gpus=dist.world_size(),
        cutoff_len=hp["cutoff_len"],
        config=model_config.to_dict(),
        lora=options.lora if options.method == "lora" else None,
        liger=options.liger,
    )
    log(f"activation checkpointing {'on' if decision.enabled else 'off'}: {decision.reason}")
    return decision


def _setup_dataset(options: TrainSpec) -> tuple[Manifest, VariantData]:
    """The manifest and its entry for the variant; an empty variant is refused before any model loads."""
    manifest, entry = manifest_entry(options.data, options.variant)
    if not entry.rows:
        raise UserError(f"{options.data}: the {options.variant} dataset has no rows; nothing to train on")
    train_rows = entry.rows - held_out(entry.rows, options.val_size)
    if train_rows < 1:
        raise UserError(
            f"--val-size {options.val_size} holds out all {entry.rows} {options.variant} rows: "
            "the training set would be empty"
        )
    return manifest, entry


def _setup_lora_targets(options: TrainSpec, config) -> list[str]:
    """The modules the LoRA adapter wraps, resolved on the model's config before any weights load; none for full."""
    if options.method != "lora":
        return []
    from neosft.train.lora import config_targets

    return config_targets(config, options.lora)


def _setup_tokenizer(options: TrainSpec):
    """(tokenizer, chat format) of --model."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(options.model)
    except (OSError, ValueError, KeyError) as e:  # no such folder or model ID, no network, no access, bad files
        raise UserError(f"--model {options.model}: no usable tokenizer ({_first_line(e)})") from None
    return tokenizer, ChatFormat(tokenizer, options.default_system, use_template=options.chat_format == "auto")


def _setup_model_config(options: TrainSpec):
    """--model's config, read before any work: an unknown model_type is one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(options.model)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"--model {options.model}: no usable config ({_first_line(e)})") from None


def _setup_weights(options: TrainSpec, config) -> None:
    """A local --model folder's weights checked before any work: none, corrupt headers, or weights that do not fit
    the config are one line."""
    folder = Path(options.model)
    if folder.is_dir():
        weights = sorted(folder.glob("*.safetensors"))
        if not weights and not any(folder.glob("*.bin")):
            raise UserError(f"--model {options.model}: the folder holds no weights (*.safetensors or *.bin)")
        for file in weights:
            _check_safetensors(file)
        _check_weights_fit(options.model, config)


def _check_weights_fit(model: str, config) -> None:
    """Load the folder's weights onto the meta device (no memory, no compute): a folder whose config.json names
    another architecture is refused here, before any work, not trained from random weights."""
    from transformers import AutoModelForCausalLM

    try:
        pair: Any = AutoModelForCausalLM.from_pretrained(  # (model, loading info) with output_loading_info
            model, config=config, device_map="meta", output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise UserError(f"--model {model}: cannot load the weights ({_first_line(e)})") from None
    _refuse_misfit(model, config, pair[1])


def _refuse_misfit(model: str, config, loading: dict) -> None:
    """A load that reports weights missing, unexpected or of another shape is refused in one line."""
    for problem in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        names = sorted(map(str, loading.get(problem) or ()))
        if names:
            raise UserError(
                f"--model {model}: the weights do not fit its config.json ({config.model_type}): "
                f"{len(names)} {problem.replace('_', ' ')} such as {names[0]!r}"
            )


def _check_safetensors(file: Path) -> None:
    """Read the header of a weights file: a corrupt or truncated one is one line, not a traceback at load."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), "np"):
            pass
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError) for unreadable files
        raise UserError(f"--model {file}: corrupt weights ({_first_line(e)})") from None


def _setup_tokens(
    options: TrainSpec,
    manifest: Manifest,
    entry: VariantData,
    tokenizer,
    chat: ChatFormat,
    cutoff_len: int,
    output: Location,
    work_dir: Path,
):
    log(f"chat format: {chat.name}, default system prompt {options.default_system!r}")
    return tokenized(
        options.data,
        options.variant,
        entry,
        tokenizer,
        chat,
        cutoff_len,
        output,
        work_dir,
        reilx=manifest.rules == "reilx",
    )


def _made_by(options: TrainSpec, entry: VariantData) -> dict:
    """What makes a checkpoint, recorded in each one: a run resumes only a checkpoint made alike."""
    lora = {f"lora.{k}": v for k, v in asdict(options.lora).items()} if options.method == "lora" else {}
    return {
        "variant": options.variant,
        "model": options.model,
        "dataset_sha256": entry.sha256,
        "method": options.method,
        **lora,
    }


def _setup_resume(output: Location, work_dir: Path, made_by: dict) -> Path | None:
    from neosft.train.checkpoints import resume_point

    return resume_point(output, work_dir, made_by)


def _setup_trainer(
    options: TrainSpec,
    args,
    ds_config,
    model_config,
    lora_targets: list[str],
    tokenizer,
    train_set,
    eval_set,
    collator,
    output: Location,
    work_dir: Path,
    loss_log,
    title: str,
    made_by: dict,
):
    """The Trainer with its callbacks: the loss log, the checkpoint uploader and the loss uploader (which also
    carries the TensorBoard event files, written under the work folder, to OUTPUT)."""
    from transformers import Trainer

    from neosft.train.checkpoints import CheckpointUploader
    from neosft.train.lossupload import TENSORBOARD, LossUploader

    events = work_dir / TENSORBOARD if options.report_to == "tensorboard" else None
    checkpoints = CheckpointUploader(
        output, args.save_total_limit or 2, lambda: losses_jsonl(loss_log.records), made_by
    )
    uploader = LossUploader(output, loss_log, title, options.upload_every_s, events)
    trainer = Trainer(
        model=_model(options, args, ds_config, model_config, lora_targets),
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[loss_log, checkpoints, uploader],
    )
    if events is not None:
        from transformers.integrations import TensorBoardCallback

        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback):
                callback.logging_dir = str(events)
    return trainer, uploader


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _datasets(tokens, tokenizer, options: TrainSpec, cutoff_len: int, seed: int):
    """(train set, eval set or None, collator): LLaMA-Factory's `--val-size` split, packed or one sample per item."""
    from transformers import DataCollatorForSeq2Seq

    from neosft.train.packing import FlattenCollator, PackedDataset, SampleDataset
    from neosft.train.tokenize import IGNORE_INDEX

    train_idx, eval_idx = split(len(tokens), options.val_size, seed)
    make: Callable[[Any], Dataset]
    collator: Callable
    if options.packing:
        make, collator = (lambda idx: PackedDataset(tokens, idx, cutoff_len)), FlattenCollator()
    else:
        make, collator = (
            (lambda idx: SampleDataset(tokens, idx)),
            DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX),
        )
    return make(train_idx), make(eval_idx) if len(eval_idx) else None, collator


def _model(options: TrainSpec, args, ds_config: str | None, config, lora_targets: list[str]):
    """The model to train; created after TrainingArguments so that ZeRO-3 partitions it while it loads. With LoRA,
    the frozen base with a new adapter (`neosft.train.lora`).

    Attention: flash-attention 2 on GPU when installed (packed rows become variable-length attention), else one
    SDPA per packed sample on CPU, else SDPA.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from neosft.train.args import checkpointing_of
    from neosft.train.packing import attention_implementation

    # full fine-tuning under DDP keeps fp32 weights under autocast; a frozen LoRA base needs no fp32 copy
    dtype = torch.bfloat16 if args.bf16 and (ds_config or options.method == "lora") else torch.float32
    try:
        pair: Any = AutoModelForCausalLM.from_pretrained(  # (model, loading info), as above
            options.model,
            config=config,
            dtype=dtype,
            attn_implementation=attention_implementation(options.packing),
            output_loading_info=True,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # corrupt or mismatched weights
        raise UserError(f"--model {options.model}: cannot load the weights ({_first_line(e)})") from None
    model, loading = pair
    _refuse_misfit(options.model, config, loading)
    model.config.use_cache = False  # a KV cache would also hide packed samples' borders from the attention mask
    if options.method == "lora":
        from neosft.train.lora import with_adapter

        model = with_adapter(model, options.lora, lora_targets, checkpointing_of(args), args.seed)
    return model


def train(prepared: Prepared):
    return prepared.trainer.train(resume_from_checkpoint=str(prepared.resume) if prepared.resume else None)


def save(prepared: Prepared, result) -> RunRecord:
    """final/: the model in safetensors (LoRA: the adapter, in the training dtype), tokenizer and config; loss.jsonl,
    loss.png and events beside; run.json last."""
    final = prepared.work_dir / "final"
    prepared.trainer.save_model(str(final))  # ZeRO-3: every rank takes part in gathering the 16-bit weights
    record = run_record(prepared, result)
    if dist.rank() == 0:
        if prepared.options.method == "lora":
            from neosft.train.lora import cast_adapter

            cast_adapter(final, bool(prepared.trainer.args.bf16))
        (final / "run.json").unlink(missing_ok=True)
        (prepared.output / "final").upload_dir(final)
        prepared.uploader.final()
        record.write(prepared.output)
        log(
            f"wrote {prepared.output}/final (loss {record.final_loss}, {record.steps} steps, "
            f"{record.tokens:,} tokens, {record.wall_time_s:.0f} s)"
        )
    dist.barrier()
    dist.release_deepspeed()  # training ended: a later from_pretrained (merge, eval) loads whole weights
    return record


def run_record(prepared: Prepared, result) -> RunRecord:
    """run.json: what was trained, on what, with which arguments, and how it went."""
    state, args, options = prepared.trainer.state, prepared.trainer.args, prepared.options
    losses = train_losses(prepared.loss_log.records)
    recorded = arguments_record(prepared.hyperparameters, prepared.overrides, args)
    world = dist.world_size()
    return RunRecord(
        variant=options.variant,
        model=options.model,
        **recorded,
        batch={
            "world_size": world,
            "per_device": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "total_train_batch": args.per_device_train_batch_size * args.gradient_accumulation_steps * world,
            "per_device_eval": args.per_device_eval_batch_size,
            "total_eval_batch": args.per_device_eval_batch_size * world,
            "overridden": sorted(
                {"gradient_accumulation_steps", "per_device_eval_batch_size", "per_device_train_batch_size"}
                & prepared.overrides.keys()
            ),
        },
        method=options.method,
        lora={
            **options.lora.record(),
            "target_modules": prepared.lora_targets,
            "adapter_dtype": "bfloat16" if args.bf16 else "float32",
        }
        if options.method == "lora"
        else None,
        deepspeed=options.zero,
        packing=options.packing,
        chat_format=prepared.chat.name,
        default_system=options.default_system,
        report_to=options.report_to,
        liger=bool(args.use_liger_kernel),
        checkpointing=prepared.checkpointing.record(),
        world_size=world,
        dataset={
            "uri": options.data,
            "sha256": prepared.entry.sha256,
            "rows": prepared.entry.rows,
            "source_sha256": prepared.manifest.source.sha256,
        },
        samples=prepared.samples,
        truncated=prepared.truncated,
        resumed_from=prepared.resume.name if prepared.resume else None,
        neosft_version=__version__,
        steps=state.global_step,
        tokens=state.num_input_tokens_seen,
        wall_time_s=round(prepared.loss_log.elapsed_before + time.monotonic() - prepared.started, 3),
        train_runtime_s=result.metrics["train_runtime"],
        train_loss=result.training_loss,
        final_loss=losses[-1].loss if losses else None,
    )

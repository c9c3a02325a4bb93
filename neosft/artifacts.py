"""The artifact contracts: each file one module writes and another reads, as a type with its only writer and reader."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from neosft.errors import UserError
from neosft.storage import Location, location

# checking what was read ----------------------------------------------------------------------------------------

MAX_NUMBER = 1e12  # no count, time or rate neosft writes comes near; 1e300 seconds would overflow a duration


Loss = float  # a cross-entropy: a number from 0 to MAX_NUMBER, or NaN or Infinity where the model diverged


def diverged(loss: float | None) -> bool:
    """Whether a recorded loss is the NaN or Infinity of a model that diverged."""
    return loss is not None and not math.isfinite(loss)


def shown(loss: float | None, digits: int = 4) -> str:
    """A loss as printed: '-' when there is none, 'diverged' for NaN or Infinity."""
    return "-" if loss is None else "diverged" if diverged(loss) else f"{loss:.{digits}f}"


class _Invalid(Exception):
    """A field of the wrong type, sign or size; its message names the field."""


def _valid(value, kind: str, name: str):
    """`value` if it is of the annotated `kind` (the dataclass field's annotation); numbers finite, 0 to MAX_NUMBER."""
    if kind.endswith(" | None"):
        return None if value is None else _valid(value, kind[: -len(" | None")], name)
    if kind == "Loss" and isinstance(value, float) and (math.isnan(value) or value == math.inf):
        return value  # diverged: recorded as such, never refused
    if kind in ("int", "float", "Loss"):
        number = isinstance(value, int if kind == "int" else (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not 0 <= value <= MAX_NUMBER:
            raise _Invalid(
                f"{name} is {json.dumps(value)[:40]}, not {'a count' if kind == 'int' else 'a number'} "
                f"from 0 to {MAX_NUMBER:g}"
            )
        return value
    simple: dict[str, Any] = {
        "str": str,
        "bool": bool,
        "dict": dict,
        "list[str]": list,
        "list[int]": list,
        "list[float]": list,
        "list[Loss]": list,
        "list[dict]": list,
        "dict[str, int]": dict,
    }
    if kind not in simple:  # a nested artifact type: its caller builds and checks it
        return value
    if not isinstance(value, simple[kind]):
        raise _Invalid(f"{name} is {json.dumps(value)[:40]}, not {kind}")
    if kind == "list[str]" and not all(isinstance(v, str) for v in value):
        raise _Invalid(f"{name} holds a value that is not a string")
    if kind in ("list[int]", "list[float]", "list[Loss]"):
        for i, number in enumerate(value):
            _valid(number, kind[5:-1], f"{name}[{i}]")
    if kind == "dict[str, int]":
        for key, count in value.items():
            _valid(count, "int", f"{name}.{key}")
    return value


def _typed(cls, fields: dict, where: str = ""):
    """`cls(**fields)` with every field checked against its annotation; an unknown, missing or wrongly typed field
    is `_Invalid`."""
    if not isinstance(fields, dict):
        raise _Invalid(f"{where.rstrip('.') or 'it'} is not a JSON object")
    checked = {}
    for f in dataclasses.fields(cls):
        if f.name in fields:
            checked[f.name] = _valid(fields[f.name], str(f.type), where + f.name)
    unknown = set(fields) - set(checked)
    if unknown:
        raise _Invalid(f"unknown field {min(unknown)!r}")
    try:
        return cls(**checked)
    except TypeError:
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in checked and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        raise _Invalid(f"{where}{missing[0] if missing else '?'} is missing") from None


def _inside(names: list[str], where: str) -> None:
    """File names relative to the dataset folder that stay in it: no absolute path, '..', '.' or empty part."""
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
            raise _Invalid(f"{where} names {json.dumps(name)[:80]}, a path that leaves the dataset folder")


def _check_stats(stats: dict, where: str) -> None:
    """The length statistics `neosft plan` reads: characters of instruction and output (and tokens, when counted)."""
    for key in ("instruction_chars", "output_chars", *(("tokens",) if "tokens" in stats else ())):
        part = stats.get(key)
        if not isinstance(part, dict) or "total" not in part:
            raise _Invalid(f"{where}.{key} is missing")
        for name, value in part.items():
            _valid(value, "int", f"{where}.{key}.{name}")
    if "tokens" in stats:
        for name in ("total_within_cutoff", "over_cutoff"):
            _valid(stats["tokens"].get(name), "int", f"{where}.tokens.{name}")


# manifest.json ----------------------------------------------------------------------------------

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SourceInfo:
    """What the build read: `uri` as given, the resolved `revision` (a Hub commit sha), and the stored
    bytes' sha256 and size, with the number of records in them."""

    uri: str
    sha256: str
    bytes: int
    records: int
    revision: str | None = None


@dataclass(frozen=True)
class PublishedMatch:
    """A variant's bytes against the file REILX published from the same corpus (see `neosft.data.published`)."""

    uri: str
    sha256: str
    bytes: int | None  # None: REILX's size is not known to the byte
    equal: bool  # the variant's bytes (its parts concatenated) are REILX's file


@dataclass(frozen=True)
class VariantData:
    """One variant's dataset: its rows in `files` (paths relative to the dataset folder, in order) and the
    sha256 and size of those files concatenated; `stats` holds the length statistics (see `neosft.data.stats`),
    `skipped` the records this variant's rule skipped, by reason (under the seed rules, the build's `skipped`),
    `published` the comparison with REILX's file when the source is the corpus REILX converted."""

    rows: int
    files: list[str]
    sha256: str
    has_system: bool
    stats: dict
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    published: PublishedMatch | None = None


@dataclass(frozen=True)
class HeldOut:
    """The source records `--holdout` set aside before any variant (see `neosft.data.holdout`): `records` of them in
    ShareGPT form in `file` (sha256 `sha256`), chosen by `rule` (from the option `spec`), and each variant's rows built
    from them in `variants`; no variant's training rows come from them."""

    records: int
    file: str
    sha256: str
    spec: str
    rule: str
    variants: dict[str, VariantData]


@dataclass(frozen=True)
class Manifest:
    """DEST/manifest.json: written last by `neosft data build`; a reader reads only the parts it names.
    `skipped` counts the records no variant used, under the first variant's reason; `rules` is `seed` or `reilx`."""

    source: SourceInfo
    options: dict
    skipped: dict[str, int]
    kept: int
    variants: dict[str, VariantData]
    parts: str  # the folder under DEST that holds this build's parts: DEST/<parts>/<variant>/part-*.jsonl
    build_id: str | None
    neosft_version: str
    created: str
    warnings: list[str] = field(default_factory=list)
    rules: str = "seed"
    heldout: HeldOut | None = None  # None: built with --holdout 0

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False).encode() + b"\n"

    def write(self, folder: Location) -> None:
        (folder / MANIFEST).write_bytes(self.to_json())

    @classmethod
    def from_json(cls, data: bytes, where: str = MANIFEST) -> Manifest:
        try:
            raw = json.loads(data)
            manifest = _typed(cls, raw)
            variants = _valid(raw["variants"], "dict", "variants")
            built = {}
            for name, v in variants.items():
                built[name] = _typed(VariantData, v, f"variants.{name}.")
                if built[name].published is not None:
                    published = _typed(PublishedMatch, built[name].published, f"variants.{name}.published.")
                    built[name] = dataclasses.replace(built[name], published=published)
                _check_stats(built[name].stats, f"variants.{name}.stats")
                _inside(built[name].files, f"variants.{name}.files")
            _inside([manifest.parts], "parts")
            heldout = manifest.heldout
            if heldout is not None:
                heldout = _typed(HeldOut, heldout, "heldout.")
                held = _valid(heldout.variants, "dict", "heldout.variants")
                heldout = dataclasses.replace(
                    heldout,
                    variants={name: _typed(VariantData, v, f"heldout.variants.{name}.") for name, v in held.items()},
                )
                _inside([heldout.file], "heldout.file")
                training = {f for v in built.values() for f in v.files}
                for name, v in heldout.variants.items():
                    _inside(v.files, f"heldout.variants.{name}.files")
                    same = name in built and v.rows and v.sha256 == built[name].sha256  # a copy of the training rows
                    if training & {heldout.file, *v.files} or same:
                        raise _Invalid(f"heldout.variants.{name} holds training rows")
            return dataclasses.replace(
                manifest, source=_typed(SourceInfo, raw["source"], "source."), variants=built, heldout=heldout
            )
        except (ValueError, RecursionError):
            problem = "not valid JSON"
        except _Invalid as e:
            problem = str(e)
        raise UserError(
            f"{where} is not a manifest of this neosft version ({problem}): rebuild the dataset with "
            "`neosft data build`"
        )

    @classmethod
    def read(cls, folder: str | Location) -> Manifest:
        """The manifest of the dataset in `folder`; a `UserError` when there is none or it is not one."""
        loc = (location(folder) if isinstance(folder, str) else folder) / MANIFEST
        if not loc.exists():
            raise UserError(
                f"no dataset at {folder} (no {MANIFEST}): build it with `neosft data build SOURCE --out {folder}`"
            )
        return cls.from_json(loc.read_bytes(), str(loc))

    def variant(self, name: str, folder: str = "the dataset") -> VariantData:
        """The entry of variant `name`; a `UserError` naming what `folder` holds when it has none."""
        if name not in self.variants:
            raise UserError(f"{folder} has no {name!r} dataset (it has {', '.join(self.variants) or 'none'})")
        return self.variants[name]


# loss.jsonl ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossRecord:
    """One logging step of rank 0, in the fields of LLaMA-Factory's trainer_log.jsonl plus grad_norm and elapsed_s.

    A train step has `loss`, an evaluation `eval_loss`; the fields that do not apply are left out of the file.
    """

    current_steps: int
    total_steps: int
    epoch: float
    total_tokens: int
    throughput: float  # tokens/s since this process started
    percentage: float
    elapsed_s: float  # over every attempt of the run, resumes included
    elapsed_time: str
    remaining_time: str
    loss: Loss | None = None
    eval_loss: Loss | None = None
    grad_norm: Loss | None = None
    lr: float | None = None


_LOSS_FIELDS = {f.name for f in dataclasses.fields(LossRecord)}


LOSSES = "loss.jsonl"  # under a run's OUTPUT, and in each of its checkpoints


def losses_jsonl(records: list[LossRecord]) -> bytes:
    """loss.jsonl: one JSON object per record, without the fields that do not apply."""
    return b"".join(
        json.dumps({k: v for k, v in dataclasses.asdict(r).items() if v is not None}).encode() + b"\n" for r in records
    )


def read_losses(data: bytes, where: str = LOSSES) -> list[LossRecord]:
    """The records of a loss.jsonl; a line that is not one is a `UserError` naming `where`."""
    records = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            records.append(
                _typed(
                    LossRecord,
                    {k: v for k, v in fields.items() if k in _LOSS_FIELDS} if isinstance(fields, dict) else fields,
                )
            )
        except (ValueError, RecursionError):
            raise UserError(f"{where} line {number} is not a loss record (not valid JSON)") from None
        except _Invalid as e:
            raise UserError(f"{where} line {number} is not a loss record ({e})") from None
    return records


def train_losses(records: list[LossRecord]) -> list[LossRecord]:
    """The records of training steps (those with a loss), in order."""
    return [r for r in records if r.loss is not None]


# run.json -----------------------------------------------------------------------------------------------------

RUN_RECORD = "final/run.json"  # under the run's OUTPUT; written last, so its presence means the run finished


@dataclass(frozen=True)
class RunRecord:
    """What was trained, on what, with which arguments, and how it went."""

    variant: str
    model: str
    hyperparameters: dict  # the variant's table row, overrides applied
    overrides: dict  # --set, as given
    training_arguments: dict  # every TrainingArguments field
    batch: dict  # world_size, per_device, gradient_accumulation_steps, total_train_batch, eval batches, derived
    deepspeed: str
    packing: bool
    chat_format: str
    default_system: str
    report_to: str
    liger: bool
    world_size: int
    dataset: dict  # uri, sha256, rows, source_sha256
    samples: int
    truncated: int
    resumed_from: str | None
    neosft_version: str
    steps: int
    tokens: int
    wall_time_s: float
    train_runtime_s: float
    train_loss: Loss
    final_loss: Loss | None
    method: str = "full"  # lora or full (a record without it was written before LoRA: full)
    lora: dict | None = None  # with lora: rank, alpha, dropout, target, bias, modules_to_save, adapter_dtype
    checkpointing: dict | None = None  # activation checkpointing: enabled, reason (None: written before it)
    extra: dict = field(default_factory=dict)  # fields of a newer neosft, kept as read

    def to_json(self) -> bytes:
        record = dataclasses.asdict(self)
        return json.dumps({**record.pop("extra"), **record}, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = "run.json") -> RunRecord:
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict):
                raise _Invalid("not a JSON object")
            known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            return _typed(
                cls,
                {
                    **{k: v for k, v in fields.items() if k in known},
                    "extra": {k: v for k, v in fields.items() if k not in known},
                },
            )
        except (ValueError, RecursionError):
            problem = "not valid JSON"
        except _Invalid as e:
            problem = str(e)
        raise UserError(f"{where} is not a neosft run record ({problem})")

    @classmethod
    def read(cls, output) -> RunRecord | None:
        """The run record of the run at `output` (a storage Location), or None while the run has not finished."""
        where = output / RUN_RECORD
        return cls.from_json(where.read_bytes(), str(where)) if where.exists() else None

    def write(self, output) -> None:
        (output / RUN_RECORD).write_bytes(self.to_json())


def _check_benchmarks(benchmarks: dict) -> None:
    """{task: {metric: {"value": number, "stderr": number or null}}}, every number finite (a score may be negative)."""
    for task, metrics in benchmarks.items():
        if not isinstance(metrics, dict):
            raise _Invalid(f"benchmarks.{task} is not a JSON object")
        for metric, score in metrics.items():
            where = f"benchmarks.{task}.{metric}"
            if not isinstance(score, dict) or set(score) != {"value", "stderr"}:
                raise _Invalid(f"{where} is not {{value, stderr}}")
            for key in ("value", "stderr"):
                number = score[key]
                if key == "stderr" and number is None:
                    continue
                if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
                    raise _Invalid(f"{where}.{key} is {json.dumps(number)[:40]}, not a finite number")


# a checkpoint's COMPLETE.json ----------------------------------------------------------------------------------

CHECKPOINT_MARKER = "COMPLETE.json"  # in OUTPUT/checkpoints/checkpoint-N/, written last: the checkpoint is whole


@dataclass(frozen=True)
class CheckpointMarker:
    """A whole checkpoint: its step, the nodes that uploaded their parts, and what made it (`made_by`: variant, model,
    dataset sha256, method, LoRA settings), which a run resuming from it must match; None: an older neosft wrote it."""

    step: int
    nodes: int
    made_by: dict | None = None

    def write(self, checkpoint: Location) -> None:
        (checkpoint / CHECKPOINT_MARKER).write_bytes(json.dumps(dataclasses.asdict(self)).encode())

    @classmethod
    def read(cls, checkpoint: Location) -> CheckpointMarker:
        where = checkpoint / CHECKPOINT_MARKER
        try:
            return _typed(cls, json.loads(where.read_bytes()))
        except (ValueError, RecursionError):
            problem = "not valid JSON"
        except _Invalid as e:
            problem = str(e)
        raise UserError(f"{where} is not a neosft checkpoint marker ({problem})")


# eval.json ----------------------------------------------------------------------------------------------------

EVAL_RECORD = "eval.json"  # under a run's OUTPUT, and under RUN/base/ for the base model


@dataclass(frozen=True)
class LossSummary:
    """A token-weighted mean cross-entropy over `tokens` label tokens of `samples` samples, and its exp."""

    loss: Loss
    perplexity: Loss
    tokens: int
    samples: int


@dataclass(frozen=True)
class _Sample:
    prompt: str
    answer: str


@dataclass(frozen=True)
class EvalRecord:
    """What `neosft.eval` measured of one model on a dataset's held-out records.

    `chat`: the loss over LLaMA-Factory's multi-turn labels of the held-out conversations, the same tokens for every
    model; `conversation_loss` and `conversation_tokens`: its summed cross-entropy and label-token count per held-out
    conversation, in the held-out file's order (what the paired bootstrap resamples); `matrix`: the response loss on
    each variant's held-out rows; `samples`: greedy answers to the first prompts.
    """

    name: str  # the variant, or "base"
    method: str  # "lora", "full" or "base"
    model: str  # what was loaded: OUTPUT/final, or the base model
    dataset: str  # the dataset folder
    heldout_sha256: str
    cutoff_len: int
    chat: LossSummary
    conversation_loss: list[Loss]  # NaN where the model diverged
    conversation_tokens: list[int]
    matrix: dict[str, LossSummary]
    samples: list[dict]  # {"prompt", "answer"}
    world_size: int
    elapsed_s: float
    tokens_per_s: float  # scored tokens (input, labels or not) per second, over every rank
    neosft_version: str
    # lm-evaluation-harness tasks asked for (`--benchmarks`): {task: {metric: {"value", "stderr"}}}, the harness's
    # standard error (None where it gives none); empty until that stage has run
    benchmarks: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str = EVAL_RECORD) -> EvalRecord:
        """The record in `data`; a `UserError` naming the first field of the wrong type, or per-conversation scores
        that do not add up to the chat loss's counts."""
        try:
            raw = json.loads(data)
            record = _typed(cls, raw)
            samples = [_typed(_Sample, s, f"samples[{i}].") for i, s in enumerate(record.samples)]
            chat = _typed(LossSummary, record.chat, "chat.")
            record = dataclasses.replace(
                record,
                chat=chat,
                matrix={
                    n: _typed(LossSummary, v, f"matrix.{n}.")
                    for n, v in _valid(record.matrix, "dict", "matrix").items()
                },
                samples=[dataclasses.asdict(s) for s in samples],
            )
            _check_benchmarks(record.benchmarks)
        except (ValueError, RecursionError):
            raise UserError(f"{where} is not an eval record (not valid JSON): run `neosft eval` again") from None
        except _Invalid as e:
            raise UserError(
                f"{where} is not an eval record of this neosft version ({e}): run `neosft eval` again"
            ) from None
        n, tokens = len(record.conversation_loss), record.conversation_tokens
        if len(tokens) != n or n != chat.samples or sum(tokens) != chat.tokens:
            raise UserError(
                f"{where}: {n} conversation losses and {len(tokens)} token counts ({sum(tokens):,} tokens) do not match "
                f"the chat loss's {chat.samples} conversations ({chat.tokens:,} tokens): run `neosft eval` again"
            )
        return record

    @classmethod
    def read(cls, folder: Location) -> EvalRecord | None:
        """The eval record in `folder` (a run's OUTPUT or RUN/base), or None when it has not been evaluated."""
        where = folder / EVAL_RECORD
        return cls.from_json(where.read_bytes(), str(where)) if where.exists() else None

    def write(self, folder: Location) -> None:
        (folder / EVAL_RECORD).write_bytes(self.to_json())

"""One model on a dataset's held-out records -> its `EvalRecord`.

Chat loss: the held-out conversations as LLaMA-Factory's `qwen` template trains on them (every assistant turn a
label, `cutoff_len` 8192, see `tokenize_conversations`): the same tokens for every model. The format matrix: the
response loss on each variant's held-out rows, encoded as that variant trains (its cutoff_len). Samples: greedy
answers to the first round of the first K held-out conversations.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from neosft import __version__
from neosft.artifacts import EvalRecord, Manifest, RunRecord
from neosft.chat import DEFAULT_SYSTEM, ChatFormat, turns
from neosft.data.records import Conversation, parse_record
from neosft.errors import UserError
from neosft.eval import CHAT_CUTOFF, MAX_NEW_TOKENS
from neosft.progress import log
from neosft.storage import Location, location
from neosft.train.spec import EVAL_SAMPLES
from neosft.variants import VARIANTS


@dataclass(frozen=True)
class Settings:
    """What an eval asks for: greedy samples and their length, the chat loss's cutoff_len and default system."""

    samples: int = EVAL_SAMPLES
    max_new_tokens: int = MAX_NEW_TOKENS
    cutoff_len: int = CHAT_CUTOFF
    default_system: str = DEFAULT_SYSTEM


DEFAULTS = Settings()


@dataclass(frozen=True)
class HeldOutSet:
    """A dataset's held-out records, read back: the conversations and each variant's rows."""

    dataset: str
    sha256: str
    conversations: list[Conversation]
    rows: dict[str, list[dict]]


def read_heldout(dataset: str) -> HeldOutSet:
    """The held-out records of the dataset at `dataset`; a `UserError` when it was built without any."""
    folder = location(dataset)
    manifest = Manifest.read(folder)
    held = manifest.heldout
    if held is None or not held.records:
        raise UserError(f"{dataset} has no held-out records: rebuild it with `neosft data build --holdout N|P%`")
    conversations = [parse_record(json.loads(line)) for line in (folder / held.file).read_bytes().splitlines()]
    rows = {
        name: [json.loads(line) for f in v.files for line in (folder / f).read_bytes().splitlines()]
        for name, v in held.variants.items()
    }
    return HeldOutSet(dataset, held.sha256, [c for c in conversations if not isinstance(c, str)], rows)


def prompts(held: HeldOutSet, settings: Settings) -> list[str]:
    """The first round's prompt (system and user) of the first `settings.samples` conversations."""
    out = []
    for conversation in held.conversations[: settings.samples]:
        [(system, user, _)] = turns(conversation.rounds[:1], conversation.system, settings.default_system)
        out.append(system + user)
    return out


def evaluate(
    model, tokenizer, held: HeldOutSet, name: str, method: str, model_name: str, settings: Settings = DEFAULTS
) -> EvalRecord:
    """Score `model` (on its device; every rank of a process group takes a share) on `held`."""
    from neosft.eval.score import answers, score, summary
    from neosft.train import dist
    from neosft.train.tokenize import tokenize, tokenize_conversations

    started, scored = time.monotonic(), 0
    chat_tokens = tokenize_conversations(
        [(c.system, c.rounds) for c in held.conversations], tokenizer, settings.cutoff_len, settings.default_system
    )
    loss, labels, inputs = score(model, chat_tokens, tokenizer.pad_token_id)
    chat, scored = summary(loss, labels, len(chat_tokens)), scored + inputs
    matrix = {}
    for variant, rows in held.rows.items():
        tokens = tokenize(rows, tokenizer, VARIANTS[variant].cutoff_len, ChatFormat(tokenizer, settings.default_system))
        loss, labels, inputs = score(model, tokens, tokenizer.pad_token_id)
        matrix[variant], scored = summary(loss, labels, len(tokens)), scored + inputs
    elapsed = time.monotonic() - started
    questions = prompts(held, settings)
    texts = answers(model, tokenizer, questions, settings.max_new_tokens) if questions else []
    log(
        f"eval {name}: chat loss {chat.loss:.4f} (perplexity {chat.perplexity:.2f}) on {chat.tokens:,} tokens of "
        f"{chat.samples} held-out conversations, {scored / max(elapsed, 1e-9):,.0f} tokens/s"
    )
    return EvalRecord(
        name=name,
        method=method,
        model=model_name,
        dataset=held.dataset,
        heldout_sha256=held.sha256,
        cutoff_len=settings.cutoff_len,
        chat=chat,
        matrix=matrix,
        samples=[{"prompt": q, "answer": a} for q, a in zip(questions, texts)],
        world_size=dist.shard()[1],
        elapsed_s=round(time.monotonic() - started, 3),
        tokens_per_s=round(scored / max(elapsed, 1e-9), 1),
        neosft_version=__version__,
    )


# loading --------------------------------------------------------------------------------------------------------


def _device():
    import torch

    from neosft.train import dist

    return torch.device("cuda", dist.local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def load_model(folder: str | Path):
    """A causal LM for scoring, in bf16 on a GPU (float32 on CPU), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    device = _device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def same_tokenizer(tokenizer, reference, what: str, whose: str) -> None:
    """A `UserError` unless `tokenizer` (of `what`) has the vocabulary of `reference` (the run's, at `whose`)."""
    if tokenizer.get_vocab() != reference.get_vocab():
        raise UserError(
            f"{what}: its tokenizer is not the run's ({len(tokenizer):,} tokens vs {len(reference):,} in "
            f"{whose}); evaluate with the model the run trained"
        )


def load_output(final: Path):
    """(model, tokenizer, method) of a run's final/: a PEFT adapter over the base its adapter_config.json names, or
    full weights; the base's tokenizer must be the run's."""
    tokenizer = load_tokenizer(final)
    config = final / "adapter_config.json"
    if not config.exists():
        return load_model(final), tokenizer, "full"
    from peft import PeftModel

    base = json.loads(config.read_text())["base_model_name_or_path"]
    same_tokenizer(load_tokenizer(base), tokenizer, f"the adapter's base model {base}", str(final))
    return PeftModel.from_pretrained(load_model(base), str(final)).eval(), tokenizer, "lora"


def finished_run(output: Location) -> RunRecord:
    """The run record at `output`; a `UserError` when it holds no finished run."""
    try:
        record = RunRecord.read(output)
    except UserError:
        record = None
    if record is None:
        raise UserError(f"{output} is not a finished run (no final/run.json): train it first, or name a run's OUTPUT")
    return record


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def local_tokenizer(output: Location, work: Path) -> Path:
    """A local folder with the tokenizer of the run at `output` (only its tokenizer files downloaded when remote)."""
    final = output / "final"
    here = final.local_path()
    if here is not None:
        return here
    (work / "tokenizer").mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (final / name).exists():
            (final / name).download(work / "tokenizer" / name)
    return work / "tokenizer"


def local_final(output: Location, work: Path) -> Path:
    """The run's final/ as a local folder (downloaded from object storage into `work` when needed)."""
    final = output / "final"
    here = final.local_path()
    if here is not None:
        return here
    dest = work / "final"
    if not (dest / "run.json").exists():
        log(f"downloading {final}")
        final.download_dir(dest)
    return dest

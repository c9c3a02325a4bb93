"""The one table of SFT variants: how each dataset is cut from a conversation and how it is trained.

Everything else (data builder, trainer, chart values, CLI, docs) reads this module; no other file
repeats a number from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import AnyStr, Literal, Protocol

from neosft.errors import UserError

Round = tuple[str, str]  # (human, gpt); a rule's pairs are (instruction, output)
# The rules also take the builder's escaped JSON bodies, as bytes.


class Rule(Protocol):
    def __call__(self, rounds: Sequence[tuple[AnyStr, AnyStr]], joiner: AnyStr) -> Iterator[tuple[AnyStr, AnyStr]]: ...


def _conversations(rounds: Sequence[tuple[AnyStr, AnyStr]], joiner: AnyStr) -> Iterator[tuple[AnyStr, AnyStr]]:
    history: list[AnyStr] = []
    for human, gpt in rounds:
        history.append(human)
        yield joiner.join(history), gpt
        history.append(gpt)


def _multi(rounds: Sequence[tuple[AnyStr, AnyStr]], joiner: AnyStr) -> Iterator[tuple[AnyStr, AnyStr]]:
    yield joiner.join(h for h, _ in rounds), joiner.join(g for _, g in rounds)


def _single(rounds: Sequence[tuple[AnyStr, AnyStr]], joiner: AnyStr) -> Iterator[tuple[AnyStr, AnyStr]]:
    if len(rounds) == 1:
        yield rounds[0]


def _all_pair(rounds: Sequence[tuple[AnyStr, AnyStr]], joiner: AnyStr) -> Iterator[tuple[AnyStr, AnyStr]]:
    yield from rounds


Lengths = tuple[list[int], list[int]]  # the rows' instruction and output lengths
Turns = Sequence[tuple[int, int]]  # one conversation's (human, gpt) lengths


# The rules on lengths take many conversations at once: one call per batch, not per record.
def _conversations_lengths(conversations: Sequence[Turns], width: int) -> Lengths:
    instructions = []
    for turns in conversations:
        total = -width
        for human, gpt in turns:
            total += width + human
            instructions.append(total)
            total += width + gpt
    return instructions, [gpt for turns in conversations for _, gpt in turns]


def _multi_lengths(conversations: Sequence[Turns], width: int) -> Lengths:
    instructions, outputs = [], []
    for turns in conversations:
        humans, gpts = zip(*turns)
        gaps = width * (len(turns) - 1)
        instructions.append(sum(humans) + gaps)
        outputs.append(sum(gpts) + gaps)
    return instructions, outputs


def _single_lengths(conversations: Sequence[Turns], width: int) -> Lengths:
    singles = [turns[0] for turns in conversations if len(turns) == 1]
    return [human for human, _ in singles], [gpt for _, gpt in singles]


def _all_pair_lengths(conversations: Sequence[Turns], width: int) -> Lengths:
    return [human for turns in conversations for human, _ in turns], [
        gpt for turns in conversations for _, gpt in turns
    ]


@dataclass(frozen=True)
class Variant:
    name: str
    rule: str
    learning_rate: float
    cutoff_len: int
    pairs: Rule
    # the same rule on lengths: many conversations' (human, gpt) lengths and the joiner's length -> their rows'
    # lengths, in order (the builder's statistics; a test holds it equal to `pairs` on strings)
    lengths: Callable[[Sequence[Turns], int], Lengths]

    def hyperparameters(self) -> dict:
        """Every training hyper-parameter of this variant, named as in `transformers.TrainingArguments`."""
        return {"learning_rate": self.learning_rate, "cutoff_len": self.cutoff_len, **SHARED}


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "conversations",
            "a row per round; the instruction holds every earlier round",
            5e-6,
            8192,
            _conversations,
            _conversations_lengths,
        ),
        Variant(
            "multi", "a row per record: all questions joined -> all answers joined", 5e-5, 8192, _multi, _multi_lengths
        ),
        Variant("single", "single-round records only: question -> answer", 5e-5, 4096, _single, _single_lengths),
        Variant(
            "all_pair", "a row per round: question -> answer, no history", 2e-5, 4096, _all_pair, _all_pair_lengths
        ),
    )
}

# How rows are cut from a record: `seed`, the model card's wording (the table above, `neosft.data.records`), or
# `reilx`, REILX's published scripts byte for byte (`neosft.data.reilx`).
RULES = ("seed", "reilx")
DEFAULT_RULES = "seed"

NUM_DEVICES = 8  # the seed's world size; the totals below hold at any world size
TOTAL_TRAIN_BATCH = 64  # samples per optimizer step, over every device
TOTAL_EVAL_BATCH = 64  # samples per eval step, over every device

SHARED: dict = {
    "per_device_train_batch_size": 1,
    "num_train_epochs": 5,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.1,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "seed": 42,
}


def _share(total: int, world_size: int, per_device: int, what: str, setting: str) -> int:
    if world_size < 1 or per_device < 1 or total % (world_size * per_device):
        raise UserError(
            f"total {what} batch {total} is not divisible by {world_size} device(s) x {per_device} per "
            f"device: use a world size that divides it, or --set {setting}=N (run.json records it)"
        )
    return total // (world_size * per_device)


def gradient_accumulation(
    world_size: int, per_device: int = SHARED["per_device_train_batch_size"], total: int = TOTAL_TRAIN_BATCH
) -> int:
    """Micro-steps per optimizer step so that `world_size` devices train at `total` samples per step."""
    return _share(total, world_size, per_device, "train", "gradient_accumulation_steps")


def per_device_eval_batch(world_size: int, total: int = TOTAL_EVAL_BATCH) -> int:
    """Eval samples per device so that `world_size` devices evaluate `total` samples per step."""
    return _share(total, world_size, 1, "eval", "per_device_eval_batch_size")


def get(name: str) -> Variant:
    """The variant called `name`; a `UserError` names the valid choices."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}") from None


# LoRA ----------------------------------------------------------------------------------------------------------

METHODS = ("lora", "full")
DEFAULT_METHOD = "lora"  # what the seed's author published: LoRA adapters (see the README's "LoRA" section)
ALL_LINEAR = "all"  # LLaMA-Factory's `lora_target: all`: every linear module of the model but lm_head


@dataclass(frozen=True)
class Lora:
    """The LoRA settings: inferred from the seed's published adapters (80.7 MB = rank 16 in bf16 on Qwen2-7B's seven
    decoder projections) and the author's other adapter's config (r 16, alpha 32, dropout 0, every projection)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target: str = ALL_LINEAR  # `all`, or comma-separated module names (q_proj,v_proj)
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: tuple[str, ...] = ()

    def check(self) -> Lora:
        """These settings; a `UserError` names the first one out of range."""
        if self.rank < 1:
            raise UserError(f"--lora-rank {self.rank}: expected an integer above 0")
        if not self.alpha > 0:
            raise UserError(f"--lora-alpha {self.alpha}: expected a number above 0")
        if not 0 <= self.dropout < 1:
            raise UserError(f"--lora-dropout {self.dropout}: expected a fraction in [0, 1)")
        if not self.targets():
            raise UserError(f"--lora-target {self.target!r}: expected `all` or comma-separated module names")
        return self

    def fits(self, linear: dict[str, tuple[int, int]], model: str) -> list[str]:
        """The modules the adapter wraps on a model whose linear modules (`all`'s, name: (in, out) features) are
        `linear`; a `UserError` for a target the model lacks, or a rank above a wrapped module's smaller side (its
        LoRA factors would only add parameters, and a huge rank ends in an allocation failure)."""
        targets = sorted(linear) if self.targets() == [ALL_LINEAR] else self.targets()
        missing = [t for t in targets if t not in linear]
        if missing:
            raise UserError(
                f"--lora-target {missing[0]}: {model} has no such module (its linear modules: "
                f"{', '.join(sorted(linear))}, or `all`)"
            )
        bound = min(min(linear[t]) for t in targets)
        if self.rank > bound:
            raise UserError(f"--lora-rank {self.rank}: above {bound}, the smallest side of {model}'s wrapped modules")
        return targets

    def targets(self) -> list[str]:
        """The target as given: ["all"] or the module names."""
        return [name.strip() for name in self.target.split(",") if name.strip()]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def record(self) -> dict:
        """The settings as run.json and `neosft variants --json` show them."""
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "target": self.target,
            "bias": self.bias,
            "modules_to_save": list(self.modules_to_save),
        }


LORA = Lora()

# Qwen2-7B's config.json (the dimensions `neosft plan` and the submit-time LoRA check use)
QWEN2_7B = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "tie_word_embeddings": False,
}


def qwen2_linear(config: dict = QWEN2_7B) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear projection of a Qwen2 decoder layer (transformers' Qwen2Attention, Qwen2MLP)."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    return {
        "q_proj": (h, h),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (h, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


# REILX's own run of the seed, as its published artifacts show it (the README's "REILX's run"): REILX's conversion
# scripts byte for byte, every record (no held-out split), LoRA adapters at the settings above, and the table's
# hyper-parameters untouched. `neosft submit --reilx` and `neosft run --reilx` set exactly these chart values.
REILX_RUN: dict = {
    "data": {"rules": "reilx", "holdout": "0"},
    "train": {
        "method": "lora",
        "lora": {"rank": LORA.rank, "alpha": LORA.alpha, "dropout": LORA.dropout, "target": LORA.target},
    },
}


def reilx_run(values: dict) -> dict:
    """`values` with REILX_RUN set; a value of the user's that contradicts it, or a table hyper-parameter changed
    through train.set or train.variantSet, is refused in one line rather than overridden."""

    def leaves(node: dict, prefix: str = "") -> list[tuple[str, object]]:
        return [
            leaf
            for key, value in node.items()
            for leaf in (leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [(f"{prefix}{key}", value)])
        ]

    for key, wanted in leaves(REILX_RUN):
        node: object = values
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and node != wanted:
            raise UserError(f"--reilx runs REILX's run, with {key}={wanted}: drop {key}={node}")
    train = values.get("train") or {}
    table = set(SHARED) | {"learning_rate", "cutoff_len"}
    for where, sets in [
        ("train.set", train.get("set") or {}),
        *((f"train.variantSet.{v}", s or {}) for v, s in (train.get("variantSet") or {}).items()),
    ]:
        changed = sorted(table & set(sets))
        if changed:
            raise UserError(f"--reilx trains with the card's hyper-parameters: drop {where}.{changed[0]}")
    return {
        **values,
        "data": {**(values.get("data") or {}), **REILX_RUN["data"]},
        "train": {**train, **REILX_RUN["train"]},
    }

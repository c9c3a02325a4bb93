"""`neosft plan`: what training will cost, read off the dataset manifest and the variant table,
before any GPU is paid for."""

from __future__ import annotations

import math
from dataclasses import dataclass

from neosft.artifacts import Manifest, VariantData
from neosft.variants import NUM_DEVICES, SHARED, TOTAL_TRAIN_BATCH, VARIANTS

# Qwen/Qwen2-7B-Instruct's config.json, the model the cluster run fine-tunes.
QWEN2_7B = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "tie_word_embeddings": False}
DEFAULT_TOKENS_PER_GPU_S = 3000  # full fine-tuning with ZeRO-3 on an A100-80GB class GPU, ~40% MFU
CHARS_PER_TOKEN = 2.0  # Qwen2 BPE on mixed Chinese/English text (2.3 on the sample); only without token stats
CHAT_TEMPLATE_TOKENS = 21  # ChatML scaffolding with the default system prompt, around one row


def parameters(config: dict) -> int:
    """Parameter count of a Qwen2 decoder from its config."""
    h, layers, inter, vocab = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"], config["vocab_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases; o without
    layer = attention + 3 * h * inter + 2 * h  # gate, up, down; two RMSNorms
    embeddings = vocab * h * (1 if config["tie_word_embeddings"] else 2)
    return layers * layer + embeddings + h


def zero3_checkpoint_bytes(params: int) -> int:
    """A resumable checkpoint: bf16 weights plus fp32 master weights and Adam's two moments."""
    return params * (2 + 4 + 4 + 4)


@dataclass
class VariantPlan:
    variant: str
    rows: int
    tokens: int  # per epoch, after truncation at cutoff_len
    exact: bool  # counted with the tokenizer, or estimated from characters
    over_cutoff: int | None
    steps_per_epoch: int
    total_steps: int
    gpu_hours: float


def plan_variant(name: str, entry: VariantData, tokens_per_gpu_s: float) -> VariantPlan:
    rows, stats = entry.rows, entry.stats
    tokens = stats.get("tokens")
    if tokens:
        count, exact, over = tokens["total_within_cutoff"], True, tokens["over_cutoff"]
    else:
        chars = stats["instruction_chars"]["total"] + stats["output_chars"]["total"]
        count, exact, over = round(chars / CHARS_PER_TOKEN) + CHAT_TEMPLATE_TOKENS * rows, False, None
    per_device_batches = math.ceil(rows / (SHARED["per_device_train_batch_size"] * NUM_DEVICES))
    steps = math.ceil(per_device_batches / SHARED["gradient_accumulation_steps"])
    epochs = SHARED["num_train_epochs"]
    return VariantPlan(name, rows, count, exact, over, steps, steps * epochs, epochs * count / tokens_per_gpu_s / 3600)


def plan(data_uri: str, variants: list[str], tokens_per_gpu_s: float = DEFAULT_TOKENS_PER_GPU_S) -> list[VariantPlan]:
    manifest = Manifest.read(data_uri)
    return [plan_variant(v, manifest.variant(v, data_uri), tokens_per_gpu_s) for v in variants]


def render(plans: list[VariantPlan], tokens_per_gpu_s: float) -> str:
    """The plan as a plain-text table with its assumptions."""
    head = ("variant", "lr", "cutoff", "rows", "tokens/epoch", "over cutoff", "steps/epoch", "steps", "GPU-hours", f"hours on {NUM_DEVICES}")
    lines = [head]
    for p in plans:
        v = VARIANTS[p.variant]
        lines.append((p.variant, f"{v.learning_rate:g}", str(v.cutoff_len), f"{p.rows:,}", f"{'' if p.exact else '~'}{p.tokens:,}",
                      "?" if p.over_cutoff is None else f"{p.over_cutoff:,}", f"{p.steps_per_epoch:,}", f"{p.total_steps:,}",
                      f"{p.gpu_hours:,.1f}", f"{p.gpu_hours / NUM_DEVICES:,.2f}"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    table = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in lines]
    params = parameters(QWEN2_7B)
    notes = [
        f"{SHARED['num_train_epochs']} epochs, total batch {TOTAL_TRAIN_BATCH} ({NUM_DEVICES} GPUs), at {tokens_per_gpu_s:,.0f} tokens/s per GPU (--tokens-per-gpu-s).",
        f"Qwen2-7B: {params / 1e9:.2f}B parameters; one resumable ZeRO-3 checkpoint {zero3_checkpoint_bytes(params) / 1e9:,.0f} GB, "
        f"final bf16 weights {2 * params / 1e9:,.1f} GB.",
    ]
    if not all(p.exact for p in plans):
        notes.append(f"~ estimated at {CHARS_PER_TOKEN} characters per token; build with --tokenizer for exact counts and truncation.")
    return "\n".join(table + [""] + notes)

"""`neosft plan`: what training will cost, read off the dataset manifest and the variant table,
before any GPU is paid for."""

from __future__ import annotations

import math
from dataclasses import dataclass

from neosft.artifacts import Manifest, VariantData
from neosft.eval import GENERATE_BATCH, MAX_NEW_TOKENS
from neosft.train.memory import HEADROOM, OVERHEAD_BYTES, Memory, lora_parameters, memory, parameters
from neosft.train.spec import EVAL_SAMPLES
from neosft.variants import (
    NUM_DEVICES,
    QWEN2_7B,
    SHARED,
    TOTAL_TRAIN_BATCH,
    VARIANTS,
    Lora,
    gradient_accumulation,
)

# LoRA training throughput of a 7B Qwen on one H100 at sequence length 4096, bf16, as NVIDIA measured and published it:
# NeMo AutoModel's performance summary (docs.nvidia.com/nemo/automodel/latest/performance/performance-summary.html,
# "Fine-Tuning (LoRA) Performance", System DGX-H100: Qwen2.5 7B, 1 GPU, seq 4096, 14,110.05 tokens/s/GPU, 423 model
# TFLOPs/s). Other GPUs scale it by their dense bf16 peak (NVIDIA's datasheets: A100 SXM 312 TFLOPS; H100 SXM and
# H200 SXM 989 TFLOPS, the same Hopper compute), and full fine-tuning by LORA_SPEEDUP below. A finished run's own
# measurement replaces them: `neosft plan --from RUN`.
H100_LORA_TOKENS_PER_S = 14110
BF16_PEAK_TFLOPS = {"a100": 312, "h100": 989, "h200": 989}
DEFAULT_GPU = "h100"
# LoRA skips the frozen weights' gradients: per parameter and token, gradient checkpointing's forward, recompute and
# backward cost 2 + 2 + 2 FLOPs instead of 2 + 2 + 4, so the same GPU trains 8/6 as many tokens per second
LORA_SPEEDUP = 8 / 6
CHARS_PER_TOKEN = 2.0  # Qwen2 BPE on mixed Chinese/English text (2.3 on the sample); only without token stats
CHAT_TEMPLATE_TOKENS = 21  # ChatML scaffolding with the default system prompt, around one row


def trainable(lora: Lora | None, config: dict = QWEN2_7B) -> int:
    """The parameters an optimizer updates: the adapter's with LoRA, else every one."""
    return lora_parameters(config, lora.rank) if lora else parameters(config)


def default_tokens_per_gpu_s(lora: Lora | None, gpu: str = DEFAULT_GPU) -> float:
    """Training tokens/s per `gpu` ("a100", "h100", "h200"): the published H100 LoRA measurement above, scaled by the
    GPU's bf16 peak, and for full fine-tuning by 1 / LORA_SPEEDUP; rounded to 100."""
    lora_rate = H100_LORA_TOKENS_PER_S * BF16_PEAK_TFLOPS[gpu] / BF16_PEAK_TFLOPS["h100"]
    return round((lora_rate if lora else lora_rate / LORA_SPEEDUP) / 100) * 100


def measured_tokens_per_gpu_s(record) -> float:
    """A finished run's own training tokens/s per GPU (its run.json: tokens / train runtime / world size)."""
    return record.tokens / record.train_runtime_s / record.world_size


def zero3_checkpoint_bytes(params: int) -> int:
    """A resumable checkpoint of `params` trainable parameters: bf16 weights plus fp32 master weights and Adam's
    two moments (with LoRA only the adapter's: the frozen base is not saved)."""
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


def tokens_of(entry: VariantData) -> tuple[int, bool, int | None]:
    """(tokens, counted exactly, rows over cutoff_len) of a variant's rows: the build's token stats, else chars."""
    stats = entry.stats
    tokens = stats.get("tokens")
    if tokens:
        return tokens["total_within_cutoff"], True, tokens["over_cutoff"]
    chars = stats["instruction_chars"]["total"] + stats["output_chars"]["total"]
    return round(chars / CHARS_PER_TOKEN) + CHAT_TEMPLATE_TOKENS * entry.rows, False, None


def plan_variant(name: str, entry: VariantData, tokens_per_gpu_s: float, gpus: int = NUM_DEVICES) -> VariantPlan:
    rows = entry.rows
    count, exact, over = tokens_of(entry)
    per_device = SHARED["per_device_train_batch_size"]
    per_device_batches = math.ceil(rows / (per_device * gpus))
    steps = math.ceil(per_device_batches / gradient_accumulation(gpus, per_device))
    epochs = SHARED["num_train_epochs"]
    return VariantPlan(name, rows, count, exact, over, steps, steps * epochs, epochs * count / tokens_per_gpu_s / 3600)


def plan(
    data_uri: str, variants: list[str], tokens_per_gpu_s: float | None = None, gpus: int = NUM_DEVICES
) -> list[VariantPlan]:
    """Each variant's plan at `tokens_per_gpu_s` (default: full fine-tuning's on the default GPU)."""
    manifest = Manifest.read(data_uri)
    speed = tokens_per_gpu_s or default_tokens_per_gpu_s(None)
    return [plan_variant(v, manifest.variant(v, data_uri), speed, gpus) for v in variants]


def render(plans: list[VariantPlan], tokens_per_gpu_s: float, gpus: int = NUM_DEVICES, lora: Lora | None = None) -> str:
    """The plan as a plain-text table with its assumptions: of LoRA with `lora`, else of full fine-tuning."""
    head = (
        "variant",
        "lr",
        "cutoff",
        "rows",
        "tokens/epoch",
        "over cutoff",
        "steps/epoch",
        "steps",
        "GPU-hours",
        f"hours on {gpus}",
    )
    lines = [head]
    for p in plans:
        v = VARIANTS[p.variant]
        lines.append(
            (
                p.variant,
                f"{v.learning_rate:g}",
                str(v.cutoff_len),
                f"{p.rows:,}",
                f"{'' if p.exact else '~'}{p.tokens:,}",
                "?" if p.over_cutoff is None else f"{p.over_cutoff:,}",
                f"{p.steps_per_epoch:,}",
                f"{p.total_steps:,}",
                f"{p.gpu_hours:,.1f}",
                f"{p.gpu_hours / gpus:,.2f}",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    table = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in lines
    ]
    params = parameters(QWEN2_7B)
    notes = [
        (
            f"{SHARED['num_train_epochs']} epochs, total batch {TOTAL_TRAIN_BATCH} ({gpus} GPUs x gradient "
            f"accumulation {gradient_accumulation(gpus)}), at {tokens_per_gpu_s:,.0f} tokens/s per GPU "
            "(--tokens-per-gpu-s, --gpu, --from)."
        )
    ]
    if lora:
        adapter = trainable(lora)
        notes.append(
            f"Qwen2-7B: {params / 1e9:.2f}B parameters, frozen; LoRA r {lora.rank} on every linear "
            f"projection: {adapter:,} trainable ({adapter // lora.rank:,} per unit of rank); adapter "
            f"{2 * adapter / 1e6:,.1f} MB in bf16; one resumable checkpoint "
            f"{zero3_checkpoint_bytes(adapter) / 1e6:,.0f} MB."
        )
    else:
        notes.append(
            f"Qwen2-7B: {params / 1e9:.2f}B parameters; one resumable ZeRO-3 checkpoint "
            f"{zero3_checkpoint_bytes(params) / 1e9:,.0f} GB, final bf16 weights {2 * params / 1e9:,.1f} GB."
        )
    notes.append(disk(plans, gpus, lora).render())
    if not all(p.exact for p in plans):
        notes.append(
            f"~ estimated at {CHARS_PER_TOKEN} characters per token; build with --tokenizer for exact counts and truncation."
        )
    return "\n".join(table + [""] + notes)


# eval (neosft.eval) -----------------------------------------------------------------------------------------------

EVAL_SPEEDUP = 3.0  # a forward pass without gradients, against training's forward and backward (bench/eval.py)
DECODE_S_PER_TOKEN = 0.03  # one greedy step of Qwen2-7B in bf16 at a small batch (memory bound)
LOAD_S = 20  # reading the 15 GB of bf16 weights (or the base and an adapter) from the node's disk or cache


@dataclass
class EvalPlan:
    models: int  # the variants and the base
    tokens: int  # scored per model: the chat set and the four variants' held-out rows
    gpu_minutes: float  # all models, every GPU of their pods
    share: float  # of the training GPU time of the same variants


def plan_eval(
    manifest: Manifest,
    plans: list[VariantPlan],
    tokens_per_gpu_s: float,
    gpus: int = NUM_DEVICES,
    samples: int = EVAL_SAMPLES,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> EvalPlan | None:
    """What the eval at the end of each variant's training (and the base's, once) adds; None without held-out records."""
    held = manifest.heldout
    if held is None or not held.records:
        return None
    entries = held.variants.values()
    # the chat set is every conversation whole: about the `multi` row of each record (one row per record)
    tokens = sum(tokens_of(e)[0] for e in entries) + (
        tokens_of(held.variants["multi"])[0]
        if "multi" in held.variants
        else max((tokens_of(e)[0] for e in entries), default=0)
    )
    score_s = tokens / (tokens_per_gpu_s * EVAL_SPEEDUP * gpus)
    generate_s = (
        math.ceil(math.ceil(samples / gpus) / GENERATE_BATCH) * max_new_tokens * DECODE_S_PER_TOKEN
    )  # ranks at once
    models = len(plans) + 1
    gpu_minutes = models * gpus * (score_s + generate_s + LOAD_S) / 60
    train_minutes = sum(p.gpu_hours for p in plans) * 60
    return EvalPlan(models, tokens, gpu_minutes, gpu_minutes / train_minutes if train_minutes else float("inf"))


def render_eval(e: EvalPlan | None) -> str:
    if e is None:
        return "eval: none (the dataset has no held-out records: built with --holdout 0)"
    return (
        f"eval: {e.models} models (each variant and the base) x {e.tokens:,} held-out tokens, ~{e.gpu_minutes:,.0f} "
        f"GPU-minutes with loading and samples, {e.share:.2%} of the training's GPU time."
    )


# How many held-out conversations tell two fine-tunes apart: the bootstrap's standard error of a difference shrinks
# as 1/sqrt(conversations). Measured on a finished run (`--run`), else this assumption about the per-conversation
# spread of two fine-tunes' loss difference, in nats (an assumption, not a measurement: pass --run to replace it).
ASSUMED_DIFFERENCE_SD = 0.1
DIFFERENCES = (0.005, 0.01, 0.02, 0.05)


def render_resolution(conversations: int, measured: tuple[float, int, str] | None = None) -> str:
    """How small a chat-loss difference `conversations` held-out conversations resolve (4 times in 5), and how many
    each of `DIFFERENCES` needs, from `measured` (a difference's standard error, the conversations it was measured
    on, and where) or from `ASSUMED_DIFFERENCE_SD`."""
    from neosft.eval.uncertainty import POWER_Z, conversations_needed

    se, n, where = measured or (ASSUMED_DIFFERENCE_SD, 1, "")
    smallest = POWER_Z * se * math.sqrt(n / max(conversations, 1))
    needs = ", ".join(f"{d} needs ~{conversations_needed(d, se, n):,}" for d in DIFFERENCES)
    source = (
        f"from the widest bootstrap error of a difference in {where} ({se:.4f} on {n:,} conversations)"
        if measured
        else f"assuming a per-conversation spread of {ASSUMED_DIFFERENCE_SD} nats; --run RUN measures it"
    )
    return (
        f"held-out: {conversations:,} conversations resolve a chat-loss difference of about {smallest:.3f} "
        f"(95 % interval excluding 0, 4 times in 5); {needs} ({source})."
    )


GPUS_PER_NODE = 8
CHECKPOINTS_KEPT = 2  # save_total_limit; a third exists while the newest is written and the oldest not yet rotated


@dataclass
class Disk:
    """Local disk of one training node (NEOSFT_WORK_DIR): checkpoints, the final weights, the model, the tokens."""

    checkpoints: int
    final: int
    model: int
    tokens: int

    @property
    def total(self) -> int:
        return self.checkpoints + self.final + self.model + self.tokens

    def render(self) -> str:
        gb = lambda n: f"{n / 1e9:,.0f}" if n >= 1e9 else f"{n / 1e9:,.2f}"  # noqa: E731
        return (
            f"disk per training node: {self.total / 1e9:,.0f} GB = {CHECKPOINTS_KEPT + 1} checkpoints "
            f"{gb(self.checkpoints)} GB + final weights {gb(self.final)} GB + model download "
            f"{self.model / 1e9:,.0f} GB + token cache {self.tokens / 1e9:,.1f} GB."
        )


def disk(plans: list[VariantPlan], gpus: int, lora: Lora | None = None) -> Disk:
    """Each node holds its ranks' share of each checkpoint (optimizer states split over the nodes); with LoRA the
    checkpoints and final weights are the adapter's."""
    params = parameters(QWEN2_7B)
    nodes = max(1, math.ceil(gpus / GPUS_PER_NODE))
    tokens = max((p.tokens for p in plans), default=0)
    return Disk(
        checkpoints=(CHECKPOINTS_KEPT + 1) * math.ceil(zero3_checkpoint_bytes(trainable(lora)) / nodes),
        final=2 * trainable(lora),
        model=2 * params,
        tokens=2 * 4 * tokens,
    )  # int32 ids, in the work dir and staged


# GPU memory -----------------------------------------------------------------------------------------------------


def recommend(gpu_memory_gb: float, gpus: int, cutoff_len: int, lora: Lora | None = None) -> tuple[list[Memory], str]:
    """ZeRO-2 and ZeRO-3 at `cutoff_len` (LoRA with `lora`, else full fine-tuning), and the configuration to train
    with."""
    budget = gpu_memory_gb * 1e9 * HEADROOM
    options = [memory(stage, gpus, cutoff_len, lora=lora) for stage in ("zero2", "zero3")]
    zero2, zero3 = options
    if zero2.total <= budget:
        advice = (
            "recommended: --deepspeed zero2. Each GPU keeps the bf16 weights, so a micro-step moves only the "
            "gradients (a reduce-scatter); ZeRO-3 would all-gather every layer's weights again in the forward "
            "and the backward pass of each micro-step at batch 1, about three times the traffic, for memory "
            "this GPU does not need."
        )
    elif zero3.total <= budget:
        advice = (
            "recommended: --deepspeed zero3. ZeRO-2's full bf16 weights per GPU do not fit; ZeRO-3 shards "
            "them and pays an all-gather per layer in each micro-step."
        )
    elif memory("zero3", gpus, cutoff_len, liger=True, lora=lora).total <= budget:
        advice = (
            "recommended: --deepspeed zero3 --liger: only without the full logits (Liger's fused loss) does it fit."
        )
    else:
        advice = "does not fit: use more GPUs (--gpus), GPUs with more memory, or a ZeRO-3 config with CPU offload."
    return options, advice


def render_memory(gpu_memory_gb: float, gpus: int, cutoff_len: int, variants: str, lora: Lora | None = None) -> str:
    options, advice = recommend(gpu_memory_gb, gpus, cutoff_len, lora)
    gb = lambda n: f"{n / 1e9:,.1f}"  # noqa: E731
    what = f"LoRA r {lora.rank} on a frozen bf16 base" if lora else "full fine-tuning"
    lines = [
        f"GPU memory per GPU, Qwen2-7B on {gpus} x {gpu_memory_gb:g} GB, {what}, micro-batch 1, cutoff_len "
        f"{cutoff_len} ({variants}), gradient checkpointing:",
        f"{'':<6}{'model states':>14}{'activations':>13}{'logits':>8}{'overhead':>10}{'total GB':>10}",
    ]
    for m in options:
        lines.append(
            f"{m.stage:<6}{gb(m.model_states):>14}{gb(m.activations):>13}{gb(m.logits):>8}"
            f"{gb(OVERHEAD_BYTES):>10}{gb(m.total):>10}"
        )
    lines += [
        f"(model states: DeepSpeed's estimators; logits at the {QWEN2_7B['vocab_size']:,}-token vocabulary, "
        f"none with --liger; planned within {HEADROOM:.0%} of each GPU)",
        advice,
    ]
    return "\n".join(lines)

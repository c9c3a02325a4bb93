"""The per-GPU memory model of training (`neosft plan --gpu-memory`, and the activation checkpointing default of
`neosft train`): parameters of a Qwen2-shaped config, DeepSpeed's model-state estimators, activations, logits."""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

from neosft.variants import QWEN2_7B, Lora


def parameters(config: dict) -> int:
    """Parameter count of a Qwen2 decoder from its config."""
    h, layers, inter, vocab = (
        config["hidden_size"],
        config["num_hidden_layers"],
        config["intermediate_size"],
        config["vocab_size"],
    )
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with biases; o without
    layer = attention + 3 * h * inter + 2 * h  # gate, up, down; two RMSNorms
    embeddings = vocab * h * (1 if config["tie_word_embeddings"] else 2)
    return layers * layer + embeddings + h


def lora_parameters(config: dict, rank: int) -> int:
    """Parameters of a LoRA adapter of `rank` on every linear projection of a Qwen2 decoder (q, k, v, o, gate, up,
    down: rank x (in + out) each); lm_head excluded, as LLaMA-Factory's `lora_target: all` excludes it."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + inter) + (inter + h)
    return rank * per_layer * config["num_hidden_layers"]


OVERHEAD_BYTES = 4 * 10**9  # CUDA context, NCCL buffers, ZeRO buckets, allocator fragmentation
HEADROOM = 0.9  # plan for at most this share of the GPU's memory


@dataclass
class Memory:
    """Per-GPU memory of one configuration at micro-batch 1, in bytes."""

    stage: str
    model_states: int  # DeepSpeed's estimate: weights, gradients, fp32 master weights and Adam moments
    activations: int  # with checkpointing: every layer's input plus one layer recomputed in full; else every layer
    logits: int  # bf16 logits, their fp32 copy for the loss and its gradient (none with Liger's fused loss)

    @property
    def total(self) -> int:
        return self.model_states + self.activations + self.logits + OVERHEAD_BYTES


def memory(
    stage: str,
    gpus: int,
    cutoff_len: int,
    liger: bool = False,
    config: dict = QWEN2_7B,
    lora: Lora | None = None,
    checkpointing: bool = True,
) -> Memory:
    """Per-GPU memory under ZeRO `stage` ("zero2" or "zero3") on `gpus` GPUs: of full fine-tuning, or with `lora` of
    a frozen bf16 base (whole on each GPU under ZeRO-2, sharded under ZeRO-3) with the adapter's trainable states;
    activations with activation checkpointing, or without it (`checkpointing=False`: every layer's kept)."""
    with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed logs its accelerator choice to stdout on import
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    params, h, inter = parameters(config), config["hidden_size"], config["intermediate_size"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    updated = lora_parameters(config, lora.rank) if lora else params
    frozen = 2 * params if lora else 0  # the base's bf16 weights, besides the trainable states
    if stage == "zero2":
        _, states = estimate_zero2_model_states_mem_needs(updated, num_gpus_per_node=gpus, cpu_offload=False)
    else:
        largest = config["vocab_size"] * h  # the embedding (and lm_head) matrix, gathered whole
        _, states, _ = estimate_zero3_model_states_mem_needs(
            updated, 0 if lora else largest, num_gpus_per_node=gpus, cpu_offload=False
        )
        frozen = math.ceil(frozen / gpus) + (4 * largest if lora else 0)
    per_token_layer = 2 * (6 * h + 2 * kv + 4 * inter)  # bf16: norms, q/k/v, attention out, residual, MLP
    layers = config["num_hidden_layers"]
    activations = cutoff_len * (layers * 2 * h + per_token_layer if checkpointing else layers * per_token_layer)
    logits = 0 if liger else cutoff_len * config["vocab_size"] * (2 + 4 + 4)
    return Memory(stage, int(states) + frozen, activations, logits)

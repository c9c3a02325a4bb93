"""A tiny random Qwen2 with a small byte-level BPE tokenizer: for tests, benchmarks and smoke runs, never a download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen/Qwen2-7B-Instruct's tokenizer_config.json `chat_template`, verbatim.
QWEN2_CHAT_TEMPLATE = (
    r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    r"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tiny_qwen2(
    dest: str | Path,
    texts,
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    model_vocab_size: int | None = None,
    **shape,
) -> Path:
    """Write config, random weights and a BPE tokenizer (trained on `texts`, with Qwen2's chat template) to `dest`.

    `model_vocab_size` (default: the tokenizer's) and `shape` (other Qwen2Config fields, and `dtype` for the weights)
    give the model a real model's sizes. The model is written beside `dest` and renamed into place: `dest` holds a
    whole model or none (a full disk leaves nothing behind).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        _write(partial, texts, vocab_size, hidden_size, layers, seed, model_vocab_size, shape)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest


def _write(dest: Path, texts, vocab_size, hidden_size, layers, seed, model_vocab_size, shape) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=SPECIAL[1:]
    )
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    tokenizer.save_pretrained(dest)
    dtype = shape.pop("dtype", torch.float32)
    config = Qwen2Config(
        **{
            "vocab_size": model_vocab_size or len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "tie_word_embeddings": False,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **shape,
        }
    )
    torch.manual_seed(seed)
    Qwen2ForCausalLM(config).to(dtype).save_pretrained(dest)

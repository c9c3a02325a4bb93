"""The Qwen2 chat format (ChatML) of one alpaca row, shared by the data stats and the trainer."""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful assistant."


def segments(instruction: str, input: str, output: str, system: str | None = None) -> tuple[str, str]:
    """(prompt, response): the text the model reads and the text it learns to write.

    The user turn is the instruction, plus a newline and the input when the input is not empty.
    """
    user = f"{instruction}\n{input}" if input else instruction
    prompt = (
        f"<|im_start|>system\n{DEFAULT_SYSTEM if system is None else system}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return prompt, f"{output}<|im_end|>\n"

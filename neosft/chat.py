"""The chat format of one alpaca row, as LLaMA-Factory's `qwen` template renders it: ChatML by hand (`segments`, shared
by the data stats and the trainer) or the tokenizer's own chat template (`ChatFormat`), which give the same text for
Qwen2 and let `--model` name other chat models."""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful assistant."  # Qwen2-Instruct's template and LLaMA-Factory's `qwen` up to 0.9.2


def segments(instruction: str, input: str, output: str, system: str | None = None,
             default_system: str = DEFAULT_SYSTEM) -> tuple[str, str]:
    """(prompt, response) in ChatML: the text the model reads and the text it learns to write.

    The user turn is the instruction, plus a newline and the input when the input is not empty. A missing or empty
    system gets `default_system`, as LLaMA-Factory's `system or default_system`.
    """
    user = f"{instruction}\n{input}" if input else instruction
    prompt = (
        f"<|im_start|>system\n{system or default_system}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return prompt, f"{output}<|im_end|>\n"


class ChatFormat:
    """Rows to (prompt, response) text: through the tokenizer's chat template when it has one, else ChatML."""

    def __init__(self, tokenizer=None, default_system: str = DEFAULT_SYSTEM, use_template: bool = True):
        self.default_system = default_system
        self.template = tokenizer if use_template and getattr(tokenizer, "chat_template", None) else None
        self.name = "tokenizer chat template" if self.template else "ChatML"

    def __call__(self, instruction: str, input: str, output: str, system: str | None = None) -> tuple[str, str]:
        if self.template is None:
            return segments(instruction, input, output, system, self.default_system)
        user = f"{instruction}\n{input}" if input else instruction
        messages = [{"role": "system", "content": system or self.default_system}, {"role": "user", "content": user}]
        prompt = self.template.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = self.template.apply_chat_template([*messages, {"role": "assistant", "content": output}], tokenize=False)
        if not full.startswith(prompt):
            from neosft.errors import UserError

            raise UserError("the tokenizer's chat template does not render the prompt as a prefix of the "
                            "conversation; train with --chat-format chatml")
        return prompt, full[len(prompt):]

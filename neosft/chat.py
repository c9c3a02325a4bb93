"""The chat format of one alpaca row, as LLaMA-Factory's `qwen` template renders it: ChatML by hand (`segments`, shared
by the data stats and the trainer) or the tokenizer's own chat template (`ChatFormat`), which give the same text for
Qwen2 and let `--model` name other chat models."""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful assistant."  # Qwen2-Instruct's template and LLaMA-Factory's `qwen` up to 0.9.2


def segments(
    instruction: str, input: str, output: str, system: str | None = None, default_system: str = DEFAULT_SYSTEM
) -> tuple[str, str]:
    """(prompt, response) in ChatML: the text the model reads and the text it learns to write.

    The user turn is the instruction, plus a newline and the input when the input is not empty. A missing or empty
    system gets `default_system`, as LLaMA-Factory's `system or default_system`.
    """
    user = f"{instruction}\n{input}" if input else instruction
    [(system_text, prompt, response)] = turns([(user, output)], system, default_system)
    return system_text + prompt, response


def turns(
    rounds: list[tuple[str, str]], system: str | None = None, default_system: str = DEFAULT_SYSTEM
) -> list[tuple[str, str, str]]:
    """A conversation in LLaMA-Factory's `qwen` template (data/template.py `Template._encode`): one
    (system, user, assistant) text triple per round, each a slot LLaMA-Factory encodes on its own. Only the first
    round has a system slot (`format_system`, `system or default_system`); every user slot is `format_user`, which
    ends with the assistant header; every assistant slot `format_assistant`."""
    return [
        (
            f"<|im_start|>system\n{system or default_system}<|im_end|>\n" if i == 0 else "",
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
            f"{assistant}<|im_end|>\n",
        )
        for i, (user, assistant) in enumerate(rounds)
    ]


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

            raise UserError(
                "the tokenizer's chat template does not render the prompt as a prefix of the "
                "conversation; train with --chat-format chatml"
            )
        return prompt, full[len(prompt) :]

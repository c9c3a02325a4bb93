"""Rows to tokens in the chat format, token for token as LLaMA-Factory's supervised dataset makes them: prompt and
response encoded apart, loss on the response only, long rows cut to cutoff_len by `infer_seqlen`; and whole
multi-turn conversations the same way (`tokenize_conversations`), every assistant turn a label."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neosft.chat import DEFAULT_SYSTEM, ChatFormat, turns

IGNORE_INDEX = -100
BATCH_ROWS = 1000
FILES = ("ids", "offsets", "prompt_lens")


def truncated_lengths(prompt_len: int, response_len: int, cutoff_len: int) -> tuple[int, int]:
    """(prompt, response) lengths that fit `cutoff_len`, cut in proportion: LLaMA-Factory's `infer_seqlen`, float
    rounding included (it can drop a token of a row that fits exactly, and so does this)."""
    if response_len * 2 < cutoff_len:  # a short response stays whole
        max_response = cutoff_len
    elif prompt_len * 2 < cutoff_len:  # a short prompt stays whole
        max_response = cutoff_len - prompt_len
    else:
        max_response = int(cutoff_len * (response_len / (prompt_len + response_len)))
    response = min(max_response, response_len)
    return min(max(cutoff_len - response, 0), prompt_len), response


def cut_turns(lengths: list[tuple[int, int]], cutoff_len: int) -> list[tuple[int, int]]:
    """(prompt, response) lengths of each round of a conversation within `cutoff_len`: LLaMA-Factory's supervised
    `_encode_data_example` (mask_history and efficient_eos off), `truncated_lengths` per round on what the earlier
    rounds left; the rounds after the budget is spent are dropped."""
    kept, total = [], 0
    for prompt, response in lengths:
        if total >= cutoff_len:
            break
        p, r = truncated_lengths(prompt, response, cutoff_len - total)
        kept.append((p, r))
        total += p + r
    return kept


@dataclass
class Tokens:
    """Every sample of a dataset as one flat array of token ids with offsets, and each prompt's length."""

    ids: np.ndarray  # int32, all samples end to end
    offsets: np.ndarray  # int64, len(samples) + 1
    prompt_lens: np.ndarray  # int32
    truncated: int  # samples cut to cutoff_len

    def __len__(self) -> int:
        return len(self.prompt_lens)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> dict:
        """`input_ids` and `labels` (prompt tokens -100) of sample `i`."""
        ids = self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()
        n = int(self.prompt_lens[i])
        return {"input_ids": ids, "labels": [IGNORE_INDEX] * n + ids[n:]}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path, truncated: int) -> Tokens:
        """Memory-mapped, so every rank of a node shares the pages."""
        ids, offsets, prompt_lens = (np.load(folder / f"{name}.npy", mmap_mode="r") for name in FILES)
        return cls(ids, offsets, prompt_lens, truncated)


def tokenize(rows: Iterable[dict], tokenizer, cutoff_len: int, chat: ChatFormat | None = None) -> Tokens:
    """Encode rows in batches (the fast tokenizer runs them in parallel); `chat` defaults to the tokenizer's."""
    chat = chat or ChatFormat(tokenizer)
    ids, offsets, prompt_lens, truncated = [], [0], [], 0
    for prompts, responses in _batches(rows, chat):
        encoded_prompts = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        encoded_responses = tokenizer(responses, add_special_tokens=False)["input_ids"]
        for prompt, response in zip(encoded_prompts, encoded_responses):
            p, r = truncated_lengths(len(prompt), len(response), cutoff_len)
            if (p, r) != (len(prompt), len(response)):
                truncated += 1
                prompt, response = prompt[:p], response[:r]
            ids.append(np.asarray(prompt + response, dtype=np.int32))
            offsets.append(offsets[-1] + len(prompt) + len(response))
            prompt_lens.append(len(prompt))
    flat = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    return Tokens(flat, np.asarray(offsets, np.int64), np.asarray(prompt_lens, np.int32), truncated)


def _batches(rows: Iterable[dict], chat: ChatFormat) -> Iterator[tuple[list[str], list[str]]]:
    prompts, responses = [], []
    for row in rows:
        prompt, response = chat(row["instruction"], row.get("input", ""), row["output"], row.get("system"))
        prompts.append(prompt)
        responses.append(response)
        if len(prompts) == BATCH_ROWS:
            yield prompts, responses
            prompts, responses = [], []
    if prompts:
        yield prompts, responses


@dataclass
class Labeled:
    """Conversations as one flat array of token ids and one of labels (-100 where no loss), with offsets."""

    ids: np.ndarray  # int32
    labels: np.ndarray  # int32
    offsets: np.ndarray  # int64, len(conversations) + 1
    truncated: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> dict:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"input_ids": self.ids[a:b].tolist(), "labels": self.labels[a:b].tolist()}


def tokenize_conversations(
    conversations: Iterable[tuple[str | None, list[tuple[str, str]]]],
    tokenizer,
    cutoff_len: int,
    default_system: str = DEFAULT_SYSTEM,
) -> Labeled:
    """(system, rounds) conversations -> LLaMA-Factory's `qwen`-template training tokens: every slot encoded on its
    own (`Template._convert_elements_to_ids`), each round's prompt masked and its answer a label, `cut_turns`."""
    ids, labels, offsets, truncated = [], [], [0], 0
    for conversation in conversations:
        slots = [text for triple in turns(conversation[1], conversation[0], default_system) for text in triple]
        encoded = [tokenizer.encode(text, add_special_tokens=False) if text else [] for text in slots]
        pairs = [(encoded[i] + encoded[i + 1], encoded[i + 2]) for i in range(0, len(encoded), 3)]
        kept = cut_turns([(len(p), len(r)) for p, r in pairs], cutoff_len)
        truncated += kept != [(len(p), len(r)) for p, r in pairs]
        for (prompt, response), (p, r) in zip(pairs, kept):
            ids += prompt[:p] + response[:r]
            labels += [IGNORE_INDEX] * p + response[:r]
        offsets.append(len(ids))
    return Labeled(np.asarray(ids, np.int32), np.asarray(labels, np.int32), np.asarray(offsets, np.int64), truncated)

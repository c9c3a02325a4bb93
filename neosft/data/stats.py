"""Length statistics of a variant's rows: characters always, Qwen2 chat tokens with a tokenizer."""

from __future__ import annotations

from array import array
from pathlib import Path

from neosft.chat import segments
from neosft.errors import UserError


def summary(values: array) -> dict:
    """p50/p90/p99 by nearest rank, max and total (zeros for no values)."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "total": 0}
    rank = lambda q: ordered[-(-len(ordered) * q // 100) - 1]  # noqa: E731
    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1], "total": sum(ordered)}


class TokenCounter:
    """Counts the tokens of rows in the Qwen2 chat format, batching for the Rust tokenizer."""

    BATCH = 512

    def __init__(self, path: str, cutoff_len: int):
        self.tokenizer = load_tokenizer(path)
        self.cutoff_len = cutoff_len
        self.lengths = array("I")
        self.pending: list[str] = []

    def add(self, instruction: str, input: str, output: str, system: str | None = None) -> None:
        self.pending.append("".join(segments(instruction, input, output, system)))
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.lengths.extend(len(e.ids) for e in self.tokenizer.encode_batch(self.pending, add_special_tokens=False))
            self.pending = []

    def stats(self) -> dict:
        self.flush()
        cutoff = self.cutoff_len
        return {
            **summary(self.lengths),
            "cutoff_len": cutoff,
            "over_cutoff": sum(n > cutoff for n in self.lengths),
            "total_within_cutoff": sum(min(n, cutoff) for n in self.lengths),
        }


def load_tokenizer(path: str):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a folder holding one."""
    from tokenizers import Tokenizer

    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise UserError(f"no tokenizer.json at {path}")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust tokenizer raises a bare Exception for a bad file
        raise UserError(f"{file}: not a tokenizer.json ({e})") from None

"""One ShareGPT record -> its rounds, or the one reason it is skipped.

The checks run in this order and the first that applies wins:
`malformed` (not an object; `conversations` missing, not a list or empty; a turn without string
`from` and `value`; an unknown role) -> `no_rounds` (nothing left after normalising) ->
`bad_turn_order` (not human, gpt, human, gpt, ...; a `system` turn anywhere but first) ->
`empty_turn` (a human or gpt value empty or only whitespace).
Normalising drops a trailing unanswered human turn (odd count, last turn human).
"""

from __future__ import annotations

from itertools import repeat
from typing import NamedTuple

from neosft.variants import Round

SKIP_REASONS = ("malformed", "no_rounds", "bad_turn_order", "empty_turn")

_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


class Conversation(NamedTuple):  # a tuple: cheap to make once per record
    rounds: list[Round]
    system: str | None = None


def parse_record(record: object) -> Conversation | str:
    """The record's conversation, or the skip reason (one of `SKIP_REASONS`)."""
    if not isinstance(record, dict):
        return "malformed"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "malformed"
    try:  # a turn that is not an object, lacks a key, has a non-string role or an unknown one
        roles = [_ROLES[turn["from"].lower()] for turn in turns]
        values = [turn["value"] for turn in turns]
    except (TypeError, KeyError, AttributeError):
        return "malformed"
    if not all(map(isinstance, values, repeat(str))):  # map, not a generator: this runs per record
        return "malformed"

    start = 1 if roles[0] == "system" else 0
    end = len(roles)
    if (end - start) % 2 and roles[-1] == "human":
        end -= 1
    n = end - start
    if n == 0:
        return "no_rounds"
    if n % 2 or roles[start:end] != ["human", "gpt"] * (n // 2):
        return "bad_turn_order"
    kept = values[start:end]
    if "" in kept or any(map(str.isspace, kept)):
        return "empty_turn"
    return Conversation(
        list(zip(values[start:end:2], values[start + 1 : end : 2], strict=True)), values[0] if start else None
    )

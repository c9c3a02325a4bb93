"""One ShareGPT record -> its rounds, or the one reason it is skipped.

The checks run in this order and the first that applies wins:
`malformed` (not an object; `conversations` missing, not a list or empty; a turn without string
`from` and `value`; an unknown role) -> `no_rounds` (nothing left after normalising) ->
`bad_turn_order` (not human, gpt, human, gpt, ...; a `system` turn anywhere but first) ->
`empty_turn` (a human or gpt value empty or only whitespace).
Normalising drops a trailing unanswered human turn (odd count, last turn human).
"""

from __future__ import annotations

from dataclasses import dataclass

from neosft.variants import Round

SKIP_REASONS = ("malformed", "no_rounds", "bad_turn_order", "empty_turn")

_ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt", "system": "system"}


@dataclass(frozen=True)
class Conversation:
    rounds: list[Round]
    system: str | None = None


def parse_record(record: object) -> Conversation | str:
    """The record's conversation, or the skip reason (one of `SKIP_REASONS`)."""
    if not isinstance(record, dict):
        return "malformed"
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return "malformed"
    roles, values = [], []
    for turn in turns:
        if not isinstance(turn, dict):
            return "malformed"
        role, value = turn.get("from"), turn.get("value")
        if not isinstance(role, str) or not isinstance(value, str):
            return "malformed"
        role = _ROLES.get(role.lower())
        if role is None:
            return "malformed"
        roles.append(role)
        values.append(value)

    system = None
    if roles[0] == "system":
        system = values[0]
        roles, values = roles[1:], values[1:]
    if len(roles) % 2 == 1 and roles[-1] == "human":
        roles, values = roles[:-1], values[:-1]
    if not roles:
        return "no_rounds"
    if len(roles) % 2 or any(role != ("human", "gpt")[i % 2] for i, role in enumerate(roles)):
        return "bad_turn_order"
    if any(not v.strip() for v in values):
        return "empty_turn"
    return Conversation(list(zip(values[::2], values[1::2])), system)

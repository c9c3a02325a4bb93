"""REILX's conversion (`neosft data build --rules reilx`): the rows REILX's published scripts wrote, byte for byte.

The scripts (on the dataset cards of REILX/neo_sft_phase2_conversations, _multi and _single) `json.load` the
whole corpus, run one function per record and write every row as `json.dumps(row, ensure_ascii=False) + "\\n"`
to a UTF-8 file. The functions below are theirs, run on each streamed record (the standard library's JSON
scanner gives them the very objects `json.load` gives). A record on which a script would have raised (not an
object, a missing key, a value that is not a string where one is concatenated, ...) is skipped and counted as
`malformed`; one whose rows hold a lone surrogate, which the script's UTF-8 write refuses, as `not_utf8`.
all_pair has no script: the seed's rule (`records.parse_record`, its skip reasons) in the same row format.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import orjson

from neosft.data.records import SKIP_REASONS as SEED_SKIP_REASONS
from neosft.data.records import parse_record
from neosft.data.stats import summary
from neosft.variants import Variant

SKIP_REASONS = ("malformed", "not_utf8")
NO_INPUT = ("single",)  # variants whose rows have no `input` key


class _Skip(Exception):
    """all_pair's record skipped by the seed's rule, for the reason it carries."""


def _conversations(record) -> Iterator[dict]:
    """convert_conversations_to_sft(conversation_set['conversations']) of REILX/neo_sft_phase2_conversations, its
    rows yielded as it appends them (they can be quadratic in the record: never all held)."""
    instruction = ""
    for turn in record["conversations"]:
        if turn["from"] == "human":
            instruction += turn["value"] + "\n\n"
        else:  # any other turn, a system turn included
            yield {"instruction": instruction.strip(), "input": "", "output": turn["value"]}
            instruction += turn["value"] + "\n\n"


def _conversations_fate(record) -> str | None:
    """Why the conversations script would raise on `record` (None: it would not), found before any of its rows is
    made: every turn needs a `from` and a string `value`; a lone surrogate in a value that a row holds (any up to
    the last turn that is not `human`) fails the script's UTF-8 write."""
    try:
        values, written = [], 0
        for turn in record["conversations"]:
            human = turn["from"] == "human"
            values.append(turn["value"] + "")  # the script's `+` raises on anything but a string
            written = written if human else len(values)
    except (TypeError, KeyError, AttributeError, RecursionError):
        return "malformed"
    try:
        for value in values[:written]:
            value.encode()
    except UnicodeEncodeError:
        return "not_utf8"
    return None


def _multi(record) -> list[dict]:
    """convert_conversations_to_single_turn(conversation_set['conversations']) of REILX/neo_sft_phase2_multi."""
    instruction = ""
    output = ""
    for turn in record["conversations"]:
        if turn["from"] == "human":
            instruction += turn["value"] + "\n\n"
        else:
            output += turn["value"] + "\n\n"
    return [{"instruction": instruction.strip(), "input": "", "output": output.strip()}]


def _single(record) -> list[dict]:
    """process_conversations of REILX/neo_sft_phase2_single: exactly 2 entries, whatever their roles."""
    conversations = record.get("conversations", [])
    if len(conversations) != 2:
        return []
    return [{"instruction": conversations[0].get("value", ""), "output": conversations[1].get("value", "")}]


def _all_pair(record) -> list[dict]:
    """No published script: the seed's rule, a row per round, in the scripts' row format."""
    conversation = parse_record(record)
    if isinstance(conversation, str):
        raise _Skip(conversation)
    system = {} if conversation.system is None else {"system": conversation.system}
    return [{"instruction": h, "input": "", "output": g, **system} for h, g in conversation.rounds]


def _string_line(row: dict) -> bytes:
    """The line of a row whose values are strings (the scripts concatenated them, the seed's rule checked them)."""
    instruction, output = orjson.dumps(row["instruction"]), orjson.dumps(row["output"])
    line = b'{"instruction": %b, "input": "", "output": %b' % (instruction, output)
    return line + (b', "system": %b}\n' % orjson.dumps(row["system"]) if "system" in row else b"}\n")


def _single_line(row: dict) -> bytes:
    return b'{"instruction": %b, "output": %b}\n' % (_json(row["instruction"]), _json(row["output"]))


# Each variant's rule and the writer of its rows: `json.dumps(row, ensure_ascii=False) + "\n"` in UTF-8, the rows'
# keys in the order above (default separators `", "` and `": "`; orjson's string escapes are json's, see `_json`).
RULES: dict[str, tuple[Callable[[object], Iterable[dict]], Callable[[dict], bytes]]] = {
    "conversations": (_conversations, _string_line),
    "multi": (_multi, _string_line),
    "single": (_single, _single_line),
    "all_pair": (_all_pair, _string_line),
}


def skip_reasons(name: str) -> tuple[str, ...]:
    """The reasons variant `name` may skip a record for, under these rules."""
    return (*SEED_SKIP_REASONS, "not_utf8") if name == "all_pair" else SKIP_REASONS


def lines(name: str, record: object) -> Iterable[tuple[bytes, dict]] | str:
    """Variant `name`'s rows of `record` as the lines its script writes, each with its row, or the skip reason.
    conversations' come one at a time once `_conversations_fate` cleared the record; the others' (each as long as
    the record at most) are all made first, to see whether the script raises."""
    rule, line = RULES[name]
    if name == "conversations":
        return _conversations_fate(record) or ((line(row), row) for row in rule(record))
    try:
        rows = rule(record)
    except _Skip as skip:
        return str(skip)
    except (TypeError, KeyError, AttributeError, RecursionError):  # where the script raises
        return "malformed"
    try:
        return [(line(row), row) for row in rows]
    except (UnicodeEncodeError, orjson.JSONEncodeError):  # a lone surrogate: the script's UTF-8 file refuses it
        return "not_utf8"
    except (ValueError, RecursionError):  # an integer of > 4300 digits (json.load refuses it), nesting too deep
        return "malformed"


def _json(value: object) -> bytes:
    """`json.dumps(value, ensure_ascii=False)` in UTF-8: orjson for a string (the same escapes, a test checks every
    code point; faster), json for anything else."""
    if type(value) is str:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:  # a lone surrogate: json.dumps keeps it, its UTF-8 encoding raises below
            pass
    # default=int: an integer too long for `int` here (see `source`) is written as json.dumps writes an int
    return json.dumps(value, ensure_ascii=False, default=int).encode()


def text(value: object) -> str:
    """A row's value as text (for its length statistics): a string itself, anything else its JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=int)


Lines = tuple[bytes, int, bool]  # lines of a record, joined; how many; whether they carry a `system` key
CHUNK_BYTES = 1 << 20  # a record's lines cross the pipe in pieces of about this size


class More(NamedTuple):
    """More lines of the record before, for the variant at `variant`: its rows ran past a chunk."""

    variant: int  # the index of the variant among those built
    lines: Lines


class Rules:
    """The rules for the variants being built, record by record, in the reader process. `record` gives each
    variant's first `Lines` of the record, or its skip reason, and `rest` the `More` that follow;
    `stats` the rows' character lengths (as `neosft.data.stats` has them)."""

    def __init__(self, variants: list[Variant]):
        self.names = [v.name for v in variants]
        self.lengths = [(array("I"), array("I")) for _ in variants]
        self.pending: list[tuple[int, Iterator[Lines]]] = []

    def record(self, record: object) -> list[Lines | str]:
        out: list[Lines | str] = []
        self.pending = []
        for index, name in enumerate(self.names):
            made = lines(name, record)
            if isinstance(made, str):
                out.append(made)
                continue
            chunks = self._chunks(index, made)
            out.append(next(chunks))
            self.pending.append((index, chunks))
        return out

    def rest(self) -> Iterator[More]:
        """The rest of the last record's lines, a chunk at a time."""
        for index, chunks in self.pending:
            for piece in chunks:
                yield More(index, piece)

    def _chunks(self, index: int, made: Iterable[tuple[bytes, dict]]) -> Iterator[Lines]:
        """`made` in pieces of about CHUNK_BYTES (the last one may be empty); each row measured as it passes."""
        instruction, output = self.lengths[index]
        measure = (lambda v: len(text(v))) if self.names[index] == "single" else len  # single: any JSON value
        piece: list[bytes] = []
        size, system = 0, False
        for data, row in made:
            piece.append(data)
            size += len(data)
            instruction.append(measure(row["instruction"]))
            output.append(measure(row["output"]))
            system = "system" in row
            if size >= CHUNK_BYTES:
                yield b"".join(piece), len(piece), system
                piece, size = [], 0
        yield b"".join(piece), len(piece), system

    def stats(self) -> dict:
        return {
            name: {"rows": len(i), "instruction_chars": summary(i), "output_chars": summary(o)}
            for name, (i, o) in zip(self.names, self.lengths)
        }

"""The held-out split of `neosft data build --holdout`: source records set aside, by content, before any variant.

A record's key is the first 8 bytes (big-endian) of the sha256 of its conversation as the build stores it: the
JSON-escaped system (or nothing, marked apart from an empty one) and turns, each ended by a NUL byte (which an
escaped string never holds). A record is held out when its key is below `fraction` x 2^64; when more than `cap`
records qualify, only those with the smallest keys: every record under the smallest key that `cap` cannot hold
whole (records with equal keys, identical copies, go together). The same records whatever the order or the run;
memory holds at most `cap` records.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from dataclasses import dataclass
from itertools import count
from typing import Any

from neosft.errors import UserError

SPACE = 1 << 64
CLUSTER_DEFAULT = "1%:1000"  # the data Job's: 1 % of the records, at most 1,000
_SPEC = re.compile(r"(?:(?P<percent>\d+(?:\.\d+)?)%(?::(?P<cap>\d+))?|(?P<count>\d+))")


@dataclass(frozen=True)
class Holdout:
    """The rule: a share of the key space and an optional cap on the count."""

    fraction: float
    cap: int | None

    @classmethod
    def parse(cls, spec: str) -> Holdout:
        """`N` (the N records with the smallest keys), `P%` (keys in the lowest P %), `P%:N` (both), `0` (none)."""
        m = _SPEC.fullmatch(spec.strip())
        if not m or (m["percent"] and float(m["percent"]) > 100):
            raise UserError(f"--holdout {spec!r}: expected N records, P% of them (0 to 100) or P%:N (at most N)")
        if m["count"]:
            return cls(1.0 if int(m["count"]) else 0.0, int(m["count"]))
        return cls(float(m["percent"]) / 100, int(m["cap"]) if m["cap"] else None)

    @property
    def enabled(self) -> bool:
        return self.fraction > 0 and self.cap != 0

    def describe(self) -> str:
        share = "every record" if self.fraction >= 1 else f"keys below {self.fraction:.6g} x 2^64"
        cap = f", at most {self.cap} (the smallest keys)" if self.cap is not None else ""
        return f"sha256 of the conversation, first 8 bytes big-endian as the key: {share}{cap}"


def key(system: bytes | None, rounds: list[tuple[bytes, bytes]]) -> int:
    """The record's key from its escaped system and turns (see the module)."""
    h = hashlib.sha256(b"\x01" if system is None else b"\x02" + system + b"\x00")
    for human, gpt in rounds:
        h.update(human + b"\x00" + gpt + b"\x00")
    return int.from_bytes(h.digest()[:8], "big")


class Splitter:
    """Per record, in the reader: `add` says where it goes now; `finish` gives the held-out records the cap kept."""

    def __init__(self, rule: Holdout):
        self.rule = rule
        self.ceiling = min(int(rule.fraction * SPACE), SPACE) if rule.enabled else 0
        self.heap: list[tuple[int, int, Any]] = []  # (-key, arrival, record): the largest key on top
        self.arrival = count()

    def add(self, k: int, record: Any) -> tuple[list[Any], list[Any]]:
        """(records released to training, records held out) after `record`, whose key is `k`."""
        if k >= self.ceiling:
            return [record], []
        if self.rule.cap is None:
            return [], [record]
        heapq.heappush(self.heap, (-k, next(self.arrival), record))
        released = []
        while len(self.heap) > self.rule.cap:  # the largest key leaves, with every record of the same key
            top = -self.heap[0][0]
            while self.heap and -self.heap[0][0] == top:
                released.append(heapq.heappop(self.heap)[2])
            self.ceiling = top
        return released, []

    def finish(self) -> list[Any]:
        """The records the cap kept, by key."""
        kept = [record for _, _, record in sorted(self.heap, key=lambda e: (-e[0], e[1]))]
        self.heap = []
        return kept

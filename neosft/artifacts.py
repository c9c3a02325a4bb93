"""PLACEHOLDER until the train branch lands its loss-record contract."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class LossRecord:
    current_steps: int
    total_steps: int
    loss: float | None = None
    throughput: float | None = None
    elapsed_s: float = 0.0


def read_losses(data: bytes) -> list[LossRecord]:
    out = []
    for line in data.decode().splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(LossRecord(r["current_steps"], r["total_steps"], r.get("loss"), r.get("throughput"), r.get("elapsed_s", 0.0)))
    return out

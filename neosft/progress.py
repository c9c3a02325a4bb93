"""Progress for long work: a live bar on a terminal, a plain log line every few seconds otherwise; the
durations people read and type (`--timeout 12h`, `0:42:10`); and the tables they read."""

from __future__ import annotations

import datetime
import re
import sys
import time
from typing import Any

from neosft.errors import UserError


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows])


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '30m', '12h' or '7d'."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise UserError(f"--timeout {text!r}: give seconds or a duration such as 30m, 12h, 7d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def hms(seconds: float) -> str:
    """'1:02:03' for 3723 s."""
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Byte-based progress of a streaming pass, with a record rate; use as a context manager."""

    LOG_EVERY_S = 10.0

    def __init__(self, label: str, total_bytes: int):
        self.label, self.total = label, total_bytes
        self.start = self.last_log = time.monotonic()
        self.bar: Any = None  # a rich progress bar on a terminal

    def __enter__(self) -> Progress:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeRemainingColumn  # a terminal only
            from rich.progress import Progress as Bar

            self.bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total or None, rate="")
        return self

    def update(self, done_bytes: int, records: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self.start, 1e-9)
        rate = f"{records / elapsed:,.0f} records/s, {done_bytes / elapsed / 1e6:.1f} MB/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=done_bytes, rate=rate)
        elif now - self.last_log >= self.LOG_EVERY_S:
            self.last_log = now
            pct = f" ({100 * done_bytes / self.total:.0f}%)" if self.total else ""
            log(
                f"{self.label}: {done_bytes / 1e6:,.1f} of {self.total / 1e6:,.1f} MB{pct}, {records:,} records, {rate}"
            )

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

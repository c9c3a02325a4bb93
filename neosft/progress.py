"""Progress for long work: a live bar on a terminal, a plain log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Byte-based progress of a streaming pass, with a record rate; use as a context manager."""

    LOG_EVERY_S = 10.0

    def __init__(self, label: str, total_bytes: int):
        self.label, self.total = label, total_bytes
        self.start = self.last_log = time.monotonic()
        self.bar = None

    def __enter__(self) -> "Progress":
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                           TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=True)
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
            log(f"{self.label}: {done_bytes / 1e6:,.1f} of {self.total / 1e6:,.1f} MB{pct}, {records:,} records, {rate}")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

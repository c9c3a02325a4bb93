"""The one interface every backend implements: what `neosft` does with a run, wherever it executes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Status:
    """A run's parts as a table, and what could not be read (e.g. a loss log in storage)."""

    headers: list[str]
    rows: list[list[str]]
    problems: list[str] = field(default_factory=list)


class Backend(Protocol):
    def submit(self, objects: list[dict]) -> list[str]:
        """Start a run from its rendered, validated objects; returns 'Kind/name' of each."""

    def status(self, run_id: str) -> Status:
        """The run's parts, one row each, and what could not be read."""

    def logs(self, run_id: str, variant: str | None, follow: bool) -> list[tuple[str, Iterator[str]]]:
        """(source, its lines) for each of the run's log sources (pods, processes), rank 0 first; one
        source whose lines grow as it runs with `follow`."""

    def wait(self, run_id: str, echo: Callable[[str], None], timeout_s: float) -> None:
        """Report state changes until the run has finished; raise a `UserError` if it failed or timed out."""

    def delete(self, run_id: str) -> list[str]:
        """Remove what the run made (its data in storage stays); returns 'Kind/name' of each."""

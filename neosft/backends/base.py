"""The one interface every execution backend implements: what `neosft` does with a run, wherever it runs.

Modelled on the Kubeflow SDK's ExecutionBackend: `render` turns chart values into a `RenderedRun`
(`--dry-run` stops there), `submit` starts it, `wait` follows it to its end, and `status`, `logs` and
`delete` find it again by its id. `Local` runs the rendered pods as processes on this machine,
`Kubernetes` creates them in a namespace; the CLI builds either in one factory and uses only this type.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

from neosft.backends.types import RenderedRun, RunStatus, RunSummary, Store
from neosft.k8s.kinds import TrainerKind
from neosft.k8s.manifests import manifests
from neosft.k8s.render import merge, with_defaults

Echo = Callable[[str], None]


class ExecutionBackend(abc.ABC):
    """Where a run executes."""

    namespace: str  # the chart's release namespace

    @abc.abstractmethod
    def trainer_kind(self, requested: str, echo: Echo) -> TrainerKind:
        """The training resource kind for `requested` ('auto', 'pytorchjob' or 'trainjob') here."""

    @abc.abstractmethod
    def store(self, values: dict) -> Store:
        """The store a run with these values writes to."""

    def render(self, values: dict, run_id: str, requested: str | None, echo: Echo) -> RenderedRun:
        """The run's validated objects, with the trainer kind `requested`, else the values' train.kind (or its old
        name train.backend), else auto."""
        train = with_defaults(values)["train"]
        trainer = None
        if train["enabled"]:
            asked = values.get("train") or {}
            trainer = self.trainer_kind(requested or asked.get("backend") or asked.get("kind") or "auto", echo)
            values = merge(values, {"train": {"kind": trainer.name, "backend": ""}})
        merged = with_defaults(values)
        data = merged["data"]
        store = self.store(values)
        data_uri = data["uri"] or f"{store.root}/data/{run_id}"
        return RenderedRun(
            run_id,
            manifests(values, run_id, self.namespace),
            store,
            trainer,
            tuple(merged["variants"]) if trainer else (),
            data_uri,
            bool(data["enabled"]),
        )

    @abc.abstractmethod
    def submit(self, run: RenderedRun, echo: Echo, warn: Echo) -> list[str]:
        """Start the run and keep its manifests in its run folder; returns 'Kind/name' of what it created."""

    @abc.abstractmethod
    def wait(self, run_id: str, echo: Echo, timeout_s: float) -> None:
        """Report state changes until the run has finished; raise a `UserError` if it failed or timed out."""

    @abc.abstractmethod
    def status(self, run_id: str) -> RunStatus:
        """The run's parts, each with its latest progress from the store."""

    @abc.abstractmethod
    def runs(self) -> list[RunSummary]:
        """Every run this backend holds."""

    @abc.abstractmethod
    def logs(self, run_id: str, variant: str | None, follow: bool) -> list[tuple[str, Iterator[str]]]:
        """(source, its lines) for each of the run's log sources (pods, processes), rank 0 first; one
        source whose lines grow as it runs with `follow`."""

    @abc.abstractmethod
    def release(self, kind: str, names: list[str], wait_s: float) -> list[str]:
        """Let the named held training objects start (the data Job's last step); returns what it released."""

    @abc.abstractmethod
    def delete(self, run_id: str) -> list[str]:
        """Remove what the run made here (its data in the store stays); returns 'Kind/name' of each."""

    def close(self) -> None:  # noqa: B027  # optional: most backends hold nothing
        """Release what the backend holds (a local S3 server)."""

    def __enter__(self) -> ExecutionBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def with_store_default(values: dict, environ: dict[str, str]) -> dict:
    """`values` with this machine's NEOSFT_S3_ENDPOINT as s3.endpoint when they name none: the one store
    the pods and this process then talk to."""
    endpoint = environ.get("NEOSFT_S3_ENDPOINT")
    if endpoint and not (values.get("s3") or {}).get("endpoint"):
        return merge(values, {"s3": {"endpoint": endpoint}})
    return values

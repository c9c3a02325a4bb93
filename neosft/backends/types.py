"""What crosses the backend interface: the store of a run, a rendered run, and a run's status."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neosft.k8s.kinds import TrainerKind
from neosft.k8s.render import to_yaml, with_defaults
from neosft.runfolder import TrainingProgress
from neosft.storage import Location, location


@dataclass(frozen=True)
class Store:
    """A run's object store, configured once: the pods and this process both use it.

    `root` is s3://bucket/prefix, `endpoint` the S3-compatible server ('' for AWS), `region` its region.
    `folder` is set when a local S3 server serves the bucket from that folder: this process reads it there.
    """

    root: str
    endpoint: str = ""
    region: str = "us-east-1"
    folder: str | None = None

    @classmethod
    def from_values(cls, values: dict, folder: str | None = None) -> Store:
        """The store the chart's values (over its defaults) give the pods."""
        s3 = with_defaults(values)["s3"]
        root = f"s3://{s3['bucket']}/{s3['prefix']}" if s3["prefix"] else f"s3://{s3['bucket']}"
        return cls(root, s3["endpoint"], s3["region"], folder)

    def location(self, uri: str) -> Location:
        """`uri` (inside this store) as this process reaches it."""
        if self.folder is not None and uri.startswith("s3://"):
            return location(Path(self.folder) / uri[5:])
        return location(uri, self.endpoint)


@dataclass(frozen=True)
class RenderedRun:
    """A run's validated objects and what rendering decided: read these, never the objects' argv or labels."""

    run_id: str
    objects: list[dict]
    store: Store
    trainer_kind: TrainerKind | None  # None: a data-only run
    variants: tuple[str, ...]  # what trains
    data_uri: str  # the dataset the training reads
    builds_data: bool  # the run's data Job builds data_uri first

    @property
    def folder(self) -> str:
        """<store>/runs/<run-id>: the variants' outputs and the kept manifests."""
        return f"{self.store.root}/runs/{self.run_id}"

    def outputs(self) -> dict[str, str]:
        """URI of what each part writes: 'data' (when the run builds it) and each variant."""
        built = {"data": self.data_uri} if self.builds_data else {}
        return {**built, **{name: f"{self.folder}/{name}" for name in self.variants}}

    def yaml(self) -> str:
        return to_yaml(self.objects)


@dataclass(frozen=True)
class Part:
    """One Job or training object of a run, or the local process that stands for it."""

    kind: str
    name: str
    variant: str  # 'data' or a variant
    state: str  # Succeeded, Failed, Running, Pending, Suspended (why), ...
    pods: str  # e.g. '1 Running', '-' for none
    restarts: int
    output: str | None = None  # where it writes
    progress: TrainingProgress | None = None  # from its loss log in the store
    event: str | None = None  # its controller's latest warning while it neither runs nor has finished


@dataclass(frozen=True)
class RunStatus:
    """A run's parts, and what could not be read (e.g. a loss log in the store)."""

    run_id: str
    parts: list[Part]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunSummary:
    """One run in a listing."""

    run_id: str
    holds: list[str]  # 'data' and the variants
    states: str  # e.g. '1 Pending, 4 Suspended'
    created: str

"""The cluster backends: PyTorchJob (Kubeflow training operator v1.9) and TrainJob (Kubeflow Trainer v2).

`Kubeflow` is one namespace of a cluster behind the backend interface. What differs between the two
training kinds (where suspend lives, how to install them) is `neosft.k8s.kinds`; the API calls are
`neosft.k8s.cluster`; reading states and rows is `neosft.k8s.runs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from neosft.backends.base import Status
from neosft.errors import UserError
from neosft.k8s import runs
from neosft.k8s.cluster import Cluster
from neosft.k8s.kinds import none_installed
from neosft.variants import VARIANTS


class Kubeflow:
    """A run's objects in one namespace, whichever training kind it uses."""

    def __init__(self, namespace: str | None = None):
        self.cluster = Cluster(namespace)
        self.namespace = self.cluster.namespace

    def render(self, values: dict, run_id: str, backend: str | None, echo: Callable[[str], None]) -> list[dict]:
        """The run's validated objects, with the training kind `backend` names or the cluster serves."""
        return runs.manifests(runs.with_backend(values, backend, self.cluster, echo), run_id, self.namespace)

    def submit(self, objects: list[dict]) -> list[str]:
        return self.cluster.create(objects)

    def status(self, run_id: str) -> Status:
        objects = self.cluster.objects(run_id)
        if not runs.watched(objects):
            if not self.cluster.served():
                raise UserError(none_installed())
            raise UserError(f"no run {run_id} in namespace {self.namespace!r}")
        problems: list[str] = []

        def loss(uri: str) -> str:
            try:
                return runs.latest_loss(uri)
            except UserError as e:
                problems.append(str(e))
                return "?"

        return Status(["KIND", "NAME", "VARIANT", "STATE", "PODS", "RESTARTS", "LATEST LOSS"],
                      runs.status_rows(objects, loss), problems)

    def list(self) -> Status:
        """Every run in the namespace."""
        return Status(["RUN", "HOLDS", "STATE", "CREATED"], runs.run_rows(self.cluster.objects()))

    def logs(self, run_id: str, variant: str | None, follow: bool) -> list[tuple[str, Iterator[str]]]:
        pods = runs.select_pods(self.cluster.objects(run_id), variant)
        if not pods:
            raise UserError(f"run {run_id} has no {variant + ' ' if variant else ''}pods in namespace "
                            f"{self.namespace!r} yet")
        if follow:
            if variant is None and len({runs.variant_of(p) for p in pods}) > 1:
                raise UserError("--follow streams one pod: pick it with --variant data|" + "|".join(VARIANTS))
            pods = pods[:1]
        return [(pod["metadata"]["name"], self.cluster.logs(pod, follow)) for pod in pods]

    def wait(self, run_id: str, echo: Callable[[str], None], timeout_s: float) -> None:
        runs.wait(self.cluster, run_id, echo, timeout_s)

    def delete(self, run_id: str) -> list[str]:
        deleted = self.cluster.delete(run_id)
        if not deleted:
            raise UserError(f"no run {run_id} in namespace {self.namespace!r}")
        return deleted

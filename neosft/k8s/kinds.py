"""The custom resources neosft creates, and the two training backends they make up.

pytorchjob: one PyTorchJob per variant (Kubeflow training operator v1.9, kubeflow.org/v1).
trainjob: this run's TrainingRuntime and one TrainJob per variant (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    kind: str
    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


@dataclass(frozen=True)
class Backend:
    """A training object kind: how to find it, hold it (`suspend`, a path in its spec) and install it."""

    name: str  # the chart's train.backend and `neosft submit --backend`
    resource: Resource
    suspend: tuple[str, ...]
    operator: str
    install: str

    @property
    def kind(self) -> str:
        return self.resource.kind

    def suspended(self, obj: dict) -> bool:
        node = obj.get("spec") or {}
        for key in self.suspend:
            node = node.get(key) or {}
        return node is True

    def suspend_patch(self, value: bool) -> dict:
        patch: object = value
        for key in reversed(("spec", *self.suspend)):
            patch = {key: patch}
        return patch  # type: ignore[return-value]


PYTORCHJOB = Backend(
    "pytorchjob", Resource("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"), ("runPolicy", "suspend"),
    "the Kubeflow training operator v1.9",
    "kubectl apply --server-side -k 'github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0' "
    "(k8s/training-operator)")
TRAINJOB = Backend(
    "trainjob", Resource("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs"), ("suspend",),
    "Kubeflow Trainer v2.3",
    "kubectl apply --server-side -k 'https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0' "
    "(k8s/trainer)")
TRAINING_RUNTIME = Resource("TrainingRuntime", "trainer.kubeflow.org", "v1alpha1", "trainingruntimes")
BACKENDS = {b.name: b for b in (TRAINJOB, PYTORCHJOB)}  # in the order `--backend auto` prefers them
BY_KIND = {b.kind: b for b in BACKENDS.values()}
CUSTOM = {r.kind: r for r in (PYTORCHJOB.resource, TRAINJOB.resource, TRAINING_RUNTIME)}
TRAINING_KINDS = tuple(BY_KIND)


def not_installed(backend: Backend) -> str:
    return f"the {backend.kind} CRD is not installed in this cluster: install {backend.operator} with {backend.install}"


def none_installed() -> str:
    return ("neither the TrainJob nor the PyTorchJob CRD is installed in this cluster: install "
            + " or ".join(f"{b.operator} ({b.kind}) with {b.install}" for b in BACKENDS.values()))

"""The custom resources neosft creates, and the two training resource kinds (`trainer_kind`) a run can use.

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
class TrainerKind:
    """A training object kind: how to find it, hold it (`suspend`, a path in its spec) and install it."""

    name: str  # a run's trainer_kind: the chart's train.kind and `neosft submit|run --kind`
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


PYTORCHJOB = TrainerKind(
    "pytorchjob",
    Resource("PyTorchJob", "kubeflow.org", "v1", "pytorchjobs"),
    ("runPolicy", "suspend"),
    "the Kubeflow training operator v1.9",
    "kubectl apply --server-side -k 'github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.0' "
    "(k8s/training-operator)",
)
TRAINJOB = TrainerKind(
    "trainjob",
    Resource("TrainJob", "trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    ("suspend",),
    "Kubeflow Trainer v2.3",
    "kubectl apply --server-side -k 'https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0' "
    "(k8s/trainer)",
)
TRAINING_RUNTIME = Resource("TrainingRuntime", "trainer.kubeflow.org", "v1alpha1", "trainingruntimes")
WORKLOAD = Resource("Workload", "kueue.x-k8s.io", "v1beta1", "workloads")  # what Kueue queues, owned by the job
LOCAL_QUEUE = Resource("LocalQueue", "kueue.x-k8s.io", "v1beta1", "localqueues")
TRAINER_KINDS = {k.name: k for k in (TRAINJOB, PYTORCHJOB)}  # in the order `--backend auto` prefers them
BY_KIND = {k.kind: k for k in TRAINER_KINDS.values()}
CUSTOM = {r.kind: r for r in (PYTORCHJOB.resource, TRAINJOB.resource, TRAINING_RUNTIME)}
TRAINING_KINDS = tuple(BY_KIND)


def not_installed(trainer: TrainerKind) -> str:
    return f"the {trainer.kind} CRD is not installed in this cluster: install {trainer.operator} with {trainer.install}"


def none_installed() -> str:
    return "neither the TrainJob nor the PyTorchJob CRD is installed in this cluster: install " + " or ".join(
        f"{b.operator} ({b.kind}) with {b.install}" for b in TRAINER_KINDS.values()
    )


def pod_spec(obj: dict, runtime: dict | None = None) -> dict:
    """The pod spec of a Job or of a training object's rank-0 node, as the cluster would create it.

    A TrainJob's pod is its TrainingRuntime's `node` template (`runtime`) with the TrainJob's trainer
    arguments in the container named node, as Trainer's torch plugin makes it.
    """
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]
    if obj["kind"] == PYTORCHJOB.kind:
        return obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    if obj["kind"] == TRAINJOB.kind and runtime is not None:
        [node] = [j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == "node"]
        spec = node["template"]["spec"]["template"]["spec"]
        args = obj["spec"]["trainer"].get("args")
        containers = [{**c, "args": args} if c["name"] == "node" and args else c for c in spec["containers"]]
        return {**spec, "containers": containers}
    raise ValueError(
        f"no pod spec for {obj['kind']}" + (" without its TrainingRuntime" if obj["kind"] == TRAINJOB.kind else "")
    )

"""The cluster backend: a run's objects in one namespace, as PyTorchJobs (Kubeflow training operator v1.9)
or TrainJobs (Kubeflow Trainer v2).

What differs between the two trainer kinds (where suspend lives, how to install them) is
`neosft.k8s.kinds`; the API calls are `neosft.k8s.cluster`; states and waiting `neosft.backends.state`;
what status shows `neosft.backends.view`. The loss column is read here, from the store the pods write to.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

from neosft.backends import state, view
from neosft.backends.base import Echo, ExecutionBackend
from neosft.backends.types import RenderedRun, RunStatus, RunSummary, Store
from neosft.errors import UserError
from neosft.k8s.cluster import GATE, GATE_ANNOTATION, KUEUE_CONFIG, OPERATOR_TEMPLATE, QUEUE_LABEL, Cluster
from neosft.k8s.kinds import PYTORCHJOB, TRAINER_KINDS, TrainerKind, none_installed, pod_spec
from neosft.runfolder import progress
from neosft.storage import location
from neosft.variants import VARIANTS


class Kubernetes(ExecutionBackend):
    """One namespace of the cluster the kubeconfig names; `offline` renders without asking it (a dry run)."""

    def __init__(self, namespace: str | None = None, offline: bool = False):
        self._namespace, self.offline = namespace, offline
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster(self._namespace)
        return self._cluster

    @property
    def namespace(self) -> str:  # type: ignore[override]
        return (self._namespace or "default") if self.offline else self.cluster.namespace

    def trainer_kind(self, requested: str, echo: Echo) -> TrainerKind:
        """auto asks the cluster which CRDs it serves (TrainJob first) and says what it chose; offline it
        renders PyTorchJobs. A kind the cluster does not serve is an error."""
        if self.offline:
            return PYTORCHJOB if requested == "auto" else TRAINER_KINDS[requested]
        if requested != "auto":
            self.cluster.require(TRAINER_KINDS[requested])
            return TRAINER_KINDS[requested]
        served = self.cluster.served()
        if not served:
            raise UserError(none_installed())
        echo(
            f"backend: {served[0].kind} (the cluster serves {' and '.join(k.kind for k in served)}; "
            "--backend picks another)"
        )
        return served[0]

    def store(self, values: dict) -> Store:
        return Store.from_values(values)

    def submit(self, run: RenderedRun, echo: Echo, warn: Echo) -> list[str]:
        if run.trainer_kind is not None:
            self._check_setup(run.trainer_kind, [o for o in run.objects if o["kind"] == run.trainer_kind.kind], warn)
        created = self.cluster.create(run.objects)
        target = f"{run.folder}/manifests.yaml"
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            echo(f"  {'manifests':<13} not kept in {target}: no S3 credentials here (AWS_ACCESS_KEY_ID)")
            return created
        try:
            run.store.location(target).write_bytes(run.yaml().encode())
            echo(f"  {'manifests':<13} -> {target}")
        except UserError as e:
            warn(f"warning: the manifests were not kept in the run folder: {e}")
        return created

    def _check_setup(self, trainer: TrainerKind, training: list[dict], warn: Echo) -> None:
        """Refuse, or warn, before any GPU is held, where the cluster is set up so that the run cannot start."""
        namespace = self.cluster.namespace
        queue = next(((o["metadata"].get("labels") or {}).get(QUEUE_LABEL) for o in training), None)
        held = any(GATE in (o["metadata"].get("annotations") or {}).get(GATE_ANNOTATION, "") for o in training)
        if held and not queue and self.cluster.local_queue_exists("default"):
            warn(
                f"warning: namespace {namespace} has Kueue's LocalQueue 'default', which Kueue writes onto this run's "
                "training objects: Kueue 0.19 or later (admission gate on) holds them until their dataset is "
                "published; an older Kueue admits them at once, before it exists (build it first: --data-only, "
                "then --data)"
            )
        if trainer is PYTORCHJOB and queue:
            frameworks = self.cluster.kueue_frameworks()
            if frameworks is None:
                warn(
                    f"warning: cannot read Kueue's configuration ({'/'.join(KUEUE_CONFIG[:2])}) to check that it "
                    "manages PyTorchJobs: Kueue 0.19 ships kubeflow.org/pytorchjob off, and then the PyTorchJobs "
                    "never start (--backend trainjob avoids it)"
                )
            elif "kubeflow.org/pytorchjob" not in frameworks:
                raise UserError(
                    "Kueue does not manage PyTorchJobs here: kubeflow.org/pytorchjob is not in integrations.frameworks "
                    f"of {'/'.join(KUEUE_CONFIG[:2])} (off by default since Kueue 0.19), so queued PyTorchJobs would "
                    "never start; use --backend trainjob, or enable the integration and restart Kueue"
                )
        multinode = any("Worker" in o["spec"].get("pytorchReplicaSpecs", {}) for o in training)
        if multinode and self.cluster.pod_security() == "restricted" and not self.cluster.operator_template():
            warn(
                f"warning: namespace {namespace} enforces Pod Security 'restricted', and the training operator's "
                f"init container template ({'/'.join(OPERATOR_TEMPLATE)}) is not found: the operator's init-pytorch "
                "container is refused in every Worker pod while the master holds its GPUs; install the operator "
                "with k8s/training-operator"
            )

    def wait(self, run_id: str, echo: Echo, timeout_s: float) -> None:
        state.wait(self.cluster, run_id, echo, timeout_s)

    def status(self, run_id: str) -> RunStatus:
        objects = self.cluster.objects(run_id)
        if not state.watched(objects):
            if not self.cluster.served():
                raise UserError(none_installed())
            raise UserError(f"no run {run_id} in namespace {self.namespace!r}")
        endpoint = _pods_endpoint(objects)  # the store the pods write to, whatever this machine's environment says
        parts, problems = [], []
        for part in view.parts(objects):
            if view.stalled(part):
                part = replace(part, event=self.cluster.warning(part.kind, part.name))
            if part.kind != "Job" and part.output:
                try:
                    part = replace(part, progress=progress(location(part.output, endpoint)))
                except UserError as e:
                    problems.append(str(e))
            parts.append(part)
        return RunStatus(run_id, parts, problems)

    def runs(self) -> list[RunSummary]:
        return view.summaries(self.cluster.objects())

    def logs(self, run_id: str, variant: str | None, follow: bool) -> list[tuple[str, Iterator[str]]]:
        pods = view.select_pods(self.cluster.objects(run_id), variant)
        if not pods:
            raise UserError(
                f"run {run_id} has no {variant + ' ' if variant else ''}pods in namespace {self.namespace!r} yet"
            )
        if follow:
            if variant is None and len({state.variant_of(p) for p in pods}) > 1:
                raise UserError("--follow streams one pod: pick it with --variant data|" + "|".join(VARIANTS))
            pods = pods[:1]
        return [(pod["metadata"]["name"], self.cluster.logs(pod, follow)) for pod in pods]

    def release(self, kind: str, names: list[str], wait_s: float) -> list[str]:
        return self.cluster.release(kind, names, wait_s)

    def delete(self, run_id: str) -> list[str]:
        deleted = self.cluster.delete(run_id)
        if not deleted:
            raise UserError(f"no run {run_id} in namespace {self.namespace!r}")
        return deleted


def _pods_endpoint(objects: dict[str, list[dict]]) -> str:
    """The S3 endpoint the run's pods were given (NEOSFT_S3_ENDPOINT in their spec; '' for AWS)."""
    runtime = next(iter(objects.get("TrainingRuntime") or []), None)
    for obj in state.watched(objects):
        try:
            spec = pod_spec(obj, runtime)
        except ValueError:
            continue
        for container in spec.get("initContainers", []) + spec["containers"]:
            for entry in container.get("env", []):
                if entry["name"] == "NEOSFT_S3_ENDPOINT" and "value" in entry:
                    return entry["value"]
    return ""

"""What `neosft status` and `logs` show of a run's objects: one part per Job and training object, its pods."""

from __future__ import annotations

from collections.abc import Iterable

from neosft.backends.state import FINAL, WATCHED, held_reason, state, variant_of, watched
from neosft.backends.types import Part, RunSummary
from neosft.k8s.cluster import OUTPUT_ANNOTATION, RUN_LABEL


def parts(objects: dict[str, list[dict]]) -> list[Part]:
    """One part per Job and training object: its state (why it is held), pods, restarts, output."""
    found = []
    for kind in WATCHED:
        for obj in objects[kind]:
            pods = [p for p in objects["Pod"] if variant_of(p) == variant_of(obj)]
            now = state(obj)
            if now == "Suspended" and kind != "Job":
                now = f"Suspended ({held_reason(objects, obj)})"
            found.append(
                Part(
                    kind,
                    obj["metadata"]["name"],
                    variant_of(obj),
                    now,
                    _pod_summary(pods) or "-",
                    sum(c.get("restartCount", 0) for p in pods for c in _container_statuses(p)),
                    (obj["metadata"].get("annotations") or {}).get(OUTPUT_ANNOTATION),
                )
            )
    return found


def summaries(objects: dict[str, list[dict]]) -> list[RunSummary]:
    """One summary per run: what it holds, its states, its creation time."""
    runs: dict[str, list[dict]] = {}
    for obj in watched(objects):
        runs.setdefault(obj["metadata"]["labels"][RUN_LABEL], []).append(obj)
    return [
        RunSummary(
            run_id,
            [variant_of(o) for o in objs],
            count(state(o) for o in objs),
            min(o["metadata"].get("creationTimestamp") or "-" for o in objs),
        )
        for run_id, objs in sorted(runs.items())
    ]


def select_pods(objects: dict[str, list[dict]], variant: str | None) -> list[dict]:
    """The run's pods for `variant` ('data' for the data Job; all without it), rank 0 first, newest first."""
    pods = [p for p in objects["Pod"] if variant is None or variant_of(p) == variant]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    pods.sort(key=lambda p: not _rank_zero(p))
    return pods


def stalled(part: Part) -> bool:
    """A training object that has not finished and has no running pod: its controller's events say why."""
    return part.kind != "Job" and part.state not in FINAL and "Running" not in part.pods


def _rank_zero(pod: dict) -> bool:
    """A PyTorchJob's master, or the first node of a TrainJob's JobSet (completion index 0: an annotation on
    every supported Kubernetes version; the label of the same name exists only from 1.28)."""
    labels = pod["metadata"].get("labels") or {}
    annotations = pod["metadata"].get("annotations") or {}
    return (
        labels.get("training.kubeflow.org/replica-type") == "master"
        or annotations.get("batch.kubernetes.io/job-completion-index") == "0"
    )


def _container_statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def _pod_summary(pods: list[dict]) -> str:
    """e.g. '2 Running' or '1 Pending (CreateContainerConfigError)'."""
    phases = []
    for pod in pods:
        reasons = {
            c["state"]["waiting"].get("reason")
            for c in _container_statuses(pod)
            if (c.get("state") or {}).get("waiting")
        } - {None, "PodInitializing"}
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        phases.append(f"{phase} ({', '.join(sorted(reasons))})" if reasons else phase)
    return count(phases)


def count(items: Iterable[str]) -> str:
    """'2 Running, 1 Pending': each item with how often it occurs, in order of first appearance."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{n} {item}" for item, n in counts.items())

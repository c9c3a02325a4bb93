"""The state of a run's objects as the cluster reports them, and waiting for them to finish."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from neosft.errors import UserError
from neosft.k8s.cluster import COMPONENT_LABEL, QUEUE_LABEL, VARIANT_LABEL, Cluster
from neosft.k8s.kinds import BY_KIND, TRAINING_KINDS
from neosft.progress import format_duration

FINAL = ("Succeeded", "Failed")
WATCHED = ("Job", *TRAINING_KINDS)  # what status, run listings and --wait follow


def state(obj: dict) -> str:
    """Succeeded, Failed, Suspended, Running, Restarting, Created or Pending.

    Conditions: a Job's and a TrainJob's Complete, a PyTorchJob's Succeeded; Failed for all.
    """
    status = obj.get("status") or {}
    true = [c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"]
    true = ["Succeeded" if t == "Complete" else t for t in true]
    for final in FINAL:
        if final in true:
            return final
    trainer = BY_KIND.get(obj.get("kind", ""))
    if (trainer and trainer.suspended(obj)) or "Suspended" in true:
        return "Suspended"
    if obj.get("kind") == "Job":
        return "Running" if status.get("active") else "Pending"
    if obj.get("kind") == "TrainJob":  # no Running condition: its JobSet's Jobs say
        busy = sum(j.get("active", 0) + j.get("ready", 0) for j in status.get("jobsStatus") or [])
        return "Running" if busy else "Pending"
    return true[-1] if true else "Pending"


def held_reason(objects: dict[str, list[dict]], obj: dict) -> str:
    """Why a suspended training object waits: its data Job's state, then its Kueue queue, but "queued" only
    when a Kueue Workload owns it (a queue label alone is not Kueue managing it)."""
    queue = (obj["metadata"].get("labels") or {}).get(QUEUE_LABEL)
    data = [state(job) for job in objects["Job"] if variant_of(job) == "data"]
    if data and data[0] != "Succeeded":
        return {"Failed": "data Job failed: no GPU held"}.get(data[0], "waiting for its dataset")
    uid = obj["metadata"].get("uid")
    owned = any(
        uid and uid in {o.get("uid") for o in w["metadata"].get("ownerReferences") or []}
        for w in objects.get("Workload") or []
    )
    if owned:
        return f"queued in Kueue queue {queue}" if queue else "queued in Kueue"
    if queue:
        return (
            f"labelled for Kueue queue {queue}, but no Kueue Workload stands for it: does Kueue manage "
            f"{obj['kind']}s (integrations.frameworks)?"
        )
    return "dataset published, releasing" if data else "waiting to be released"


def watched(objects: dict[str, list[dict]]) -> list[dict]:
    """The run's Jobs and training objects."""
    return [obj for kind in WATCHED for obj in objects[kind]]


def variant_of(obj: dict) -> str:
    """The variant an object trains, or its component ('data' for the data Job)."""
    labels = obj["metadata"].get("labels") or {}
    return labels.get(VARIANT_LABEL) or labels.get(COMPONENT_LABEL, "?")


def report(current: dict[str, str], seen: dict[str, str], echo: Callable[[str], None]) -> None:
    """Echo each 'Kind/name: State' that changed since `seen`."""
    for name, now in current.items():
        if seen.get(name) != now:
            echo(f"{datetime.now(timezone.utc):%H:%M:%S} {name}: {now}")


def finished(run_id: str, current: dict[str, str]) -> bool:
    """True once every part has finished; raises when one failed (a failed data Job at once: its training
    objects would never start)."""
    data_failed = [name for name, s in current.items() if s == "Failed" and name.startswith("Job/")]
    if data_failed:
        raise UserError(
            f"run {run_id} failed: {data_failed[0]} did not build the dataset, so training never "
            f"started and holds no GPU; see neosft logs {run_id} --variant data"
        )
    if all(s in FINAL for s in current.values()):
        failed = sorted(name for name, s in current.items() if s == "Failed")
        if failed:
            raise UserError(f"run {run_id} failed: {', '.join(failed)}; see neosft logs {run_id}")
        return True
    return False


def timed_out(run_id: str, current: dict[str, str], timeout_s: float) -> UserError:
    waiting = ", ".join(f"{name} ({s})" for name, s in current.items() if s not in FINAL)
    return UserError(
        f"run {run_id} did not finish within {format_duration(timeout_s)}: still waiting for "
        f"{waiting}; it goes on: neosft status {run_id}"
    )


def wait(cluster: Cluster, run_id: str, echo: Callable[[str], None], timeout_s: float, poll_s: float = 15) -> None:
    """Report each state change until every Job and training object of the run has finished.

    Raises when one failed, and when `timeout_s` passes first.
    """
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        current = {f"{o['kind']}/{o['metadata']['name']}": state(o) for o in watched(cluster.objects(run_id))}
        if not current:
            raise UserError(
                f"run {run_id} has no Jobs or training objects in namespace {cluster.namespace!r} (deleted?)"
            )
        report(current, seen, echo)
        if finished(run_id, current):
            return
        seen = current
        if time.monotonic() > deadline:
            raise timed_out(run_id, current, timeout_s)
        time.sleep(poll_s)

"""The names the controllers derive from a run's objects, checked when the run renders.

An object name the API server accepts can still make a controller fail later, with GPUs waiting:
JobSet refuses a JobSet whose longest pod name would exceed a DNS-1035 label (63 characters), and the
TrainJob then sits Pending with only an Event saying why. Each rule here names the controller code it follows.
"""

from __future__ import annotations

import re

from neosft.errors import UserError
from neosft.k8s.kinds import PYTORCHJOB, TRAINJOB

DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_LABEL = 63
RANDOM_SUFFIX = "-abcde"  # the 5 random characters the Job controller appends to a pod name


def derived(obj: dict) -> list[tuple[str, str]]:
    """(what, name) for each name a controller derives from `obj` that must be a DNS-1035 label."""
    name, spec = obj["metadata"]["name"], obj.get("spec") or {}
    if obj["kind"] == TRAINJOB.kind:
        # Trainer v2.3 names the JobSet after the TrainJob, its replicated job `node` runs numNodes pods; JobSet
        # v0.12 (pkg/webhooks/jobset_webhook.go) refuses it when GenPodName(js, rjob, maxJobIndex, maxPodIndex)
        # + "-abcde" is not a DNS-1035 label.
        nodes = spec["trainer"]["numNodes"]
        return [("JobSet pod name", f"{name}-node-0-{nodes - 1}{RANDOM_SUFFIX}"), ("JobSet Job name", f"{name}-node-0")]
    if obj["kind"] == PYTORCHJOB.kind:
        # training-operator v1.9: pods and headless Services <name>-<replica type>-<index>.
        workers = (spec["pytorchReplicaSpecs"].get("Worker") or {}).get("replicas", 0)
        return [("pod and Service name", f"{name}-master-0")] + (
            [("pod and Service name", f"{name}-worker-{workers - 1}")] if workers else []
        )
    return []


def check_derived_names(objects: list[dict], run_id: str) -> None:
    """One line naming the longest run id that fits, when a controller would refuse a name derived from `objects`."""
    for obj in objects:
        for what, name in derived(obj):
            if len(name) > MAX_LABEL or not DNS1035_LABEL.match(name):
                fits = len(run_id) - (len(name) - MAX_LABEL)
                raise UserError(
                    f"run id {run_id!r} is too long for {obj['kind']}/{obj['metadata']['name']}: its {what} "
                    f"{name!r} has {len(name)} characters, more than the {MAX_LABEL} its controller accepts; "
                    f"use a run id of at most {fits} characters"
                )

"""Runs: what `neosft submit` renders for one, and what `status`, `logs` and `--wait` report about it."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timezone

from neosft.errors import UserError
from neosft.k8s.cluster import (COMPONENT_LABEL, MANAGED_BY, OUTPUT_ANNOTATION, QUEUE_LABEL, RUN_LABEL, VARIANT_LABEL,
                                 Cluster)
from neosft.k8s.kinds import BACKENDS, BY_KIND, PYTORCHJOB, TRAINING_KINDS, none_installed
from neosft.k8s.render import is_test, merge, render, to_yaml, with_defaults, without_hook
from neosft.k8s.validate import validate
from neosft.progress import format_duration

RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$")
FINAL = ("Succeeded", "Failed")
WATCHED = ("Job", *TRAINING_KINDS)  # what status, run listings and --wait follow


def new_run_id() -> str:
    """A sortable, unique run id such as 20261126-120501-k3x9."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise UserError(f"run id {run_id!r}: use 1-30 lower-case letters, digits and '-', starting and ending "
                        "with a letter or digit")
    return run_id


def manifests(values: dict, run_id: str, namespace: str) -> list[dict]:
    """The validated objects `neosft submit` creates for a run (the chart's test hook is left to `helm test`).

    They are labelled managed-by neosft, not Helm: no Helm release holds them, `neosft delete` removes
    them. The chart's install hooks become plain objects (`neosft.k8s.cluster.KINDS` orders creation).
    """
    objects = render({**values, "runId": run_id}, run_id, namespace)
    validate(objects)
    _check_world_size(values)
    _check_trainer_settings(objects)
    return [_managed_by_neosft(without_hook(obj)) for obj in objects if not is_test(obj)]


def _check_trainer_settings(objects: list[dict]) -> None:
    """Each training object's `--set` settings (train.set and train.variantSet, as rendered) checked now, exactly as
    `neosft train` checks them, not in the pods after the data build, with GPUs allocated."""
    from neosft.train.args import checked_overrides

    for obj in objects:
        if obj["kind"] not in TRAINING_KINDS:
            continue
        args = train_command(obj)
        variant = next(a.split("=", 1)[1] for a in args if a.startswith("--variant="))
        pairs = [value for flag, value in itertools.pairwise(args) if flag == "--set"]
        if not pairs:
            continue
        try:
            checked_overrides(variant, pairs)
        except UserError as e:
            raise UserError(f"train.set / train.variantSet.{variant}: {e}") from None


def _check_world_size(values: dict) -> None:
    """The seed's total batch must divide over the run's GPUs, unless the values set the accumulation themselves."""
    from neosft.variants import TOTAL_TRAIN_BATCH, gradient_accumulation

    train = with_defaults(values)["train"]
    if train["enabled"] and "gradient_accumulation_steps" not in train["set"]:
        gpus = train["nodes"] * train["gpusPerNode"]
        try:
            gradient_accumulation(gpus)
        except UserError:
            raise UserError(f"{gpus} GPUs (train.nodes x train.gpusPerNode) do not divide the total train batch "
                            f"{TOTAL_TRAIN_BATCH}: pick a count that does, or set train.set.gradient_accumulation_steps "
                            "(run.json records it)") from None


def with_backend(values: dict, requested: str | None, cluster: Cluster | None, echo: Callable[[str], None]) -> dict:
    """`values` with train.backend set: `--backend`, else the values' own, else `auto`.

    auto asks the cluster which CRDs it serves (TrainJob first) and says what it chose; with no
    cluster (a dry run) it renders PyTorchJobs. A chosen backend the cluster does not serve is an error.
    """
    train = values.get("train") or {}
    if train.get("enabled") is False:
        return values  # a data-only run has no training object
    name = requested or train.get("backend") or "auto"
    if cluster is None:
        return merge(values, {"train": {"backend": PYTORCHJOB.name if name == "auto" else name}})
    if name == "auto":
        served = cluster.served()
        if not served:
            raise UserError(none_installed())
        name = served[0].name
        echo(f"backend: {served[0].kind} (the cluster serves {' and '.join(b.kind for b in served)}; "
             "--backend picks another)")
    else:
        cluster.require(BACKENDS[name])
    return merge(values, {"train": {"backend": name}})


def _managed_by_neosft(node):
    if isinstance(node, dict):
        return {k: ("neosft" if k == MANAGED_BY else _managed_by_neosft(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_managed_by_neosft(v) for v in node]
    return node


def outputs(objects: list[dict]) -> list[tuple[str, str]]:
    """(what, URI) of each object that writes to storage: 'data' or a variant."""
    return [(variant_of(obj), obj["metadata"]["annotations"][OUTPUT_ANNOTATION])
            for obj in objects if OUTPUT_ANNOTATION in (obj["metadata"].get("annotations") or {})]


def keep_manifests(objects: list[dict], echo: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """The objects as submitted, in the run folder beside the variants' outputs: a run folder says what ran.

    Needs the store's credentials here (AWS_ACCESS_KEY_ID): without them it keeps nothing, and a store that
    refuses is a warning; the run is submitted either way.
    """
    import os

    from neosft.storage import location

    folders = {uri.rsplit("/", 1)[0] for what, uri in outputs(objects) if what != "data"}
    if len(folders) != 1 or not os.environ.get("AWS_ACCESS_KEY_ID"):
        return
    target = f"{folders.pop()}/manifests.yaml"
    try:
        location(target).write_bytes(to_yaml(objects).encode())
        echo(f"  {'manifests':<13} -> {target}")
    except UserError as e:
        warn(f"warning: the manifests were not kept in the run folder: {e}")


def training_data(objects: list[dict]) -> tuple[str, list[str]] | None:
    """(dataset URI, variants) that the run's training objects train on; None for a data-only run."""
    jobs = [o for o in objects if o["kind"] in TRAINING_KINDS]
    if not jobs:
        return None
    data = next(arg.split("=", 1)[1] for arg in train_command(jobs[0]) if arg.startswith("--data="))
    return data, [variant_of(job) for job in jobs]


def train_command(obj: dict) -> list[str]:
    """What a training object's rank-0 container runs after its launcher: `neosft train` and its arguments."""
    if obj["kind"] == "TrainJob":
        return obj["spec"]["trainer"]["args"]
    [container] = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    return container["command"]


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
    backend = BY_KIND.get(obj.get("kind"))
    if (backend and backend.suspended(obj)) or "Suspended" in true:
        return "Suspended"
    if obj.get("kind") == "Job":
        return "Running" if status.get("active") else "Pending"
    if obj.get("kind") == "TrainJob":  # no Running condition: its JobSet's Jobs say
        busy = sum(j.get("active", 0) + j.get("ready", 0) for j in status.get("jobsStatus") or [])
        return "Running" if busy else "Pending"
    return true[-1] if true else "Pending"


def held_reason(objects: dict[str, list[dict]], obj: dict) -> str:
    """Why a suspended training object waits: its data Job's state, or its Kueue queue once released."""
    queue = (obj["metadata"].get("labels") or {}).get(QUEUE_LABEL)
    data = [state(job) for job in objects["Job"] if variant_of(job) == "data"]
    if queue and (not data or data[0] == "Succeeded"):
        return f"queued in Kueue queue {queue}"
    if not data:
        return "waiting to be released"
    return {"Failed": "data Job failed: no GPU held", "Succeeded": "dataset published, releasing"}.get(
        data[0], "waiting for its dataset")


def status_rows(objects: dict[str, list[dict]], loss: Callable[[str], str]) -> list[list[str]]:
    """One row per Job and training object: kind, name, variant, state, pods, restarts, latest loss."""
    rows = []
    for kind in WATCHED:
        for obj in objects[kind]:
            pods = [p for p in objects["Pod"] if _owned(p, obj)]
            restarts = sum(c.get("restartCount", 0) for p in pods for c in _container_statuses(p))
            output = (obj["metadata"].get("annotations") or {}).get(OUTPUT_ANNOTATION)
            now = state(obj)
            if now == "Suspended" and kind != "Job":
                now = f"Suspended ({held_reason(objects, obj)})"
            rows.append([kind, obj["metadata"]["name"], variant_of(obj), now, _pod_summary(pods) or "-",
                         str(restarts), loss(output) if kind != "Job" and output else "-"])
    return rows


def run_rows(objects: dict[str, list[dict]]) -> list[list[str]]:
    """One row per run: run id, what it holds, states, creation time."""
    runs: dict[str, list[dict]] = {}
    for obj in watched(objects):
        runs.setdefault(obj["metadata"]["labels"][RUN_LABEL], []).append(obj)
    return [[run_id, ",".join(variant_of(o) for o in objs), _count(state(o) for o in objs),
             min(o["metadata"].get("creationTimestamp") or "-" for o in objs)]
            for run_id, objs in sorted(runs.items())]


def watched(objects: dict[str, list[dict]]) -> list[dict]:
    """The run's Jobs and training objects."""
    return [obj for kind in WATCHED for obj in objects[kind]]


def latest_loss(output_uri: str) -> str:
    """'1.2345 @ step 120/500' from <output>/loss.jsonl; '-' before the first logged step."""
    from neosft.runfolder import progress
    from neosft.storage import location

    done = progress(location(output_uri))
    return "-" if done is None or done.loss is None else f"{done.loss:.4f} @ step {done.step}/{done.total_steps}"


def wait(cluster: Cluster, run_id: str, echo: Callable[[str], None], timeout_s: float, poll_s: float = 15) -> None:
    """Report each state change until every Job and training object of the run has finished.

    Raises when one failed (a failed data Job at once: its training objects would never start), and
    when `timeout_s` passes first.
    """
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        objects = cluster.objects(run_id)
        current = {f"{o['kind']}/{o['metadata']['name']}": state(o) for o in watched(objects)}
        if not current:
            raise UserError(f"run {run_id} has no Jobs or training objects in namespace {cluster.namespace!r} "
                            "(deleted?)")
        for name, now in current.items():
            if seen.get(name) != now:
                echo(f"{datetime.now(timezone.utc):%H:%M:%S} {name}: {now}")
        seen = current
        data_failed = [name for name, s in current.items() if s == "Failed" and name.startswith("Job/")]
        if data_failed:
            raise UserError(f"run {run_id} failed: {data_failed[0]} did not build the dataset, so training never "
                            f"started and holds no GPU; see neosft logs {run_id} --variant data")
        if all(s in FINAL for s in current.values()):
            failed = sorted(name for name, s in current.items() if s == "Failed")
            if failed:
                raise UserError(f"run {run_id} failed: {', '.join(failed)}; see neosft logs {run_id}")
            return
        if time.monotonic() > deadline:
            waiting = ", ".join(f"{name} ({s})" for name, s in current.items() if s not in FINAL)
            raise UserError(f"run {run_id} did not finish within {format_duration(timeout_s)}: still waiting for "
                            f"{waiting}; it goes on: neosft status {run_id}")
        time.sleep(poll_s)


def select_pods(objects: dict[str, list[dict]], variant: str | None) -> list[dict]:
    """The run's pods for `variant` ('data' for the data Job; all without it), rank 0 first, newest first."""
    pods = [p for p in objects["Pod"] if variant is None or variant_of(p) == variant]
    pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    pods.sort(key=lambda p: not _rank_zero(p))
    return pods


def _rank_zero(pod: dict) -> bool:
    """A PyTorchJob's master, or the first node of a TrainJob's JobSet (completion index 0)."""
    labels = pod["metadata"].get("labels") or {}
    return labels.get("training.kubeflow.org/replica-type") == "master" or \
        labels.get("batch.kubernetes.io/job-completion-index") == "0"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows])


def variant_of(obj: dict) -> str:
    labels = obj["metadata"].get("labels") or {}
    return labels.get(VARIANT_LABEL) or labels.get(COMPONENT_LABEL, "?")


def _owned(pod: dict, obj: dict) -> bool:
    return variant_of(pod) == variant_of(obj)


def _container_statuses(pod: dict) -> list[dict]:
    status = pod.get("status") or {}
    return (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])


def _pod_summary(pods: list[dict]) -> str:
    """e.g. '2 Running' or '1 Pending (CreateContainerConfigError)'."""
    phases = []
    for pod in pods:
        reasons = {c["state"]["waiting"].get("reason") for c in _container_statuses(pod)
                   if (c.get("state") or {}).get("waiting")} - {None, "PodInitializing"}
        phase = (pod.get("status") or {}).get("phase", "Unknown")
        phases.append(f"{phase} ({', '.join(sorted(reasons))})" if reasons else phase)
    return _count(phases)


def _count(items) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return ", ".join(f"{n} {item}" for item, n in counts.items())

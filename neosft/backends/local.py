"""The local backend: a run's rendered pods as processes on this machine, in the order a cluster runs them.

It renders the same chart a cluster gets (with the local store written into its values), keeps the
manifests, and runs what they say: the data Job's containers in order (its `release` step is this
backend's own: training follows), then each training object's rank-0 container, a PyTorchJob's master
or a TrainJob's `node` as its TrainingRuntime makes it (`neosft.backends.pods`). A chart regression
therefore shows up here as it would on a cluster.

The waiting process is the run's controller: `wait` starts each pod after the one before it
succeeded. Each run keeps under `.neosft/runs/<run-id>/` what `status`, `logs` and `delete` read
later, from any process: what rendering decided (`run.json`), the manifests, and each part's state;
the logs are `.neosft/logs/<run-id>-<part>.log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from neosft.backends import pods
from neosft.backends.base import Echo, ExecutionBackend
from neosft.backends.state import report, timed_out, variant_of
from neosft.backends.types import Part, RenderedRun, RunStatus, RunSummary, Store
from neosft.backends.view import count
from neosft.errors import UserError
from neosft.k8s.kinds import TRAINER_KINDS, TRAINING_KINDS, TRAINJOB, TrainerKind, pod_spec
from neosft.k8s.render import merge, with_defaults
from neosft.local_s3 import LocalS3
from neosft.runfolder import LOCAL_BUCKET, progress
from neosft.storage import EMBEDDED_STORE, Location

WORK = Path(".neosft")
PROGRESS_EVERY_S = 10.0
SECRET = "neosft-s3"  # the chart's default s3.secretName, answered here with the store's keys


class Local(ExecutionBackend):
    """Runs on this machine, their store a folder served by a local S3 server or an s3:// prefix.

    `on_dataset` is called with the dataset's location once the data Job published it (e.g. to make
    the model the training pods load).
    """

    namespace = "local"

    def __init__(
        self, store: str | None = None, work: Path = WORK, on_dataset: Callable[[Location], None] | None = None
    ):
        self.store_arg, self.work, self.on_dataset = store, work, on_dataset
        self._resources = contextlib.ExitStack()
        self._served: tuple[dict, tuple[str, str], str | None] | None = None
        self._runs: dict[str, RenderedRun] = {}

    # --- rendering: the store goes into the values ---------------------------------------------

    def _serve(self) -> tuple[dict, tuple[str, str], str | None]:
        """The store's chart values (s3.*), its keys and its local folder; a local S3 server over a folder store."""
        if self._served is None:
            if self.store_arg and self.store_arg.startswith("s3://"):
                bucket, _, prefix = self.store_arg[5:].rstrip("/").partition("/")
                endpoint, folder = os.environ.get("NEOSFT_S3_ENDPOINT", ""), None
                keys = (os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
            else:
                root = Path(self.store_arg or EMBEDDED_STORE)
                (root / LOCAL_BUCKET).mkdir(parents=True, exist_ok=True)
                server = self._resources.enter_context(LocalS3(root))
                bucket, prefix, endpoint, folder = LOCAL_BUCKET, "", server.endpoint, str(root)
                keys = (server.access_key, server.secret_key)
            s3 = {"bucket": bucket, "prefix": prefix, "endpoint": endpoint, "secretName": SECRET}
            self._served = (s3, keys, folder)
        return self._served

    def render(self, values: dict, run_id: str, requested: str | None, echo: Echo) -> RenderedRun:
        return super().render(merge(values, {"s3": self._serve()[0]}), run_id, requested, echo)

    def store(self, values: dict) -> Store:
        return Store.from_values(values, self._serve()[2])

    def trainer_kind(self, requested: str, echo: Echo) -> TrainerKind:
        if requested != "auto":
            return TRAINER_KINDS[requested]
        echo("trainer: TrainJob (the local backend runs both kinds; --backend pytorchjob picks the other)")
        return TRAINJOB

    def close(self) -> None:
        self._resources.close()

    # --- submit and wait: this process runs the pods --------------------------------------------

    def submit(self, run: RenderedRun, echo: Echo, warn: Echo) -> list[str]:
        folder = self._folder(run.run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "manifests.yaml").write_text(run.yaml(), encoding="utf-8")
        run.store.location(f"{run.folder}/manifests.yaml").write_bytes(run.yaml().encode())
        record = {
            "store": asdict(run.store),
            "trainer_kind": run.trainer_kind and run.trainer_kind.name,
            "variants": list(run.variants),
            "data_uri": run.data_uri,
            "builds_data": run.builds_data,
        }
        (folder / "run.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
        self._write_states(run.run_id, {_name(o): {"state": "Pending", "variant": variant_of(o)} for o in _pods(run)})
        self._runs[run.run_id] = run
        return [_name(o) for o in _pods(run)]

    def wait(self, run_id: str, echo: Echo, timeout_s: float) -> None:
        run = self._runs.get(run_id)
        if run is None:
            raise UserError(f"run {run_id} is not running in this process: `neosft run --run-id {run_id}` resumes it")
        deadline = time.monotonic() + timeout_s
        _, keys, _ = self._serve()
        s3 = with_defaults({"s3": self._serve()[0]})["s3"]
        secrets = {
            (s3["secretName"], s3["accessKeyIdKey"]): keys[0],
            (s3["secretName"], s3["secretAccessKeyKey"]): keys[1],
        }
        runtimes = [o for o in run.objects if o["kind"] == "TrainingRuntime"]
        env = pods.base_environment()
        for obj in _pods(run):
            variant = variant_of(obj)
            work = self.work / "work" / run_id / variant
            spec = pod_spec(obj, runtimes[0] if runtimes else None)
            if obj["kind"] == "Job":
                containers = [  # its `release` container is this backend's own: training follows
                    p for p in pods.processes(spec, secrets, pods.volume_folders(spec, work), {}) if p.name != "release"
                ]
            else:
                assert run.trainer_kind is not None
                procs = int(obj["spec"]["trainer"].get("numProcPerNode", 1)) if obj["kind"] == TRAINJOB.kind else 1
                containers = pods.processes(
                    spec, secrets, pods.volume_folders(spec, work), pods.torch_injected(run.trainer_kind, procs)
                )
                env = {
                    "OMP_NUM_THREADS": "1",
                    "TORCH_EXTENSIONS_DIR": str((self.work / "torch-extensions").resolve()),
                    **pods.base_environment(),
                }
            for process in containers:
                self._run_container(run_id, obj, process, env, echo, deadline, timeout_s)
            self._set_state(run_id, _name(obj), "Succeeded", echo)
            if obj["kind"] == "Job" and self.on_dataset is not None:
                self.on_dataset(run.store.location(run.data_uri))

    def _run_container(
        self,
        run_id: str,
        obj: dict,
        process: pods.Process,
        env: dict[str, str],
        echo: Echo,
        deadline: float,
        timeout_s: float,
    ) -> None:
        """One container to its end, its progress echoed every few seconds; a failure is one `UserError`."""
        name, log = _name(obj), self._log(run_id, variant_of(obj))
        child = pods.start_logged(process, log, env)
        self._set_state(run_id, name, "Running", echo, pid=child.pid)
        started = time.monotonic()
        while True:
            try:
                child.wait(PROGRESS_EVERY_S)
                break
            except subprocess.TimeoutExpired:
                echo(f"    {variant_of(obj)}: {_doing(log)}, {time.monotonic() - started:.0f} s")
                if time.monotonic() > deadline:
                    raise timed_out(run_id, {name: "Running"}, timeout_s) from None
        if child.returncode:
            self._set_state(run_id, name, "Failed", echo)
            lines = log.read_text(errors="replace").strip().splitlines()
            errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
            if errors and obj["kind"] == "Job":
                raise UserError(errors[-1])
            last = (errors or lines[-1:] or ["(no output)"])[-1]
            raise UserError(f"{name} failed: container {process.name}: {last} (full log: {log})")

    def release(self, kind: str, names: list[str], wait_s: float) -> list[str]:
        """Nothing is held here: `wait` starts each training pod once the data Job has succeeded."""
        return []

    # --- reading a run back, from any process ----------------------------------------------------

    def holds(self, run_id: str) -> bool:
        return (self._folder(run_id) / "run.json").exists()

    def status(self, run_id: str) -> RunStatus:
        record = self._record(run_id)
        store = Store(**record["store"])
        outputs = {name: f"{store.root}/runs/{run_id}/{name}" for name in record["variants"]}
        parts, problems = [], []
        for name, entry in self._states(run_id).items():
            kind, object_name = name.split("/", 1)
            variant, now = entry["variant"], _current(entry)
            done = None
            if variant in outputs:
                try:
                    done = progress(store.location(outputs[variant]))
                except UserError as e:
                    problems.append(str(e))
            parts.append(
                Part(
                    kind,
                    object_name,
                    variant,
                    now,
                    f"1 process (pid {entry['pid']})" if now == "Running" else "-",
                    0,
                    outputs.get(variant, record["data_uri"]),
                    done,
                )
            )
        return RunStatus(run_id, parts, problems)

    def runs(self) -> list[RunSummary]:
        found = []
        for folder in sorted((self.work / "runs").glob("*/run.json")):
            run_id = folder.parent.name
            states = self._states(run_id)
            holds = [entry["variant"] for entry in states.values()]
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(folder.stat().st_mtime))
            found.append(RunSummary(run_id, holds, count(_current(e) for e in states.values()), created))
        return found

    def logs(self, run_id: str, variant: str | None, follow: bool) -> list[tuple[str, Iterator[str]]]:
        self._record(run_id)
        names = {entry["variant"]: name for name, entry in self._states(run_id).items()}
        chosen = [v for v in names if (variant is None or v == variant) and self._log(run_id, v).exists()]
        if not chosen:
            raise UserError(f"run {run_id} has no {variant + ' ' if variant else ''}logs here yet")
        if follow:
            if len(chosen) > 1:
                raise UserError("--follow streams one process: pick it with --variant " + "|".join(chosen))
            return [(str(self._log(run_id, chosen[0])), self._follow(run_id, names[chosen[0]], chosen[0]))]
        return [
            (str(self._log(run_id, v)), iter(self._log(run_id, v).read_text(errors="replace").splitlines()))
            for v in chosen
        ]

    def _follow(self, run_id: str, name: str, variant: str) -> Iterator[str]:
        """The log's lines as they are written, until its part has finished."""
        with open(self._log(run_id, variant), errors="replace") as f:
            while True:
                line = f.readline()
                if line:
                    yield line.rstrip("\n")
                elif _current(self._states(run_id)[name]) not in ("Running", "Pending"):
                    yield from (rest.rstrip("\n") for rest in f)
                    return
                else:
                    time.sleep(0.5)

    def delete(self, run_id: str) -> list[str]:
        self._record(run_id)
        states = self._states(run_id)
        for entry in states.values():
            if _current(entry) == "Running":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(entry["pid"], signal.SIGTERM)
        for log in (self.work / "logs").glob(f"{run_id}-*.log"):
            log.unlink()
        for folder in (
            self.work / "work" / run_id,
            self.work / "models" / f"tiny-qwen2-{run_id}",
            self._folder(run_id),
        ):
            shutil.rmtree(folder, ignore_errors=True)
        return list(states)

    # --- the run's folder -------------------------------------------------------------------------

    def _folder(self, run_id: str) -> Path:
        return self.work / "runs" / run_id

    def _log(self, run_id: str, variant: str) -> Path:
        return self.work / "logs" / f"{run_id}-{variant}.log"

    def _record(self, run_id: str) -> dict:
        if not self.holds(run_id):
            raise UserError(f"no local run {run_id} in {self.work}")
        return json.loads((self._folder(run_id) / "run.json").read_text(encoding="utf-8"))

    def _states(self, run_id: str) -> dict[str, dict]:
        return json.loads((self._folder(run_id) / "state.json").read_text(encoding="utf-8"))

    def _write_states(self, run_id: str, states: dict[str, dict]) -> None:
        path = self._folder(run_id) / "state.json"
        path.with_suffix(".tmp").write_text(json.dumps(states, indent=2), encoding="utf-8")
        path.with_suffix(".tmp").replace(path)  # a reader sees the old states or the new, whole

    def _set_state(self, run_id: str, name: str, state: str, echo: Echo, pid: int | None = None) -> None:
        states = self._states(run_id)
        before = {n: _current(e) for n, e in states.items()}
        states[name] = {"state": state, "variant": states[name]["variant"], **({"pid": pid} if pid else {})}
        self._write_states(run_id, states)
        report({n: _current(e) for n, e in states.items()}, before, echo)


def _pods(run: RenderedRun) -> list[dict]:
    """The objects whose pods run, in the order a cluster starts them: the data Job, then each training object."""
    return [o for o in run.objects if o["kind"] == "Job"] + [o for o in run.objects if o["kind"] in TRAINING_KINDS]


def _name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _current(entry: dict) -> str:
    """A part's recorded state; a Running part whose process is gone (its waiter stopped) is Stopped."""
    if entry["state"] != "Running":
        return entry["state"]
    try:
        os.kill(entry["pid"], 0)
    except ProcessLookupError:
        return "Stopped"
    except PermissionError:
        pass
    return "Running"


def _doing(log: Path) -> str:
    """What a container is doing, from its log: the training step, else its last line."""
    text = log.read_text(errors="replace")
    steps = text.count("'loss':")
    if steps:
        return f"step {steps}"
    lines = [line for line in text.strip().splitlines() if not line.startswith("+ ")]
    return f"starting ({lines[-1][:100]})" if lines else "starting"

"""A rendered pod as local processes: what a kubelet and the training operator would run, on this machine.

Each container becomes its command line with `$(VAR)` references and `secretKeyRef`s resolved (the
local store's credentials answer them), each volume mount mapped to a local folder, and the
environment the operator injects (the rendezvous of one node) added.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neosft.errors import UserError
from neosft.k8s.kinds import TRAINJOB, TrainerKind
from neosft.ports import free_port

VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # Kubernetes' dependent environment variable syntax
ValueFrom = Callable[[str, dict], str]  # (container name, an env entry's `valueFrom`) -> its value
LAUNCHERS = {"neosft": [sys.executable, "-m", "neosft"], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}


@dataclass(frozen=True)
class Process:
    """One container to run: its name, its command line and its whole environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


def processes(spec: dict, value_from: ValueFrom, folders: dict[str, Path], injected: dict[str, str]) -> list[Process]:
    """The pod's containers in the order the kubelet starts them (init containers first).

    `value_from` answers the `valueFrom` env entries (`from_secrets` for the local backend, the API for
    the dev cluster's node); `folders` maps each volume name to a local folder; `injected` is what the
    operator adds to the environment (MASTER_ADDR, PET_NODE_RANK, ...).
    """
    out = []
    for container in spec.get("initContainers", []) + spec["containers"]:
        mounts = {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in folders}
        env = dict(injected)
        for entry in container.get("env", []):
            if "valueFrom" in entry:
                env[entry["name"]] = value_from(container["name"], entry["valueFrom"])
            else:
                env[entry["name"]] = _local_path(_expand(entry["value"], env), mounts)
        # the image's entrypoint is `neosft`: a container without a command runs it with its args
        line = (container.get("command") or ["neosft"]) + container.get("args", [])
        argv = [_local_path(_expand(arg, env), mounts) for arg in line]
        out.append(Process(container["name"], LAUNCHERS.get(argv[0], argv[:1]) + argv[1:], env))
    return out


def from_secrets(secrets: dict[tuple[str, str], str]) -> ValueFrom:
    """`valueFrom` answered by (Secret name, key) pairs only: the local backend's store credentials."""

    def value(container: str, ref: dict) -> str:
        if "secretKeyRef" not in ref:
            raise UserError(f"container {container}: no local value for {', '.join(ref)}")
        secret = ref["secretKeyRef"]
        if (secret["name"], secret["key"]) not in secrets:
            raise UserError(f"container {container}: no local value for Secret {secret['name']} key {secret['key']}")
        return secrets[(secret["name"], secret["key"])]

    return value


def start_logged(process: Process, log: Path, base_env: dict[str, str]) -> subprocess.Popen:
    """Start `process` with `base_env` under its own environment, its command line and output appended to `log`, as
    the leader of a process group of its own (what the local backend's `stop` and the dev cluster's node signal)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            out.write(("+ " + shlex.join(process.argv) + "\n").encode())  # what ran, first, as `set -x` shows it
            out.flush()
        except OSError as e:  # a full disk: a failed write alone does not name its file
            raise OSError(e.errno, e.strerror, str(log)) from None
        return subprocess.Popen(
            process.argv,
            env={**base_env, **process.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: what `stop` ends, its workers included
        )


def started_at(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22); None when it is gone.

    A pid with its start time names one process: the kernel reuses pids, never the pair. A zombie counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces and brackets
    return None if fields[0] in "ZX" else int(fields[19])


def stop(pid: int, started: int | None, grace_s: float = 10.0) -> None:
    """End the process group that process `pid` (started at `started`) leads, SIGKILL after `grace_s`; a pid that
    now names another process is left alone."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        if started is None or started_at(pid) != started:
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while started_at(pid) == started and time.monotonic() < deadline:
            time.sleep(0.05)


def torch_injected(trainer: TrainerKind, procs_per_node: int) -> dict[str, str]:
    """What the operator injects into a single-node job's rank-0 pod: the training operator's MASTER_* for a
    PyTorchJob, Trainer's torch plugin's PET_* for a TrainJob."""
    port = str(free_port())
    if trainer is TRAINJOB:
        return {
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": port,
            "PET_NODE_RANK": "0",
            "PET_NNODES": "1",
            "PET_NPROC_PER_NODE": str(procs_per_node),
        }
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "PET_NODE_RANK": "0", "PET_NNODES": "1"}


def volume_folders(spec: dict, root: Path) -> dict[str, Path]:
    """A local folder for each persistent or scratch volume of the pod (`/dev/shm` stays the system's)."""
    folders = {}
    for volume in spec.get("volumes", []):
        if (volume.get("emptyDir") or {}).get("medium") == "Memory":
            continue
        folders[volume["name"]] = root / volume["name"]
        folders[volume["name"]].mkdir(parents=True, exist_ok=True)
    return folders


def _expand(text: str, env: dict[str, str]) -> str:
    """`$(NAME)` replaced by NAME's value, as the kubelet does; unknown references stay as written."""
    return VAR.sub(lambda m: env.get(m[1], m[0]), text)


def _local_path(text: str, mounts: dict[str, Path]) -> str:
    """A value naming a path under a mount, moved under the mount's local folder."""
    for mount, folder in mounts.items():
        if text == mount or text.startswith(mount.rstrip("/") + "/"):
            return str(folder) + text[len(mount.rstrip("/")) :]
    return text


def base_environment() -> dict[str, str]:
    """The parts of this process's environment a local pod inherits: no credentials, only the machine's."""
    keep = (
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "OMP_NUM_THREADS",
        "TORCH_EXTENSIONS_DIR",
        "HF_HUB_OFFLINE",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
        "PYTHONPATH",
        "VIRTUAL_ENV",
    )
    return {k: v for k, v in os.environ.items() if k in keep}

"""A rendered pod as local processes: what a kubelet and the training operator would run, on this machine.

Each container becomes its command line with `$(VAR)` references and `secretKeyRef`s resolved (the
local store's credentials answer them), each volume mount mapped to a local folder, and the
environment the operator injects (the rendezvous of one node) added.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from neosft.errors import UserError
from neosft.k8s.kinds import TRAINJOB, TrainerKind
from neosft.ports import free_port

VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # Kubernetes' dependent environment variable syntax
LAUNCHERS = {"neosft": [sys.executable, "-m", "neosft"], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}


@dataclass(frozen=True)
class Process:
    """One container to run: its name, its command line and its whole environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


def processes(
    spec: dict, secrets: dict[tuple[str, str], str], folders: dict[str, Path], injected: dict[str, str]
) -> list[Process]:
    """The pod's containers in the order the kubelet starts them (init containers first).

    `secrets` answers secretKeyRefs by (Secret name, key); `folders` maps each volume name to a local
    folder; `injected` is what the operator adds to the environment (MASTER_ADDR, PET_NODE_RANK, ...).
    """
    out = []
    for container in spec.get("initContainers", []) + spec["containers"]:
        mounts = {m["mountPath"]: folders[m["name"]] for m in container.get("volumeMounts", []) if m["name"] in folders}
        env = dict(injected)
        for entry in container.get("env", []):
            if "valueFrom" in entry:
                ref = entry["valueFrom"]["secretKeyRef"]
                if (ref["name"], ref["key"]) not in secrets:
                    raise UserError(
                        f"container {container['name']}: no local value for Secret {ref['name']} key {ref['key']}"
                    )
                env[entry["name"]] = secrets[(ref["name"], ref["key"])]
            else:
                env[entry["name"]] = _local_path(_expand(entry["value"], env), mounts)
        # the image's entrypoint is `neosft`: a container without a command runs it with its args
        line = (container.get("command") or ["neosft"]) + container.get("args", [])
        argv = [_local_path(_expand(arg, env), mounts) for arg in line]
        out.append(Process(container["name"], LAUNCHERS.get(argv[0], argv[:1]) + argv[1:], env))
    return out


def start_logged(process: Process, log: Path, base_env: dict[str, str]) -> subprocess.Popen:
    """Start `process` with `base_env` under its own environment, its command line and output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(("+ " + shlex.join(process.argv) + "\n").encode())  # what ran, first, as `set -x` shows it
        out.flush()
        return subprocess.Popen(
            process.argv,
            env={**base_env, **process.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


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

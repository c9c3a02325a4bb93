"""Build the dev cluster's real parts from our wrapper Go modules into a cache folder outside the clone.

The cache key is a hash of every wrapper's go.sum and `go version`: a hit builds nothing. Each binary gets the
version ldflags its own release build sets, so it reports its real version (Kueue refuses a `v0.0.0` server).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path(__file__).with_name("modules")

KUBE_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"


class BuildError(Exception):
    """A fault of the build, said in one line (no Go, a module the proxy refuses, a failed build)."""


@dataclass(frozen=True)
class Binary:
    name: str
    module: str  # the wrapper folder under devcluster/modules
    package: str
    version: str
    ldflags: tuple[str, ...] = ()


def _kube_ldflags() -> tuple[str, ...]:
    major, minor = KUBE_VERSION[1:].split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={KUBE_VERSION}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}"]
        flags += [f"-X {pkg}.gitTreeState=clean"]
    return tuple(flags)


def _kube(name: str) -> Binary:
    return Binary(name, "controlplane", f"k8s.io/kubernetes/cmd/{name}", KUBE_VERSION, _kube_ldflags())


# The control plane first: the API server, the Job controller and the scheduler are not optional.
BINARIES: tuple[Binary, ...] = (
    Binary("etcd", "controlplane", "go.etcd.io/etcd/server/v3", ETCD_VERSION),
    _kube("kube-apiserver"),
    _kube("kube-controller-manager"),
    _kube("kube-scheduler"),
    _kube("kubectl"),
    Binary(
        "jobset",
        "jobset",
        "sigs.k8s.io/jobset",
        "v0.12.0",
        ("-X sigs.k8s.io/jobset/pkg/version.GitVersion=v0.12.0",),
    ),
    Binary(
        "kueue",
        "kueue",
        "sigs.k8s.io/kueue/cmd/kueue",
        "v0.19.2",
        ("-X sigs.k8s.io/kueue/pkg/version.GitVersion=v0.19.2",),
    ),
    Binary("trainer", "trainer", "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager", "v2.3.0"),
    Binary(
        "training-operator",
        "training-operator",
        "github.com/kubeflow/training-operator/cmd/training-operator.v1",
        "v1.9.3",
    ),
)

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def go() -> str:
    found = shutil.which("go")
    if not found:
        raise BuildError("no Go on PATH: the dev cluster is built from Go modules (Go 1.26 needed)")
    return found


def cache_dir() -> Path:
    """~/.cache/neosft/devcluster/<hash of the go.sum files and `go version`>/bin."""
    digest = hashlib.sha256()
    for gosum in sorted(MODULES_DIR.glob("*/go.sum")):
        digest.update(gosum.parent.name.encode() + b"\0" + gosum.read_bytes())
    digest.update(subprocess.run([go(), "version"], capture_output=True, text=True, check=True).stdout.encode())
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "neosft" / "devcluster" / digest.hexdigest()[:16] / "bin"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def build(names: tuple[str, ...] | None = None, log=print) -> Path:
    """Build the binaries not yet in the cache, one at a time under `nice`; returns the cache's bin folder."""
    bin_dir = cache_dir()
    wanted = [b for b in BINARIES if names is None or b.name in names]
    todo = [b for b in wanted if not (bin_dir / b.name).exists()]
    if not todo:
        return bin_dir
    bin_dir.mkdir(parents=True, exist_ok=True)
    downloaded: set[str] = set()
    for binary in todo:
        workdir = MODULES_DIR / binary.module
        if binary.module not in downloaded:
            log(f"devcluster: downloading the modules of {binary.module}")
            done = subprocess.run([go(), "mod", "download"], cwd=workdir, capture_output=True, text=True)
            if done.returncode:
                raise BuildError(f"the Go module proxy refused a module of {binary.module}: {_last_line(done.stderr)}")
            downloaded.add(binary.module)
        log(f"devcluster: building {binary.name} {binary.version}")
        partial = bin_dir / f".{binary.name}.partial"
        ldflags = " ".join(("-s", "-w", *binary.ldflags))
        argv = ["nice", go(), "build", "-trimpath", "-ldflags", ldflags, "-o", str(partial), binary.package]
        done = subprocess.run(argv, cwd=workdir, capture_output=True, text=True)
        if done.returncode:
            raise BuildError(f"building {binary.name} failed: {_last_line(done.stderr)}")
        partial.rename(bin_dir / binary.name)
    return bin_dir


def main(argv: list[str] | None = None) -> int:
    names = tuple(argv if argv is not None else sys.argv[1:]) or None
    try:
        print(build(names, log=lambda line: print(line, file=sys.stderr)))
    except BuildError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A real control plane for the `cluster` tier: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler from NEOSFT_KUBE_BIN, plus the process node (`devcluster.node`), all on 127.0.0.1.

Started by hand until `scripts/devcluster up` starts the same parts; everything lives in one folder and
stops with the context.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN_ENV = "NEOSFT_KUBE_BIN"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
TOKEN = "neosft-cluster-tier-admin"
READY_S = 120


def binaries() -> Path | None:
    """The folder holding the control plane's binaries, or None when it is not there."""
    folder = Path(os.environ.get(BIN_ENV, ""))
    return folder if os.environ.get(BIN_ENV) and all((folder / b).exists() for b in BINARIES) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, what: str, child: subprocess.Popen, log: Path) -> None:
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited with {child.returncode}: {log.read_text()[-2000:]}")
        try:
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, context=context, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} not ready after {READY_S} s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def control_plane(folder: Path, nodes: int = 1) -> Iterator[Path]:
    """The running cluster; yields its admin kubeconfig."""
    bin_dir = binaries()
    assert bin_dir is not None
    children: list[subprocess.Popen] = []

    def start(name: str, argv: list[str]) -> tuple[subprocess.Popen, Path]:
        log = folder / f"{name}.log"
        child = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        children.append(child)
        return child, log

    try:
        subprocess.run(["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (folder / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        etcd_port, api_port = free_port(), free_port()
        etcd, log = start(
            "etcd",
            [
                str(bin_dir / "etcd"),
                f"--data-dir={folder / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{free_port()}",
            ],
        )
        _wait(f"http://127.0.0.1:{etcd_port}/health", "etcd", etcd, log)
        api, log = start(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={folder / 'certs'}",
                f"--token-auth-file={folder / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={folder / 'sa.pub'}",
                f"--service-account-signing-key-file={folder / 'sa.key'}",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--kubelet-preferred-address-types=InternalIP",
            ],
        )
        _wait(f"https://127.0.0.1:{api_port}/readyz", "kube-apiserver", api, log)
        kubeconfig = folder / "kubeconfig"
        kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: dev
  cluster: {{server: "https://127.0.0.1:{api_port}", insecure-skip-tls-verify: true}}
users:
- name: admin
  user: {{token: {TOKEN}}}
contexts:
- name: dev
  context: {{cluster: dev, user: admin}}
current-context: dev
"""
        )
        start(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={folder / 'sa.key'}",
                f"--root-ca-file={folder / 'certs' / 'apiserver.crt'}",
                "--use-service-account-credentials",
            ],
        )
        start(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
            ],
        )
        for n in range(nodes):
            node, log = start(
                f"node-{n}",
                [
                    sys.executable,
                    "-m",
                    "devcluster.node",
                    f"--kubeconfig={kubeconfig}",
                    f"--name=node-{n}",
                    f"--dir={folder / f'node-{n}'}",
                    f"--port={free_port()}",
                    f"--ip-base=127.0.{n + 1}",
                ],
            )
            _wait(f"https://127.0.0.1:{api_port}/api/v1/nodes/node-{n}", f"node-{n}", node, log)
        yield kubeconfig
    finally:
        for child in reversed(children):
            child.terminate()
        for child in reversed(children):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()

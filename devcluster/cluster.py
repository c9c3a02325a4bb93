"""`scripts/devcluster up|down|status --dir DIR`: a real Kubernetes control plane on 127.0.0.1, pods as processes.

`up` builds (cached, devcluster.build), then starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
a local S3 server (rclone) and our process node, each as a detached process logging to DIR/logs. It records each
one's pid and start time in DIR/state.json, so `down` stops only what `up` started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devcluster import build, controllers
from neosft.backends import pods

READY_TIMEOUT_S = 120.0
_SMALL = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "6Gi"}}


class ClusterError(Exception):
    """A fault of `up`/`down`/`status`, said in one line."""


@dataclass
class Component:
    name: str
    argv: list[str]
    port: int
    health: str  # an http(s) URL answering 200 once ready, or "tcp"
    version: str
    env: dict[str, str] = field(default_factory=dict)
    pid: int = 0
    start_time: int = 0  # /proc/PID/stat field 22: tells a reused pid apart


@dataclass(frozen=True)
class Ports:
    """Every port `up` binds on 127.0.0.1, fixed offsets from one base."""

    base: int

    def __getattr__(self, name: str) -> int:
        offsets = {"etcd": 0, "etcd_peer": 1, "apiserver": 2, "kcm": 3, "scheduler": 4, "s3": 5, "node": 6}
        offsets |= {"jobset_webhook": 10, "jobset_health": 11}
        if name not in offsets:
            raise AttributeError(name)
        return self.base + offsets[name]

    def all(self) -> list[int]:
        return [self.base + i for i in (*range(7), 10, 11)]


def _alive(comp: Component) -> bool:
    return comp.pid > 0 and pods.started_at(comp.pid) == comp.start_time


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _healthy(comp: Component) -> bool:
    if comp.health == "tcp":
        try:
            socket.create_connection(("127.0.0.1", comp.port), timeout=1).close()
            return True
        except OSError:
            return False
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(comp.health, timeout=2, context=context) as answer:
            return answer.status == 200
    except OSError:
        return False


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if done.returncode:
        raise ClusterError(f"openssl {args[0]} failed: {done.stderr.strip().splitlines()[-1:]}")


def _make_pki(pki: Path) -> None:
    """One CA of ours; the API server's serving cert (also valid for webhooks on localhost); the SA signing key."""
    pki.mkdir(parents=True, exist_ok=True)
    ca = ("-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365", "-subj", "/CN=devcluster-ca", *ca)
    sans = "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
        "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"),
    )  # fmt: skip
    (pki / "ext.cnf").write_text(sans + "\n")
    _openssl(
        "x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-CAcreateserial", "-days", "365", "-extfile", str(pki / "ext.cnf"), "-out", str(pki / "apiserver.crt"),
    )  # fmt: skip
    _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
    _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def _write_kubeconfig(path: Path, port: int, ca: Path, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "devcluster", "cluster": {"server": f"https://127.0.0.1:{port}", "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin", "namespace": "default"}}
        ],
        "current-context": "devcluster",
    }
    path.write_text(json.dumps(config, indent=1) + "\n")
    path.chmod(0o600)


def _components(d: Path, bins: Path, ports: Ports) -> list[Component]:
    pki, kubeconfig = d / "pki", str(d / "kubeconfig")
    etcd_url = f"http://127.0.0.1:{ports.etcd}"
    peer_url = f"http://127.0.0.1:{ports.etcd_peer}"
    kube = build.KUBE_VERSION
    s3_keys = json.loads((d / "s3.json").read_text())
    return [
        Component(
            "etcd",
            [str(bins / "etcd"), "--name", "devcluster", "--data-dir", str(d / "etcd"),
             "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"devcluster={peer_url}", "--listen-metrics-urls", ""],
            ports.etcd, f"{etcd_url}/health", build.ETCD_VERSION,
        ),
        Component(
            "kube-apiserver",
            [str(bins / "kube-apiserver"), "--etcd-servers", etcd_url,
             "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(ports.apiserver),
             "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
             "--client-ca-file", str(pki / "ca.crt"), "--token-auth-file", str(d / "tokens.csv"),
             "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "PodSecurity",
             "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
             "--service-account-key-file", str(pki / "sa.pub"),
             "--service-account-signing-key-file", str(pki / "sa.key"),
             "--service-cluster-ip-range", "10.96.0.0/16", "--kubelet-preferred-address-types", "InternalIP",
             "--cert-dir", str(d / "apiserver-certs")],
            ports.apiserver, f"https://127.0.0.1:{ports.apiserver}/readyz", kube,
        ),
        Component(
            "kube-controller-manager",
            [str(bins / "kube-controller-manager"), "--kubeconfig", kubeconfig,
             "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
             "--bind-address", "127.0.0.1", "--secure-port", str(ports.kcm), "--leader-elect=false",
             "--controllers", "*", "--use-service-account-credentials",
             "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
             "--cert-dir", str(d / "kcm-certs")],
            ports.kcm, f"https://127.0.0.1:{ports.kcm}/healthz", kube,
        ),
        Component(
            "kube-scheduler",
            [str(bins / "kube-scheduler"), "--kubeconfig", kubeconfig,
             "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
             "--bind-address", "127.0.0.1", "--secure-port", str(ports.scheduler), "--leader-elect=false",
             "--cert-dir", str(d / "scheduler-certs")],
            ports.scheduler, f"https://127.0.0.1:{ports.scheduler}/healthz", kube,
        ),
        Component(
            "s3",
            [_rclone(), "serve", "s3", str(d / "s3"), "--addr", f"127.0.0.1:{ports.s3}", "--log-level", "ERROR"],
            ports.s3, "tcp", "rclone",
            env={"RCLONE_AUTH_KEY": f'"{s3_keys["access_key"]},{s3_keys["secret_key"]}"'},
        ),
        Component(
            "node-0",
            [sys.executable, "-m", "devcluster.node", "--kubeconfig", kubeconfig, "--name", "node-0",
             "--dir", str(d / "node-0"), "--port", str(ports.node)],
            ports.node, "tcp", "devcluster.node",
            env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        ),
        Component(
            "jobset",
            controllers.private_certs(d / "jobset" / "certs", [str(bins / "jobset"), "--config", str(d / "jobset" / "config.yaml")]),
            ports.jobset_webhook, f"http://127.0.0.1:{ports.jobset_health}/readyz", "v0.12.0",
            env={"KUBECONFIG": kubeconfig},
        ),
    ]  # fmt: skip


def _rclone() -> str:
    from neosft import local_s3

    return local_s3._rclone()


def _load(d: Path) -> list[Component]:
    state = d / "state.json"
    if not state.exists():
        return []
    return [Component(**c) for c in json.loads(state.read_text())]


def _save(d: Path, comps: list[Component]) -> None:
    tmp = d / "state.json.tmp"
    tmp.write_text(json.dumps([asdict(c) for c in comps], indent=1) + "\n")
    tmp.replace(d / "state.json")


def _start(d: Path, comp: Component) -> None:
    logs = d / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{comp.name}.log", "ab") as log:
        proc = subprocess.Popen(
            comp.argv,
            env={**os.environ, **comp.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    comp.pid = proc.pid
    comp.start_time = pods.started_at(proc.pid) or 0


def _wait_ready(d: Path, comp: Component) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(comp):
            tail = (d / "logs" / f"{comp.name}.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise ClusterError(f"{comp.name} exited before it was ready: {tail[0] if tail else 'no output'}")
        if _healthy(comp):
            return
        time.sleep(0.5)
    raise ClusterError(f"{comp.name} did not become ready in {READY_TIMEOUT_S:.0f}s (see {d}/logs/{comp.name}.log)")


def _write_outputs(d: Path, bins: Path, ports: Ports) -> None:
    (d / "bin").mkdir(exist_ok=True)
    kubectl = d / "bin" / "kubectl"
    kubectl.unlink(missing_ok=True)
    kubectl.symlink_to(bins / "kubectl")
    keys = json.loads((d / "s3.json").read_text())
    (d / "env").write_text(
        f"export NEOSFT_S3_ENDPOINT=http://127.0.0.1:{ports.s3}\n"
        f"export AWS_ACCESS_KEY_ID={keys['access_key']}\n"
        f"export AWS_SECRET_ACCESS_KEY={keys['secret_key']}\n"
        f"export KUBECONFIG={d / 'kubeconfig'}\n"
    )
    (d / "env").chmod(0o600)
    model = d / "tiny-qwen2"
    if not (model / "config.json").exists():
        from neosft.sample import SAMPLE_CORPUS
        from neosft.train.tiny import make_tiny_qwen2

        make_tiny_qwen2(model, SAMPLE_CORPUS.read_text(encoding="utf-8").splitlines())
    (d / "s3" / "neosft").mkdir(parents=True, exist_ok=True)  # the bucket
    values = {
        "s3": {"bucket": "neosft", "endpoint": f"http://127.0.0.1:{ports.s3}"},
        "data": {"source": "sample", "resources": _SMALL},
        "train": {"model": str(model), "maxSteps": 2, "gpusPerNode": 1, "deepspeed": "none", "resources": _SMALL},
    }
    (d / "values.yaml").write_text(json.dumps(values, indent=1) + "\n")  # JSON is YAML


def up(d: Path, port_base: int, log=print) -> None:
    comps = _load(d)
    if comps and all(_alive(c) for c in comps):
        log(f"devcluster: {d} is already up; nothing changed")
        return
    if comps and any(_alive(c) for c in comps):
        raise ClusterError(f"{d} is partly up (see `status`); run `down` first")
    ports = Ports(port_base)
    for port in ports.all():
        if _port_busy(port):
            raise ClusterError(f"port {port} on 127.0.0.1 is busy (choose another --port-base)")
    started = time.monotonic()
    bins = build.build((*build.CONTROL_PLANE, "jobset"), log=lambda line: log(line))
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "pki" / "sa.key").exists():
        _make_pki(d / "pki")
    if not (d / "tokens.csv").exists():
        token = secrets.token_hex(16)
        (d / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
        (d / "tokens.csv").chmod(0o600)
        _write_kubeconfig(d / "kubeconfig", ports.apiserver, d / "pki" / "ca.crt", token)
    if not (d / "s3.json").exists():
        (d / "s3.json").write_text(json.dumps({"access_key": "neosft", "secret_key": secrets.token_hex(16)}))
        (d / "s3.json").chmod(0o600)
    comps = _components(d, bins, ports)
    running: list[Component] = []
    try:
        for comp in comps:
            if comp.name == "jobset":
                _prepare_jobset(d, bins, ports)
            _start(d, comp)
            running.append(comp)
            _save(d, running)
            if comp.name == "jobset":
                _mount_jobset_certs(d, bins)
            _wait_ready(d, comp)
            log(f"devcluster: {comp.name} ready")
    except ClusterError:
        _stop(running)
        (d / "state.json").unlink(missing_ok=True)
        raise
    _write_outputs(d, bins, ports)
    log(f"devcluster: up in {time.monotonic() - started:.1f}s")


def _prepare_jobset(d: Path, bins: Path, ports: Ports) -> None:
    try:
        root = controllers.module_dir("sigs.k8s.io/jobset", "v0.12.0")
        controllers.apply(bins / "kubectl", d / "kubeconfig", controllers.jobset_objects(root, ports.jobset_webhook))
    except controllers.ControllerError as exc:
        raise ClusterError(str(exc)) from None
    (d / "jobset").mkdir(exist_ok=True)
    config = controllers.jobset_config(ports.jobset_health, ports.jobset_webhook)
    (d / "jobset" / "config.yaml").write_text(json.dumps(config, indent=1) + "\n")


def _mount_jobset_certs(d: Path, bins: Path) -> None:
    folder = d / "jobset" / "certs" / "serving-certs"
    try:
        controllers.mount_secret(
            bins / "kubectl", d / "kubeconfig", "jobset-system", "jobset-webhook-server-cert", folder, READY_TIMEOUT_S
        )
    except controllers.ControllerError as exc:
        raise ClusterError(str(exc)) from None


def _stop(comps: list[Component]) -> None:
    for comp in reversed(comps):
        if comp.pid > 0:
            pods.stop(comp.pid, comp.start_time, grace_s=15)


def down(d: Path, log=print) -> None:
    comps = _load(d)
    if not comps:
        log(f"devcluster: nothing of ours runs in {d}")
        return
    _stop(comps)
    (d / "state.json").unlink()
    log(f"devcluster: stopped {', '.join(c.name for c in comps)}")


def status(d: Path, log=print) -> bool:
    comps = _load(d)
    if not comps:
        raise ClusterError(f"{d} is not up (no state.json)")
    ok = True
    for comp in comps:
        state = "dead" if not _alive(comp) else ("healthy" if _healthy(comp) else "unhealthy")
        ok = ok and state == "healthy"
        log(f"{comp.name:26} {comp.version:16} pid {comp.pid:<8} port {comp.port:<6} {state}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's folder (state, logs, kubeconfig)")
    parser.add_argument("--port-base", type=int, default=16400, help="first of the ports bound on 127.0.0.1")
    args = parser.parse_args(argv)
    if not 1024 <= args.port_base <= 65000:
        parser.error("--port-base must be between 1024 and 65000")
    d = args.dir.resolve()
    try:
        if args.command == "up":
            up(d, args.port_base, log=lambda line: print(line, file=sys.stderr))
            print(d / "kubeconfig")
        elif args.command == "down":
            down(d)
        elif not status(d):
            return 1
    except (ClusterError, build.BuildError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

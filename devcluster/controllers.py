"""The real controllers as host processes: CRDs and webhook configurations read from the Go module cache.

Each webhook Service becomes `type: ExternalName` to localhost and each webhook points at that controller's own
port; the API server then calls https://localhost:<port> with the TLS name <svc>.<ns>.svc (as kubernetes-sigs/kwok
does). Cert rotators that write to the hard-coded /tmp/k8s-webhook-server/serving-certs get a private /tmp in their
own mount namespace.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import yaml


class ControllerError(Exception):
    """A fault while preparing a controller, said in one line."""


def module_dir(module: str, version: str) -> Path:
    """The module's folder in the Go module cache (`go mod download -json M@V`)."""
    done = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], capture_output=True, text=True)
    info = json.loads(done.stdout or "{}")
    if done.returncode or "Error" in info:
        raise ControllerError(f"the Go module proxy refused {module}@{version}: {info.get('Error', done.stderr)}")
    return Path(info["Dir"])


def _json_patch(doc: dict, ops: list[dict]) -> None:
    """The `replace` and `add` operations of RFC 6902 that the upstream kustomize patches use."""
    for op in ops:
        *parents, last = [p for p in op["path"].split("/") if p]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] not in ("replace", "add"):
            raise ControllerError(f"unsupported patch op {op['op']}")
        if isinstance(target, list):
            target[int(last)] = op["value"]
        else:
            target[last] = op["value"]


def jobset_objects(root: Path, port: int) -> list[dict]:
    """JobSet v0.12's CRD, namespace, webhook Service (ExternalName) and webhook configurations, as kustomize builds
    them (config/default: namespace jobset-system, name prefix jobset-)."""
    ns, service = "jobset-system", "jobset-webhook-service"
    components = root / "config" / "components"
    objects: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    for crd in sorted((components / "crd" / "bases").glob("*.yaml")):
        objects += [d for d in yaml.safe_load_all(crd.read_text()) if d]
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service, "namespace": ns},
            "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": port}]},
        }
    )
    objects.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jobset-webhook-server-cert", "namespace": ns}}
    )
    patches = {
        "MutatingWebhookConfiguration": "mutating-patch.yaml",
        "ValidatingWebhookConfiguration": "validating-patch.yaml",
    }
    webhook = components / "webhook"
    for doc in yaml.safe_load_all((webhook / "manifests.yaml").read_text()):
        if not doc:
            continue
        _json_patch(doc, yaml.safe_load((webhook / "patches" / patches[doc["kind"]]).read_text()))
        doc["metadata"]["name"] = "jobset-" + doc["metadata"]["name"]
        for hook in doc["webhooks"]:
            hook["clientConfig"]["service"].update(name=service, namespace=ns, port=port)
        objects.append(doc)
    return objects


def jobset_config(health_port: int, webhook_port: int) -> dict:
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True},
        "webhook": {"port": webhook_port, "host": "127.0.0.1"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
    }


def apply(kubectl: Path, kubeconfig: Path, objects: list[dict]) -> None:
    """`kubectl apply --server-side` of the objects; one line on failure."""
    done = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "apply", "--server-side", "--force-conflicts", "-f", "-"],
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise ControllerError(f"kubectl apply failed: {done.stderr.strip().splitlines()[-1:]}")


CERT_DIR = "/tmp/k8s-webhook-server"  # the rotators' hard-coded folder (jobset@v0.12.0:pkg/util/cert/cert.go)


def private_certs(folder: Path, argv: list[str]) -> list[str]:
    """argv run in its own mount namespace with `folder` bound over the rotators' hard-coded cert folder."""
    folder.mkdir(parents=True, exist_ok=True)
    script = f'mkdir -p {CERT_DIR} && mount --bind "$0" {CERT_DIR} && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(folder), *argv]


def mount_secret(kubectl: Path, kubeconfig: Path, namespace: str, name: str, folder: Path, timeout: float) -> None:
    """Write the Secret's keys as files into `folder` once the rotator has filled it, as the kubelet's secret volume
    would (cert-controller waits for its certs to appear there: open-policy-agent/cert-controller rotator.go)."""
    argv = [str(kubectl), "--kubeconfig", str(kubeconfig), "-n", namespace, "get", "secret", name, "-o", "json"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(argv, capture_output=True, text=True)
        data = json.loads(done.stdout).get("data") or {} if done.returncode == 0 else {}
        if "tls.crt" in data:
            folder.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                (folder / key).write_bytes(base64.b64decode(value))
                (folder / key).chmod(0o600)
            return
        time.sleep(0.5)
    raise ControllerError(f"the Secret {namespace}/{name} got no certificate in {timeout:.0f}s")

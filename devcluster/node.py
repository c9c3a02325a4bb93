"""A process kubelet: a Node of the dev cluster whose pods run as processes on this machine.

It registers a Ready Node, renews its Lease, and runs each pod bound to it with the local backend's
runner (`neosft.backends.pods`): init containers in order, then the containers, each in a private
mount and UTS namespace (we are root) holding the pod's hostname and an /etc/hosts as the kubelet writes
it, plus the Services of its namespace. It reports pod status as the kubelet does, deletes as the kubelet
does (SIGTERM to the process group, the grace period, SIGKILL, final status, DELETE with grace 0), and
serves `/containerLogs` over HTTPS for the API server's `pods/log` proxy.

    python -m devcluster.node --kubeconfig KUBECONFIG --name NODE --dir DIR --port PORT
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.server
import json
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from neosft.backends import pods

RENEW_S = 10  # the kubelet's lease renewal interval (nodeLeaseDurationSeconds 40 / 4)
STATUS_S = 30
NOT_READY = "node.kubernetes.io/not-ready"
HOSTS_HEAD = "# Kubernetes-managed hosts file (a process node's).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
# the pod's hostname and /etc/hosts, set in its own mount and UTS namespace before its command runs
NAMESPACED = 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"'
FIELD = re.compile(r"metadata\.(annotations|labels)\['([^']+)'\]")


def stamp(micro: bool = False) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def raw(response) -> dict:
    return json.loads(response.data)


class Node:
    """One node: its registration, its pods and its log server."""

    def __init__(self, kubeconfig: str, name: str, folder: Path, port: int, ip_base: str):
        self.api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
        self.leases = client.CoordinationV1Api(self.api.api_client)
        self.name, self.folder, self.port, self.ip_base = name, folder, port, ip_base
        self.runs: dict[str, PodRun] = {}
        self.next_ip = 2
        self.lock = threading.Lock()

    # --- the Node object ---------------------------------------------------------------------------

    def status(self) -> dict:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8", "ephemeral-storage": "100Gi"}
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "process node is posting ready status",
            "lastHeartbeatTime": stamp(),
            "lastTransitionTime": stamp(),
        }
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "kubeletVersion": "v1.36.3",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "process://neosft",
                "kernelVersion": "",
                "osImage": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def register(self) -> None:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        try:
            self.api.create_node(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.name, "labels": labels}}
            )
        except ApiException as e:
            if e.status != 409:
                raise
        self.api.patch_node_status(self.name, {"status": self.status()})
        node = raw(self.api.read_node(self.name, _preload_content=False))
        taints = [t for t in node["spec"].get("taints", []) if t["key"] != NOT_READY]
        self.api.patch_node(self.name, {"spec": {"taints": taints or None}})
        uid = node["metadata"]["uid"]
        lease = {
            "metadata": {
                "name": self.name,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": uid}],
            },
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": stamp(micro=True)},
        }
        try:
            self.leases.create_namespaced_lease("kube-node-lease", lease)
        except ApiException as e:
            if e.status != 409:
                raise

    def heartbeat(self) -> None:
        """Renew the Lease every RENEW_S and post the Ready status every STATUS_S, as the kubelet does."""
        last_status = time.monotonic()
        while True:
            time.sleep(RENEW_S)
            try:
                self.leases.patch_namespaced_lease(
                    self.name, "kube-node-lease", {"spec": {"renewTime": stamp(micro=True)}}
                )
                if time.monotonic() - last_status > STATUS_S:
                    self.api.patch_node_status(self.name, {"status": self.status()})
                    last_status = time.monotonic()
            except Exception as e:  # the API server restarting is no reason to stop the node
                print(f"node {self.name}: heartbeat: {e}", file=sys.stderr, flush=True)

    # --- pods --------------------------------------------------------------------------------------

    def pod_ip(self) -> str:
        with self.lock:
            self.next_ip += 1
            return f"{self.ip_base}.{self.next_ip - 1}"

    def watch_pods(self) -> None:
        while True:
            try:
                for event in watch.Watch().stream(
                    self.api.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={self.name}",
                    timeout_seconds=300,
                ):
                    self.on_event(event["type"], event["raw_object"])
            except Exception as e:
                print(f"node {self.name}: watch: {e}", file=sys.stderr, flush=True)
                time.sleep(1)

    def on_event(self, kind: str, pod: dict) -> None:
        uid = pod["metadata"]["uid"]
        run = self.runs.get(uid)
        if run is None:
            if kind == "DELETED" or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                if kind != "DELETED" and pod["metadata"].get("deletionTimestamp"):
                    self.delete(pod)
                return
            run = self.runs[uid] = PodRun(self, pod, self.pod_ip())
            run.start()
        if kind == "DELETED":
            run.stop(0)
        elif pod["metadata"].get("deletionTimestamp"):
            run.stop(int(pod["metadata"].get("deletionGracePeriodSeconds") or 0))

    def delete(self, pod: dict) -> None:
        """The kubelet's last word: DELETE with grace 0, for this very pod (its uid)."""
        meta = pod["metadata"]
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"]))
        try:
            self.api.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def log_file(self, namespace: str, pod: str, container: str) -> tuple[Path | None, PodRun | None]:
        for run in list(self.runs.values())[::-1]:
            if (run.namespace, run.pod_name) == (namespace, pod):
                return run.root / "logs" / f"{container}.log", run
        return None, None

    def stop_all(self) -> None:
        for run in list(self.runs.values()):
            run.kill(signal.SIGKILL)


class PodRun(threading.Thread):
    """One pod, from bound to its end: its containers as processes, its status posted as it goes."""

    def __init__(self, node: Node, pod: dict, ip: str):
        super().__init__(daemon=True)
        self.node, self.pod, self.ip = node, pod, ip
        meta = pod["metadata"]
        self.namespace, self.pod_name = meta["namespace"], meta["name"]
        self.root = node.folder / "pods" / f"{self.namespace}_{self.pod_name}_{meta['uid']}"
        self.children: list[subprocess.Popen] = []
        self.stopping = threading.Event()
        self.grace = 30
        self.done = threading.Event()
        self.started_at = stamp()
        spec = pod["spec"]
        self.statuses = {
            c["name"]: {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"waiting": {"reason": "PodInitializing" if c in spec["containers"] else "Waiting"}},
            }
            for c in spec.get("initContainers", []) + spec["containers"]
        }
        self.phase = "Pending"
        self.initialized = not spec.get("initContainers")

    # --- status ------------------------------------------------------------------------------------

    def post(self) -> None:
        spec = self.pod["spec"]
        mains = [self.statuses[c["name"]] for c in spec["containers"]]
        ready = self.phase == "Running" and all("running" in s["state"] for s in mains)
        reason = {"reason": "PodCompleted"} if self.phase in ("Succeeded", "Failed") else {}

        def condition(kind: str, true: bool) -> dict:
            extra = reason if not true else {}
            return {"type": kind, "status": str(true), "lastTransitionTime": stamp(), **extra}

        status = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.started_at,
            "conditions": [
                condition("PodReadyToStartContainers", self.phase != "Pending" or self.children != []),
                condition("Initialized", self.initialized),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "containerStatuses": mains,
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [self.statuses[c["name"]] for c in spec["initContainers"]]
        try:
            self.node.api.patch_namespaced_pod_status(self.pod_name, self.namespace, {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise

    # --- the pod's environment ---------------------------------------------------------------------

    def value_from(self, container: str, ref: dict) -> str:
        """A `valueFrom`, read from the API: the downward API, a Secret's or a ConfigMap's key."""
        if "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            meta = self.pod["metadata"]
            if m := FIELD.fullmatch(path):
                return meta.get(m[1], {}).get(m[2], "")
            fields = {
                "metadata.name": meta["name"],
                "metadata.namespace": meta["namespace"],
                "metadata.uid": meta["uid"],
                "spec.nodeName": self.node.name,
                "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
                "status.hostIP": "127.0.0.1",
                "status.hostIPs": "127.0.0.1",
                "status.podIP": self.ip,
                "status.podIPs": self.ip,
            }
            return fields[path]
        if "secretKeyRef" in ref or "configMapKeyRef" in ref:
            secret = "secretKeyRef" in ref
            key_ref = ref["secretKeyRef" if secret else "configMapKeyRef"]
            read = self.node.api.read_namespaced_secret if secret else self.node.api.read_namespaced_config_map
            data = raw(read(key_ref["name"], self.namespace, _preload_content=False)).get("data", {})
            if key_ref["key"] not in data:
                raise KeyError(f"{key_ref['name']} has no key {key_ref['key']}")
            value = data[key_ref["key"]]
            return base64.b64decode(value).decode() if secret else value
        raise KeyError(f"container {container}: unsupported valueFrom {', '.join(ref)}")

    def fill_volumes(self, folders: dict[str, Path]) -> None:
        """ConfigMap and Secret volumes hold their keys as files, as the kubelet projects them; a projected volume (the
        service account's: a bound token, the cluster's CA, the namespace) its sources' files."""
        for volume in self.pod["spec"].get("volumes", []):
            if "projected" in volume and volume["name"] in folders:
                self.project(volume["projected"].get("sources", []), folders[volume["name"]])
            for kind, read in (
                ("configMap", self.node.api.read_namespaced_config_map),
                ("secret", self.node.api.read_namespaced_secret),
            ):
                if kind in volume and volume["name"] in folders:
                    name = volume[kind].get("name") or volume[kind].get("secretName")
                    data = raw(read(name, self.namespace, _preload_content=False)).get("data", {})
                    for key, value in data.items():
                        text = base64.b64decode(value) if kind == "secret" else value.encode()
                        (folders[volume["name"]] / key).write_bytes(text)

    def hosts(self) -> Path:
        """/etc/hosts as the kubelet writes it, plus each Service of the namespace and each named pod in it."""
        spec, meta = self.pod["spec"], self.pod["metadata"]
        hostname = spec.get("hostname") or meta["name"]
        lines = [HOSTS_HEAD]
        if spec.get("subdomain"):
            fqdn = f"{hostname}.{spec['subdomain']}.{self.namespace}.svc.cluster.local"
            lines.append(f"{self.ip}\t{fqdn}\t{hostname}.{spec['subdomain']}\t{hostname}\n")
        else:
            lines.append(f"{self.ip}\t{hostname}\n")
        for alias in spec.get("hostAliases", []):
            lines.append(f"{alias['ip']}\t{' '.join(alias['hostnames'])}\n")
        others = raw(self.node.api.list_namespaced_pod(self.namespace, _preload_content=False))["items"]
        for other in others:
            ip, o_spec = other.get("status", {}).get("podIP"), other["spec"]
            if ip and o_spec.get("subdomain") and other["metadata"]["uid"] != meta["uid"]:
                name = f"{o_spec.get('hostname') or other['metadata']['name']}.{o_spec['subdomain']}"
                lines.append(f"{ip}\t{name}.{self.namespace}.svc.cluster.local\t{name}\n")
        services = raw(self.node.api.list_namespaced_service(self.namespace, _preload_content=False))["items"]
        for service in services:
            selector = service["spec"].get("selector")
            if not selector:
                continue
            backing = [
                o["status"]["podIP"]
                for o in others
                if o.get("status", {}).get("podIP")
                and all(o["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            ]
            if backing:
                name = service["metadata"]["name"]
                lines.append(
                    f"{backing[0]}\t{name}.{self.namespace}.svc.cluster.local\t{name}.{self.namespace}\t{name}\n"
                )
        path = self.root / "hosts"
        path.write_text("".join(lines))
        return path

    # --- running -----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.run_pod()
        except Exception as e:
            print(f"node {self.node.name}: pod {self.namespace}/{self.pod_name}: {e}", file=sys.stderr, flush=True)
            self.phase = "Failed"
            self.post()
        finally:
            self.done.set()
            if self.pod_is_deleting():
                self.node.delete(self.pod)

    def pod_is_deleting(self) -> bool:
        return self.stopping.is_set()

    def project(self, sources: list[dict], folder: Path) -> None:
        for source in sources:
            if "serviceAccountToken" in source:
                account = self.pod["spec"].get("serviceAccountName") or "default"
                request = {
                    "spec": {
                        "audiences": [],
                        "expirationSeconds": source["serviceAccountToken"].get("expirationSeconds", 3607),
                        "boundObjectRef": {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "name": self.pod_name,
                            "uid": self.pod["metadata"]["uid"],
                        },
                    }
                }
                token = raw(
                    self.node.api.create_namespaced_service_account_token(
                        account, self.namespace, request, _preload_content=False
                    )
                )
                (folder / source["serviceAccountToken"]["path"]).write_text(token["status"]["token"])
            elif "configMap" in source:
                data = raw(
                    self.node.api.read_namespaced_config_map(
                        source["configMap"]["name"], self.namespace, _preload_content=False
                    )
                ).get("data", {})
                for item in source["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                    (folder / item["path"]).write_text(data[item["key"]])
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items", []):
                    (folder / item["path"]).write_text(self.value_from("", {"fieldRef": item["fieldRef"]}))

    def processes(self) -> list[pods.Process]:
        """The pod's containers by the one runner, retried while a Secret or ConfigMap they read is missing."""
        spec = self.pod["spec"]
        folders = pods.volume_folders(spec, self.root / "volumes")
        while not self.stopping.is_set():
            try:
                self.fill_volumes(folders)
                return pods.processes(spec, self.value_from, folders, {})
            except (ApiException, KeyError) as e:
                reason = str(e).splitlines()[0] if not isinstance(e, ApiException) else f"{e.status} {e.reason}"
                for status in self.statuses.values():
                    status["state"] = {"waiting": {"reason": "CreateContainerConfigError", "message": reason}}
                self.post()
                self.stopping.wait(2)
        return []

    def run_pod(self) -> None:
        spec = self.pod["spec"]
        self.root.mkdir(parents=True, exist_ok=True)
        self.post()
        procs = {p.name: p for p in self.processes()}
        policy = spec.get("restartPolicy", "Always")
        for container in spec.get("initContainers", []):
            while not self.stopping.is_set():
                [code] = self.run_containers([procs[container["name"]]])
                if code == 0 or policy == "Never" or self.stopping.is_set():
                    break
            if self.statuses[container["name"]]["state"].get("terminated", {}).get("exitCode") != 0:
                self.phase = "Failed"
                self.post()
                return
        self.initialized = True
        if self.stopping.is_set():
            return self.finish()
        self.phase = "Running"
        remaining = [procs[c["name"]] for c in spec["containers"]]
        while remaining and not self.stopping.is_set():
            codes = self.run_containers(remaining)
            again = policy == "Always" or policy == "OnFailure"
            remaining = [p for p, code in zip(remaining, codes) if again and (code != 0 or policy == "Always")]
        self.finish()

    def finish(self) -> None:
        codes = [
            self.statuses[c["name"]]["state"].get("terminated", {}).get("exitCode", 137)
            for c in self.pod["spec"]["containers"]
        ]
        for c in self.pod["spec"]["containers"]:
            state = self.statuses[c["name"]]["state"]
            if "terminated" not in state:
                self.statuses[c["name"]]["state"] = {
                    "terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "finishedAt": stamp()}
                }
        self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        self.post()

    def system_mounts(self, container: str) -> str:
        """Shell commands bind-mounting the container's volumes that clients read at fixed system paths (the service
        account's token under /var/run/secrets); the runner maps every other mount path to its folder."""
        spec = self.pod["spec"]
        mounts = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container)
        out = ""
        for mount in mounts.get("volumeMounts", []):
            if mount["mountPath"].startswith("/var/run/secrets/"):
                source, target = (
                    shlex.quote(str(self.root / "volumes" / mount["name"])),
                    shlex.quote(mount["mountPath"]),
                )
                out += f"mkdir -p {target} && mount --bind {source} {target} && "
        return out

    def run_containers(self, procs: list[pods.Process]) -> list[int]:
        """Start each process in its namespaces, post Running, wait for all; their exit codes."""
        hostname = self.pod["spec"].get("hostname") or self.pod_name
        server = urllib.parse.urlparse(self.node.api.api_client.configuration.host)
        env = {
            "OMP_NUM_THREADS": "1",
            **pods.base_environment(),
            "HOSTNAME": hostname,
            "KUBERNETES_SERVICE_HOST": server.hostname or "127.0.0.1",  # the API server, as the kubelet injects it
            "KUBERNETES_SERVICE_PORT": str(server.port or 443),
        }
        hosts = self.hosts()
        children = []
        for proc in procs:
            status = self.statuses[proc.name]
            if "terminated" in status["state"]:
                status["restartCount"] += 1
                status["lastState"] = status["state"]
            script = NAMESPACED.replace("shift &&", self.system_mounts(proc.name) + "shift &&")
            wrapped = pods.Process(
                proc.name, ["unshare", "-mu", "sh", "-c", script, hostname, str(hosts), *proc.argv], proc.env
            )
            child = pods.start_logged(wrapped, self.root / "logs" / f"{proc.name}.log", env)
            started = stamp()
            status.update(started=True, ready=True, state={"running": {"startedAt": started}})
            children.append((proc, child, started))
        self.children = [child for _, child, _ in children]
        self.post()
        codes = []
        for proc, child, started in children:
            code = child.wait()
            code = 128 - code if code < 0 else code
            codes.append(code)
            reason = "Completed" if code == 0 else "Error"
            self.statuses[proc.name].update(
                started=False,
                ready=False,
                state={"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": stamp()}},
            )
        self.children = []
        self.post()
        return codes

    # --- deletion ----------------------------------------------------------------------------------

    def stop(self, grace: int) -> None:
        """The pod is being deleted: SIGTERM its process groups now, SIGKILL after the grace period."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.done.is_set():
            self.node.delete(self.pod)
            return
        self.kill(signal.SIGTERM)
        threading.Thread(target=self.kill_after, args=(grace,), daemon=True).start()

    def kill_after(self, grace: int) -> None:
        if not self.done.wait(grace):
            self.kill(signal.SIGKILL)

    def kill(self, sig: int) -> None:
        for child in list(self.children):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                pass


class LogHandler(http.server.BaseHTTPRequestHandler):
    """`/containerLogs/<ns>/<pod>/<container>`, with `follow` and `tailLines`, as the kubelet serves it."""

    node: Node

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        parts = url.path.strip("/").split("/")
        query = urllib.parse.parse_qs(url.query)
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self.send_error(404)
        path, run = self.node.log_file(*parts[1:])
        if path is None or run is None or not path.exists():
            return self.send_error(404, f"no log for {'/'.join(parts[1:])}")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        follow = query.get("follow", ["false"])[0] == "true"
        with open(path, "rb") as log:
            if "tailLines" in query:
                lines = log.readlines()[-int(query["tailLines"][0]) :] if int(query["tailLines"][0]) else []
                self.wfile.write(b"".join(lines))
            while True:
                chunk = log.read(65536)
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    continue
                if not follow or "terminated" in run.statuses.get(parts[3], {}).get("state", {"terminated": 0}):
                    return
                time.sleep(0.2)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve_logs(node: Node) -> None:
    cert, key = node.folder / "kubelet.crt", node.folder / "kubelet.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                f"/CN={node.name}",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    handler = type("Handler", (LogHandler,), {"node": node})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", node.port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster.node", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--name", default="node-0")
    parser.add_argument("--dir", type=Path, required=True, help="pods' folders, logs and the log server's cert")
    parser.add_argument("--port", type=int, default=10250, help="the log server's port (the kubelet endpoint)")
    parser.add_argument("--ip-base", default="127.0.1", help="pod IPs are IP_BASE.N")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    node = Node(args.kubeconfig, args.name, args.dir, args.port, args.ip_base)

    def stop(signum: int, frame: object) -> None:
        node.stop_all()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        serve_logs(node)
    except OSError as e:
        print(f"error: node {args.name}: log server on 127.0.0.1:{args.port}: {e.strerror}", file=sys.stderr)
        return 2
    node.register()
    threading.Thread(target=node.heartbeat, daemon=True).start()
    print(f"node {args.name} ready", flush=True)
    node.watch_pods()
    return 0


if __name__ == "__main__":
    sys.exit(main())

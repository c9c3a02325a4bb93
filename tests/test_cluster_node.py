"""The process node against a real API server, controller manager and scheduler (the `cluster` tier).

Each test drives the cluster through kubectl and waits on the API's own state, never on time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(shutil.which("go") is None, reason="no Go: the cluster tier builds the control plane"),
]
NS = "node-test"


@pytest.fixture(scope="module")
def cluster(devcluster):
    kubectl = Kubectl(devcluster / "kubeconfig", devcluster / "bin/kubectl")
    kubectl("create", "namespace", NS)
    kubectl("wait", "--for=create", "serviceaccount/default", "-n", NS, "--timeout=60s")
    yield kubectl, devcluster


class Kubectl:
    def __init__(self, kubeconfig: Path, binary: Path):
        self.kubeconfig, self.binary = kubeconfig, str(binary)

    def __call__(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args], input=input, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def apply(self, obj: dict) -> None:
        self("apply", "-f", "-", input=json.dumps(obj))

    def pod(self, name: str) -> dict:
        return json.loads(self("get", "pod", name, "-n", NS, "-o", "json"))

    def wait_phase(self, name: str, phase: str) -> dict:
        self("wait", f"--for=jsonpath={{.status.phase}}={phase}", f"pod/{name}", "-n", NS, "--timeout=120s")
        return self.pod(name)


def pod(name: str, script: str, restart: str = "Never", **extra) -> dict:
    container = {"name": "main", "image": "busybox", "command": ["sh", "-c", script], **extra.pop("container", {})}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, **extra.pop("metadata", {})},
        "spec": {"restartPolicy": restart, "containers": [container], "terminationGracePeriodSeconds": 30, **extra},
    }


def test_a_pod_runs_with_its_env_from_the_api_and_its_logs_come_through_the_api_server(cluster):
    kubectl, _ = cluster
    kubectl("create", "secret", "generic", "creds", "-n", NS, "--from-literal=key=s3cr3t")
    kubectl("create", "configmap", "conf", "-n", NS, "--from-literal=mode=fast")
    env = [
        {
            "name": "RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        },
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "mode"}}},
        {"name": "BOTH", "value": "$(POD)-$(MODE)"},
    ]
    kubectl.apply(
        pod(
            "envs",
            'echo "rank=$RANK secret=$SECRET both=$BOTH host=$(hostname)"; getent hosts w-0.grp',
            metadata={"annotations": {"batch.kubernetes.io/job-completion-index": "3"}},
            container={"env": env},
            hostname="w-0",
            subdomain="grp",
            initContainers=[{"name": "first", "image": "busybox", "command": ["sh", "-c", "echo init ran"]}],
        )
    )
    done = kubectl.wait_phase("envs", "Succeeded")
    [status] = done["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 0 and status["restartCount"] == 0
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert done["status"]["podIP"].startswith("127.0.1.") and done["status"]["startTime"]
    logs = kubectl("logs", "envs", "-n", NS)
    assert "rank=3 secret=s3cr3t both=envs-fast host=w-0" in logs
    assert f"{done['status']['podIP']}" in logs.split("getent")[-1]
    assert "init ran" in kubectl("logs", "envs", "-n", NS, "-c", "first")


def test_a_failed_container_restarts_in_place_under_on_failure_and_never_under_never(cluster):
    kubectl, _ = cluster
    script = 'if [ -e "$MARK" ]; then exit 0; fi; touch "$MARK"; exit 5'
    for name, restart in (("again", "OnFailure"), ("once", "Never")):
        kubectl.apply(
            pod(
                name,
                script,
                restart,
                container={
                    "env": [{"name": "MARK", "value": "/scratch/mark"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                },
                volumes=[{"name": "scratch", "emptyDir": {}}],
            )
        )
    again = kubectl.wait_phase("again", "Succeeded")["status"]["containerStatuses"][0]
    assert again["restartCount"] == 1 and again["lastState"]["terminated"]["exitCode"] == 5
    once = kubectl.wait_phase("once", "Failed")["status"]["containerStatuses"][0]
    assert once["restartCount"] == 0 and once["state"]["terminated"]["exitCode"] == 5


def test_logs_follow_until_the_container_ends(cluster):
    kubectl, folder = cluster
    kubectl.apply(
        pod(
            "follow",
            'echo one; while [ ! -e "$GO" ]; do sleep 0.1; done; echo two',
            container={
                "env": [{"name": "GO", "value": "/scratch/go"}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
            },
            volumes=[{"name": "scratch", "emptyDir": {}}],
        )
    )
    uid = kubectl.wait_phase("follow", "Running")["metadata"]["uid"]
    follower = subprocess.Popen(
        [kubectl.binary, f"--kubeconfig={kubectl.kubeconfig}", "logs", "-f", "follow", "-n", NS],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    assert "one" in follower.stdout.readline() + follower.stdout.readline()  # the runner's `+ argv` line, then one
    [scratch] = folder.glob(f"node-0/pods/{NS}_follow_{uid}/volumes/scratch")
    (scratch / "go").touch()
    assert follower.stdout.read().strip().endswith("two") and follower.wait() == 0


def test_delete_sigterms_the_process_posts_its_exit_and_removes_the_pod(cluster):
    kubectl, _ = cluster
    kubectl.apply(pod("stoppable", 'trap "echo got TERM; exit 3" TERM; echo up; while true; do sleep 0.1; done'))
    kubectl.wait_phase("stoppable", "Running")
    watcher = subprocess.Popen(
        [
            kubectl.binary,
            f"--kubeconfig={kubectl.kubeconfig}",
            "get",
            "pod",
            "stoppable",
            "-n",
            NS,
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    events: list[dict] = []
    watching = threading.Event()
    decoder = json.JSONDecoder()

    def read() -> None:
        assert watcher.stdout is not None
        text = ""
        for line in watcher.stdout:
            text += line
            try:
                event, _ = decoder.raw_decode(text.strip())
            except json.JSONDecodeError:
                continue
            events.append(event)
            watching.set()  # the first event is the pod as it is: the watch is open
            text = ""
            if event["type"] == "DELETED":
                return

    reader = threading.Thread(target=read)
    reader.start()
    assert watching.wait(60)
    kubectl("delete", "pod", "stoppable", "-n", NS, "--wait=true", "--timeout=60s")
    reader.join(60)
    watcher.terminate()
    assert events[-1]["type"] == "DELETED"
    finals = [e["object"]["status"].get("containerStatuses", [{}])[0].get("state", {}) for e in events]
    assert {"exitCode": 3}.items() <= next(s["terminated"] for s in finals if "terminated" in s).items()

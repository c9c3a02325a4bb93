"""neosft against a real Kubernetes (the `cluster` tier): the API server, controller manager and scheduler v1.36.3
built from their Go modules, and the process node, started by `scripts/devcluster up` as a user starts them.

The namespace is prepared as the README tells a user: `kubectl apply -k k8s` (Pod Security `restricted` enforced)
and the S3 Secret. Every wait is on the API's own state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_cluster_node import ROOT, Kubectl, pytestmark  # noqa: F401 - the tier's marks and its cluster

NS = "neosft"


@pytest.fixture(scope="module")
def user(devcluster):
    """(kubectl, the environment `DIR/env` gives a user's shell, the cluster's folder), the namespace prepared."""
    kubectl = Kubectl(devcluster / "kubeconfig", devcluster / "bin/kubectl")
    env = dict(os.environ)
    for line in (devcluster / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    kubectl("apply", "-k", str(ROOT / "k8s"))
    kubectl(
        "create", "secret", "generic", "neosft-s3", "-n", NS,
        f"--from-literal=AWS_ACCESS_KEY_ID={env['AWS_ACCESS_KEY_ID']}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={env['AWS_SECRET_ACCESS_KEY']}",
    )  # fmt: skip
    kubectl("wait", "--for=create", "serviceaccount/default", "-n", NS, "--timeout=60s")
    return kubectl, env, devcluster


def neosft(*args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neosft", *map(str, args)], capture_output=True, text=True, env=env)


def test_the_api_server_is_the_real_one_at_its_version(user):
    kubectl, _, _ = user
    assert json.loads(kubectl("get", "--raw", "/version"))["gitVersion"] == "v1.36.3"
    labels = json.loads(kubectl("get", "namespace", NS, "-o", "json"))["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_data_job_builds_the_dataset_under_pod_security_and_leaves_nothing_when_deleted(user):
    kubectl, env, folder = user
    values = folder / "values.yaml"
    result = neosft("submit", "--data-only", "--values", values, "-n", NS, "--run-id", "c1", "--wait", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "run c1 succeeded" in result.stdout + result.stderr
    manifest = json.loads((folder / "s3/neosft/neosft/data/c1/manifest.json").read_text())
    assert set(manifest["variants"]) == {"conversations", "multi", "single", "all_pair"}
    assert manifest["heldout"]["records"] > 0  # the chart's default, 1 % of the sample

    status = neosft("status", "c1", "-n", NS, env=env)
    assert status.returncode == 0 and "Succeeded" in status.stdout, status.stdout + status.stderr
    logs = neosft("logs", "c1", "-n", NS, env=env)  # through the API server, from the node's log server
    assert logs.returncode == 0 and "wrote s3://neosft/neosft/data/c1/manifest.json" in logs.stdout + logs.stderr, logs

    pods = json.loads(kubectl("get", "pods", "-n", NS, "-l", "neosft.io/run-id=c1", "-o", "json"))["items"]
    assert pods and all(p["spec"]["securityContext"].get("runAsNonRoot") for p in pods)
    deleted = neosft("delete", "c1", "-n", NS, env=env)
    assert deleted.returncode == 0, deleted.stderr
    kubectl("wait", "--for=delete", "pods", "-n", NS, "-l", "neosft.io/run-id=c1", "--timeout=120s")
    left = json.loads(kubectl("get", "jobs,pods,serviceaccounts", "-n", NS, "-l", "neosft.io/run-id=c1", "-o", "json"))
    assert left["items"] == []


def test_a_data_job_that_fails_is_reported_in_one_line(user):
    _, env, folder = user
    result = neosft(
        "submit", "--data-only", "--values", folder / "values.yaml", "-n", NS, "--run-id", "c2", "--wait",
        "--source", "/no/such/corpus.json", env=env,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert Path(folder / "s3/neosft/neosft/data/c2/manifest.json").exists() is False

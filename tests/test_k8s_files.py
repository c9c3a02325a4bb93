"""Cluster prerequisites (k8s/): parsed and validated with the real schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neosft.k8s.validate import validate

ROOT = Path(__file__).resolve().parent.parent


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_cluster_prerequisites_are_valid_kubernetes_objects():
    objects = [
        obj
        for path in sorted((ROOT / "k8s").glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for obj in load_all(path)
    ]
    validate(objects)
    assert {o["kind"] for o in objects} == {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "PersistentVolumeClaim",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    [reader] = [o for o in objects if o["kind"] == "ClusterRole"]
    [namespace] = [o for o in objects if o["kind"] == "Namespace"]
    assert reader["rules"][0]["resourceNames"] == [namespace["metadata"]["name"]]  # its own namespace, no other
    for folder in ("kueue", "training-operator"):  # the Roles that read the controllers' configuration
        validate(load_all(ROOT / "k8s" / folder / "rbac.yaml"))
    [secret] = [o for o in objects if o["kind"] == "Secret"]
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values())
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the chart's default keys


def test_kustomizations_list_existing_files_and_pin_both_operators():
    from neosft.k8s.kinds import PYTORCHJOB, TRAINJOB

    local = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert all((ROOT / "k8s" / r).exists() for r in local["resources"])
    [operator, _] = yaml.safe_load((ROOT / "k8s" / "training-operator" / "kustomization.yaml").read_text())["resources"]
    assert operator.startswith("github.com/kubeflow/training-operator.git/") and operator.endswith("?ref=v1.9.0")
    [trainer] = yaml.safe_load((ROOT / "k8s" / "trainer" / "kustomization.yaml").read_text())["resources"]
    assert trainer == "https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0"
    assert operator in PYTORCHJOB.install and trainer in TRAINJOB.install  # the errors name what k8s/ pins


def rules(role: dict) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("name", ["neosft-submitter", "neosft-helm"])
def test_submitter_and_helm_roles_allow_every_call_neosft_makes_on_both_backends(name):
    from neosft.k8s.render import is_helm_only, render

    [role] = [o for o in load_all(ROOT / "k8s" / "rbac.yaml") if o["kind"] == "Role" and o["metadata"]["name"] == name]
    allowed = rules(role)
    crud = ("create", "list", "delete")
    needed = (
        {("", "serviceaccounts", v) for v in crud}
        | {("batch", "jobs", v) for v in crud}
        | {("rbac.authorization.k8s.io", r, v) for r in ("roles", "rolebindings") for v in crud}
        | {("kubeflow.org", "pytorchjobs", v) for v in crud}
        | {("trainer.kubeflow.org", r, v) for r in ("trainjobs", "trainingruntimes") for v in crud}
        | {("", "pods", "list")}
        | (
            {
                ("", "pods/log", "get"),
                ("", "events", "list"),
                ("kueue.x-k8s.io", "localqueues", "get"),
                ("kueue.x-k8s.io", "workloads", "list"),
            }
            if name == "neosft-submitter"
            else set()
        )
    )
    for backend in ("pytorchjob", "trainjob"):
        for run_role in render({"train": {"backend": backend}}, "r1", "ml"):  # Helm creates the Helm-only ones too
            if run_role["kind"] == "Role" and (name == "neosft-helm" or not is_helm_only(run_role)):
                needed |= rules(run_role)  # no escalation: who creates a Role holds its rules
    assert needed <= allowed
    assert name == "neosft-helm" or not any(resource == "secrets" for _, resource, _ in allowed)

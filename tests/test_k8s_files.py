"""Cluster prerequisites (k8s/): parsed and validated with the real schemas."""

from __future__ import annotations

from pathlib import Path

import yaml

from neosft.k8s.validate import validate

ROOT = Path(__file__).resolve().parent.parent


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_cluster_prerequisites_are_valid_kubernetes_objects():
    objects = [obj for path in sorted((ROOT / "k8s").glob("*.yaml")) if path.name != "kustomization.yaml"
               for obj in load_all(path)]
    validate(objects)
    assert {o["kind"] for o in objects} == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Secret",
                                           "PersistentVolumeClaim"}
    [secret] = [o for o in objects if o["kind"] == "Secret"]
    assert all(v.startswith("REPLACE_WITH_") for v in secret["stringData"].values())
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}  # the chart's default keys


def test_kustomizations_list_existing_files_and_pin_the_operator():
    local = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert all((ROOT / "k8s" / r).exists() for r in local["resources"])
    [operator] = yaml.safe_load((ROOT / "k8s" / "training-operator" / "kustomization.yaml").read_text())["resources"]
    assert operator.startswith("github.com/kubeflow/training-operator.git/") and operator.endswith("?ref=v1.9.0")


def test_submitter_role_allows_every_call_neosft_makes():
    [role] = [o for o in load_all(ROOT / "k8s" / "rbac.yaml") if o["kind"] == "Role" and o["metadata"]["name"] == "neosft-submitter"]
    allowed = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    needed = {("", "serviceaccounts", v) for v in ("create", "list", "delete")} | \
        {("batch", "jobs", v) for v in ("create", "list", "delete")} | \
        {("kubeflow.org", "pytorchjobs", v) for v in ("create", "list", "delete")} | \
        {("", "pods", "list"), ("", "pods/log", "get")}
    assert needed <= allowed
    assert not any(resource == "secrets" for _, resource, _ in allowed)

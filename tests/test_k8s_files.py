"""Cluster prerequisites, images and CI workflows: parsed, validated and linted with the real tools."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from dockerfile_parse import DockerfileParser

from neosft.k8s.validate import validate

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "ci" / "workflows").glob("*.yml"))


def dockerfile(name: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "images" / f"Dockerfile.{name}").read_bytes()))


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


@pytest.mark.parametrize("name", ["data", "train"])
def test_images_run_neosft_as_non_root(name):
    parser = dockerfile(name)
    final = parser.structure[[i for i, s in enumerate(parser.structure) if s["instruction"] == "FROM"][-1]:]
    last = {s["instruction"]: s["value"] for s in final}
    assert last["USER"] == "1000:1000"
    assert json.loads(last["ENTRYPOINT"]) == ["neosft"]
    assert "useradd --uid 1000" in last["RUN"]


def test_data_image_is_slim_and_installs_only_what_the_builder_needs():
    parser = dockerfile("data")
    assert all(image.startswith("python:") and image.endswith("-slim") for image in parser.parent_images)
    text = " ".join(s["value"] for s in parser.structure if s["instruction"] == "RUN")
    assert "pip install --no-deps /src" in text
    for heavy in ("torch", "deepspeed", "transformers", "cuda"):
        assert heavy not in text.lower()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("click", "rich", "ijson", "orjson", "pyarrow", "boto3"):
        [pinned] = [d for d in dependencies if d.split(">")[0].split("=")[0] == package]
        assert f'"{pinned}"' in text  # same constraint as pyproject.toml


def test_train_image_has_cuda_torch_prebuilt_deepspeed_ops_and_flash_attention():
    parser = dockerfile("train")
    assert all(image.startswith("nvidia/cuda:") for image in parser.parent_images)
    text = parser.content
    assert "download.pytorch.org/whl/cu" in text
    assert "DS_BUILD_FUSED_ADAM=1" in text and "ds_report" in text
    assert 'pip install "flash-attn==' in text
    ci = (ROOT / ".ci" / "run").read_text()
    [torch_pin] = re.findall(r"^ARG TORCH_VERSION=(\S+)$", text, re.MULTILINE)
    assert f"torch=={torch_pin}" in ci  # the image trains with the torch CI tests


def test_dockerignore_keeps_the_context_small_but_complete():
    ignored = {line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    assert {".git", ".venv", "tests"} <= ignored
    assert not {"neosft", "charts", "pyproject.toml", "README.md"} & ignored

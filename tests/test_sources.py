"""SOURCEs beside local paths and s3://: a Hugging Face Hub dataset file (through HF_ENDPOINT, against a local
server speaking the Hub's file-resolve protocol), an https:// URL, and the word `sample`."""

import gzip
import hashlib

import pytest
from conftest import assert_user_error, neosft
from hub_server import Hub, Repo, serve

from neosft.artifacts import Manifest
from neosft.sample import SAMPLE_CORPUS

CORPUS = SAMPLE_CORPUS.read_bytes()


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    hub = Hub(
        {
            "m-a-p/neo_sft_phase2": Repo({"neo_sft_phase2.json": CORPUS, "c.jsonl.gz": gzip.compress(CORPUS)}),
            "org/gated": Repo({"c.json": CORPUS}, gated_for="hf_reader_token"),
        }
    )
    server = serve(hub)
    hub.url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))  # no stored token of this machine
    yield hub
    server.shutdown()


def test_a_hub_file_builds_like_the_local_file_and_the_manifest_pins_its_commit(hub, tmp_path):
    result = neosft(
        "data", "build", "hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json", "--out", tmp_path / "hub"
    )
    assert result.returncode == 0, result.stderr
    assert neosft("data", "build", "sample", "--out", tmp_path / "local").returncode == 0
    remote, local = Manifest.read(str(tmp_path / "hub")), Manifest.read(str(tmp_path / "local"))
    assert remote.source.revision == hub.repos["m-a-p/neo_sft_phase2"].commit
    assert remote.source.sha256 == hashlib.sha256(CORPUS).hexdigest() == local.source.sha256
    assert remote.variants == local.variants


def test_a_revision_and_a_gated_repo_with_its_token(hub, tmp_path):
    commit = hub.repos["m-a-p/neo_sft_phase2"].commit
    assert (
        neosft(
            "data", "build", f"hf://datasets/m-a-p/neo_sft_phase2@{commit}/c.jsonl.gz", "--out", tmp_path / "a"
        ).returncode
        == 0
    )
    assert Manifest.read(str(tmp_path / "a")).source.revision == commit
    result = neosft(
        "data", "build", "hf://datasets/org/gated/c.json", "--out", tmp_path / "b", env={"HF_TOKEN": "hf_reader_token"}
    )
    assert result.returncode == 0, result.stderr
    assert "hf_reader_token" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "source,needle",
    [
        ("hf://datasets/nobody/missing/c.json", "no dataset nobody/missing on the Hub at http://127.0.0.1"),
        ("hf://datasets/org/gated/c.json", "is gated: accept its terms on the Hub and set HF_TOKEN"),
        ("hf://datasets/m-a-p/neo_sft_phase2@v9/c.json", "has no revision 'v9'"),
        ("hf://datasets/m-a-p/neo_sft_phase2/other.json", "has no file 'other.json'"),
        ("hf://datasets/just-a-name", "reads hf://datasets/OWNER/NAME[@REVISION]/PATH"),
    ],
)
def test_hub_failures_are_one_line(hub, tmp_path, source, needle):
    assert_user_error(neosft("data", "build", source, "--out", tmp_path / "o"), needle)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_a_download_that_keeps_breaking_is_one_line_and_a_broken_one_resumes(hub, tmp_path):
    hub.break_after = 50_000  # every body is cut: each resume gets 50 KB more
    ok = neosft("data", "build", "hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json", "--out", tmp_path / "a")
    assert ok.returncode == 0, ok.stderr  # 210 KB: 4 resumes, within the 5 allowed
    assert Manifest.read(str(tmp_path / "a")).source.sha256 == hashlib.sha256(CORPUS).hexdigest()
    hub.break_after = 0  # nothing ever arrives: more breaks in a row than the reader tolerates
    assert_user_error(
        neosft("data", "build", "hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json", "--out", tmp_path / "b"),
        "broke off 6 times",
    )


def test_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert_user_error(
        neosft("data", "build", "hf://datasets/a/b/c.json", "--out", tmp_path / "o"), "cannot reach the Hub"
    )


def test_an_https_style_url(hub, tmp_path):
    result = neosft("data", "build", f"{hub.url}/files/neo_sft_phase2.json", "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert Manifest.read(str(tmp_path / "o")).source.sha256 == hashlib.sha256(CORPUS).hexdigest()
    assert_user_error(
        neosft("data", "build", f"{hub.url}/files/none.json", "--out", tmp_path / "p"), "does not exist (HTTP 404)"
    )

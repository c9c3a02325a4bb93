"""Storage and the builder against a real S3-compatible server (rclone) on 127.0.0.1."""

import json
import os
import time

import pytest
from conftest import assert_user_error, neosft

from neosft.artifacts import Manifest
from neosft.data.build import build
from neosft.errors import UserError
from neosft.sample import SAMPLE_CORPUS
from neosft.storage import location
from neosft.storage import s3 as storage


def test_s3_to_s3_build_equals_the_local_build(s3, tmp_path):
    location(f"{s3}/raw/corpus.json").write_bytes(SAMPLE_CORPUS.read_bytes())
    remote = build(f"{s3}/raw/corpus.json", f"{s3}/neosft/data")
    local = build(str(SAMPLE_CORPUS), str(tmp_path / "out"))
    assert remote.source.sha256 == local.source.sha256
    assert {n: v.sha256 for n, v in remote.variants.items()} == {n: v.sha256 for n, v in local.variants.items()}
    data = location(f"{s3}/neosft/data")
    assert data.list() == sorted(
        ["manifest.json", "dataset_info.json", *(f for v in remote.variants.values() for f in v.files)]
    )
    assert Manifest.read(data) == remote
    single = remote.variants["single"].files[0]
    assert (data / single).read_bytes() == (tmp_path / "out" / single).read_bytes()


def test_rebuild_on_s3_removes_parts_no_manifest_names_once_no_build_can_be_writing_them(s3, monkeypatch):
    from neosft.storage.s3 import S3Location

    first = build(str(SAMPLE_CORPUS), f"{s3}/d", ["all_pair"], shard_rows=100)
    second = build(str(SAMPLE_CORPUS), f"{s3}/d", ["all_pair"], shard_rows=200)
    third = build(str(SAMPLE_CORPUS), f"{s3}/d", ["all_pair"], shard_rows=1000)

    def tops():
        return sorted({f.split("/")[0] for f in location(f"{s3}/d").list()} - {"manifest.json", "dataset_info.json"})

    assert tops() == sorted([first.parts, second.parts, third.parts])  # within the hour: maybe another build's
    monkeypatch.setattr(S3Location, "CLEANUP_GRACE_S", 0.0)
    build(str(SAMPLE_CORPUS), f"{s3}/d", ["all_pair"], shard_rows=1000)
    assert tops() == [third.parts]


def test_large_objects_go_up_in_parts_and_come_back_whole(s3, tmp_path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    monkeypatch.setattr(
        storage, "_transfer_config", lambda: TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    )
    blob = os.urandom(12 << 20)
    (tmp_path / "blob").write_bytes(blob)
    parts = []
    storage._client().meta.events.register(
        "before-call.s3.UploadPart", lambda **kw: parts.append(kw["params"]["query_string"]["partNumber"])
    )
    target = location(f"{s3}/big/blob")
    target.upload(tmp_path / "blob")
    assert sorted(parts) == [1, 2, 3]
    with target.open() as f:
        assert f.read() == blob


def test_exists_and_missing_objects(s3):
    assert not location(f"{s3}/nothing").exists()
    with pytest.raises(UserError, match="does not exist"):
        location(f"{s3}/nothing").size()
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        location("s3://no-such-bucket/x.json").size()


def test_cli_missing_bucket(s3):
    assert_user_error(
        neosft("data", "build", SAMPLE_CORPUS, "--out", "s3://no-such-bucket/data"),
        "bucket 'no-such-bucket' does not exist",
    )
    assert_user_error(neosft("data", "build", "s3://no-such-bucket/c.json", "--out", f"{s3}/d"), "does not exist")


def test_cli_wrong_credentials_never_show_the_secret(s3):
    secret = "wrong-secret-never-printed"
    result = neosft("data", "build", SAMPLE_CORPUS, "--out", f"{s3}/data", env={"AWS_SECRET_ACCESS_KEY": secret})
    assert_user_error(result, "S3 refused access")
    assert secret not in result.stderr + result.stdout
    assert not location(f"{s3}/data").list()


def test_cli_unreachable_endpoint(s3):
    result = neosft(
        "data",
        "build",
        SAMPLE_CORPUS,
        "--out",
        f"{s3}/data",
        env={"NEOSFT_S3_ENDPOINT": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
    )
    assert_user_error(result, "cannot reach the S3 endpoint http://127.0.0.1:9")


def test_bad_uris():
    with pytest.raises(UserError, match="needs a bucket"):
        location("s3:///key")
    with pytest.raises(UserError, match="unsupported storage scheme"):
        location("gs://s3/key")


def test_parquet_and_gzip_sources_on_s3(s3, tmp_path):
    import gzip

    import pyarrow.parquet as pq
    from datasets import Dataset

    good = [
        r
        for r in json.loads(SAMPLE_CORPUS.read_text(encoding="utf-8"))
        if isinstance(r, dict)
        and isinstance(r.get("conversations"), list)
        and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in r["conversations"])
    ]
    pq.write_table(
        Dataset.from_list([{"conversations": r["conversations"]} for r in good]).data.table, tmp_path / "c.parquet"
    )
    location(f"{s3}/c.parquet").write_bytes((tmp_path / "c.parquet").read_bytes())
    location(f"{s3}/c.json.gz").write_bytes(gzip.compress(json.dumps(good, ensure_ascii=False).encode()))
    from_parquet = build(f"{s3}/c.parquet", f"{s3}/p")
    from_gzip = build(f"{s3}/c.json.gz", f"{s3}/g")
    assert from_parquet.source.records == from_gzip.source.records == len(good)
    assert {n: v.sha256 for n, v in from_parquet.variants.items()} == {
        n: v.sha256 for n, v in from_gzip.variants.items()
    }


def test_the_builder_rides_out_an_s3_server_restart(s3_server, s3, tmp_path, monkeypatch):
    import threading

    from neosft.storage.s3 import S3Location

    upload, uploads = S3Location.move_from, []

    def flaky_server(self, src):  # the server dies before the second part and is back a second later
        if len(uploads) == 1:
            s3_server.stop(kill=True)
            threading.Timer(1.0, s3_server.start).start()
        uploads.append(self.uri)
        upload(self, src)

    monkeypatch.setattr(S3Location, "move_from", flaky_server)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "10")  # enough backoff to outlast the restart
    remote = build(str(SAMPLE_CORPUS), f"{s3}/d", shard_rows=100)
    build(str(SAMPLE_CORPUS), str(tmp_path / "out"), shard_rows=100)
    assert len(uploads) == len(set(uploads)) > 2
    for v in remote.variants.values():
        for f in v.files:
            assert location(f"{s3}/d/{f}").read_bytes() == (tmp_path / "out" / f).read_bytes()
    assert Manifest.read(f"{s3}/d") == remote


def test_a_read_resumes_where_it_broke_off_when_the_server_restarts(s3_server, s3, monkeypatch):
    connect, connects = storage._S3Reader._connect, []
    monkeypatch.setattr(storage._S3Reader, "_connect", lambda self: (connects.append(self.pos), connect(self)))
    blob = os.urandom(48 << 20)  # more than the socket buffers hold
    location(f"{s3}/blob").write_bytes(blob)
    with location(f"{s3}/blob").open() as f:
        head = f.read(1 << 20)
        s3_server.stop(kill=True)
        s3_server.start()
        assert head + f.read() == blob
    assert connects[0] == 0 and len(connects) == 2 and connects[1] >= 1 << 20


def test_a_resumed_read_of_a_replaced_object_fails_clearly_instead_of_splicing(s3_server, s3):
    first, second = os.urandom(48 << 20), os.urandom(48 << 20)
    location(f"{s3}/blob").write_bytes(first)
    with location(f"{s3}/blob").open() as f:
        assert f.read(1 << 20) == first[: 1 << 20]
        location(f"{s3}/blob").write_bytes(second)
        s3_server.stop(kill=True)  # the connection breaks; the read resumes on a new one
        s3_server.start()
        with pytest.raises(UserError, match="was replaced while it was being read"):
            f.read()


@pytest.fixture
def silent_endpoint():
    """A TCP server on 127.0.0.1 that accepts connections and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_a_silent_endpoint_ends_in_one_line_within_the_configured_bound(s3, silent_endpoint):
    started = time.monotonic()
    result = neosft(
        "data",
        "build",
        "sample",
        "--out",
        f"{s3}/d",
        env={"NEOSFT_S3_ENDPOINT": silent_endpoint, "NEOSFT_S3_TIMEOUT": "1", "AWS_MAX_ATTEMPTS": "2"},
    )
    assert_user_error(result, f"the S3 endpoint {silent_endpoint} did not answer within 1 s (2 attempts)")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    "env,args,needle",
    [
        ({"NEOSFT_S3_ENDPOINT": "127.0.0.1:9000"}, ("sample", "--out", "s3://bkt/d"), "needs a scheme"),
        (
            {"NEOSFT_S3_TIMEOUT": "soon"},
            ("sample", "--out", "s3://bkt/d"),
            "NEOSFT_S3_TIMEOUT='soon' must be a positive number",
        ),
        ({}, ("s3://bkt", "--out", "{tmp}/o"), "names a bucket, not an object"),
        ({}, ("sample", "--out", "s3://My_Bucket/d"), "'My_Bucket' is not a valid bucket name"),
        (
            {
                "NEOSFT_S3_ENDPOINT": "http://user:endpoint-secret@127.0.0.1:9",
                "AWS_MAX_ATTEMPTS": "1",
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
            },
            ("sample", "--out", "s3://bkt/d"),
            "cannot reach the S3 endpoint http://127.0.0.1:9",
        ),
    ],
)
def test_bad_endpoints_and_uris_are_one_line_without_secrets(tmp_path, env, args, needle):
    args = [a.format(tmp=tmp_path) for a in args]
    result = neosft("data", "build", *args, env=env)
    assert_user_error(result, needle)
    assert "secret" not in result.stderr


def test_https_against_a_plain_http_server_says_so(s3, s3_server):
    endpoint = s3_server.env()["NEOSFT_S3_ENDPOINT"].replace("http://", "https://")
    result = neosft(
        "data", "build", "sample", "--out", f"{s3}/d", env={"NEOSFT_S3_ENDPOINT": endpoint, "AWS_MAX_ATTEMPTS": "1"}
    )
    assert_user_error(result, "TLS failed", "use an http:// endpoint")


def test_check_storage_creates_nothing(tmp_path, s3):
    assert_user_error(neosft("check-storage", tmp_path / "nonexistent" / "dir"), "does not exist")
    assert not (tmp_path / "nonexistent").exists()
    assert neosft("check-storage", tmp_path).returncode == 0
    assert neosft("check-storage", f"{s3}/prefix").returncode == 0

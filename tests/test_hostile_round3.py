"""Hostile input, round 3 (issue 20), grouped by root cause: nothing deleted that neosft did not write, no
secret echoed, no traceback for bad artifacts, numbers or values, no hang, the model is the one asked for."""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import sys
import threading

import pytest
from conftest import assert_user_error, neosft

from neosft.artifacts import Manifest
from neosft.data.build import build
from neosft.errors import UserError
from neosft.storage import location

QA = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
SECRET = "pw-that-must-never-show"


@contextlib.contextmanager
def serving(handler_class):
    """An HTTP server on 127.0.0.1 in a thread; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def file_handler(body: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()

        def do_GET(self):
            self.do_HEAD()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


# --- data that is not neosft's is never touched ---------------------------------------------------------------


def test_a_build_removes_only_what_neosft_wrote(tmp_path):
    dest = tmp_path / "out"
    (dest / "single").mkdir(parents=True)
    (dest / "single" / "notes.md").write_text("mine")
    (dest / "single" / "part-00000.jsonl").write_text("{}\n")  # the old layout's part: neosft's
    (dest / "single" / "part-of-my-plan.txt").write_text("mine")
    (dest / "parts-archive").mkdir()
    (dest / "parts-archive" / "x.jsonl").write_text("mine")
    build("sample", str(dest))
    build("sample", str(dest), shard_rows=7)  # a second build cleans up after the first
    build("sample", str(dest), shard_rows=9)
    assert (dest / "single" / "notes.md").read_text() == "mine"
    assert (dest / "single" / "part-of-my-plan.txt").read_text() == "mine"
    assert (dest / "parts-archive" / "x.jsonl").read_text() == "mine"
    assert not (dest / "single" / "part-00000.jsonl").exists()
    assert len(list(dest.glob("parts-*"))) == 3  # the archive, this build's and the previous build's


@pytest.mark.parametrize("command", [("data", "build", "sample", "--out"), ("check-storage",)])
def test_an_empty_file_uri_is_refused(tmp_path, command):
    result = neosft(*command, "file://", cwd=tmp_path)
    assert_user_error(result, "empty path")
    assert list(tmp_path.iterdir()) == []


def test_two_builds_publishing_to_one_s3_prefix_leave_one_builds_files(s3, monkeypatch):
    """Build B publishes whole between build A's manifest and A's dataset_info.json: both files name one build."""
    from neosft.storage.s3 import S3Location

    dest, write, interleaved = f"{s3}/data", S3Location.write_bytes, []

    def write_bytes(self, data):
        write(self, data)
        if self.key.endswith("dataset_info.json") and not interleaved:
            interleaved.append(neosft("data", "build", "sample", "--out", dest, "--shard-rows", "5"))

    monkeypatch.setattr(S3Location, "write_bytes", write_bytes)
    build("sample", dest, build_id="a")
    manifest = Manifest.read(dest)
    info = json.loads(location(f"{dest}/dataset_info.json").read_bytes())
    assert interleaved[0].returncode == 0, interleaved[0].stderr
    assert {v["file_name"].split("/")[0] for v in info.values()} == {manifest.parts}


# --- secrets never echoed ----------------------------------------------------------------------------------------


def test_http_credentials_stay_out_of_the_manifest_and_errors(tmp_path):
    good, bad = json.dumps([QA]).encode(), json.dumps([{"messages": []}]).encode()
    with serving(file_handler(good)) as url:
        source = url.replace("http://", f"http://user:{SECRET}@") + "/c.json"
        result = neosft("data", "build", source, "--out", tmp_path / "o")
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stderr + result.stdout
        assert SECRET not in (tmp_path / "o" / "manifest.json").read_text()
        assert Manifest.read(str(tmp_path / "o")).source.uri == f"{url}/c.json"
    with serving(file_handler(bad)) as url:
        result = neosft(
            "data", "build", url.replace("http://", f"http://user:{SECRET}@") + "/c.json", "--out", tmp_path / "o"
        )
        assert_user_error(result, "no usable record")
        assert SECRET not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("data", "wait", "--timeout", "0", "s3://KEY:{secret}@bucket/d"),
        ("check-storage", "s3://KEY:{secret}@bucket/d"),
        ("data", "build", "sample", "--out", "s3://KEY:{secret}@bucket/d"),
        ("plan", "--data", "s3://KEY:{secret}@bucket/d"),
        ("status", "r1", "--store", "s3://KEY:{secret}@bucket/d"),
    ],
)
def test_credentials_in_an_s3_uri_are_refused_unechoed(args):
    result = neosft(*[a.format(secret=SECRET) for a in args])
    assert_user_error(result, "credentials", "AWS_ACCESS_KEY_ID")
    assert SECRET not in result.stderr + result.stdout


def test_a_schema_error_does_not_echo_the_userinfo_of_an_endpoint():
    result = neosft("submit", "--dry-run", "--set", "s3.bucket=bkt", "--set", f"s3.endpoint=http://u:{SECRET}@h:9")
    assert_user_error(result, "s3/endpoint")
    assert SECRET not in result.stderr + result.stdout


def test_submit_refuses_a_source_with_credentials():
    result = neosft("submit", "--dry-run", "--set", "s3.bucket=bkt", "--source", f"https://u:{SECRET}@h/c.json")
    assert_user_error(result, "data/source")
    assert SECRET not in result.stderr + result.stdout


# --- no traceback for bad artifacts --------------------------------------------------------------------------------

LOSS = {
    "current_steps": 1,
    "total_steps": 2,
    "epoch": 0.5,
    "total_tokens": 10,
    "throughput": 1.0,
    "percentage": 50.0,
    "elapsed_s": 3.0,
    "elapsed_time": "0:00:03",
    "remaining_time": "0:00:03",
    "loss": 1.5,
}


@pytest.mark.parametrize(
    "field,value",
    [
        ("loss", "1.5"),
        ("current_steps", "1"),
        ("loss", float("-inf")),
        ("elapsed_s", 1e300),
        ("total_steps", -2),
    ],  # NaN: diverged
)
def test_a_loss_log_of_wrong_types_is_one_line_naming_it(tmp_path, field, value):
    from conftest import write_loss_log

    output = tmp_path / "runs" / "r1" / "single"
    write_loss_log(str(output), [1.0])
    record = json.loads((output / "loss.jsonl").read_text())
    (output / "loss.jsonl").write_text(json.dumps({**record, field: value}) + "\n")
    assert_user_error(neosft("status", "r1", "--store", tmp_path), "loss.jsonl line 1", field)
    assert_user_error(neosft("plot", output, "--out", tmp_path / "p.png"), "loss.jsonl line 1", field)


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda m: m["variants"]["single"].update(rows="12"), "variants.single.rows"),
        (lambda m: m["variants"]["single"].update(rows=-5), "variants.single.rows"),
        (lambda m: m["variants"]["single"].pop("stats"), "variants.single.stats"),
        (lambda m: m["variants"]["single"]["stats"].pop("output_chars"), "output_chars"),
        (lambda m: m["variants"].update(single=7), "variants.single"),
        (lambda m: m["source"].update(bytes=float("inf")), "source.bytes"),
    ],
)
def test_a_manifest_of_wrong_types_is_one_line_naming_it(tmp_path, change, needle):
    manifest = json.loads(build("sample", str(tmp_path / "d")).to_json())
    change(manifest)
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    assert_user_error(neosft("plan", "--variant", "single", "--data", tmp_path / "d"), "manifest.json", needle)
    with pytest.raises(UserError, match=f"manifest.json .*{needle}"):
        from neosft.train.dataset import manifest_entry

        manifest_entry(str(tmp_path / "d"), "single")


def test_a_run_record_of_wrong_types_is_one_line_naming_it(tmp_path):
    from neosft.artifacts import RunRecord

    with pytest.raises(UserError, match="run.json is not a neosft run record .*steps"):
        RunRecord.from_json(json.dumps({"variant": "single", "steps": "many"}).encode(), "x/final/run.json")


@pytest.mark.parametrize(
    "row", [["a", "b"], {"instruction": "q", "input": ""}, {"instruction": 5, "input": "", "output": "a"}]
)
def test_a_row_of_the_wrong_shape_under_a_matching_sha256_names_part_and_line(tmp_path, row):
    import dataclasses
    import hashlib

    from neosft.train.dataset import rows

    dest = tmp_path / "d"
    manifest = build("sample", str(dest))
    entry = manifest.variants["single"]
    part = dest / entry.files[0]
    lines = part.read_bytes().splitlines(keepends=True)
    part.write_bytes(lines[0] + json.dumps(row).encode() + b"\n" + b"".join(lines[2:]))
    digest = hashlib.sha256(b"".join((dest / f).read_bytes() for f in entry.files)).hexdigest()
    variants = {**manifest.variants, "single": dataclasses.replace(entry, sha256=digest)}
    dataclasses.replace(manifest, variants=variants).write(location(str(dest)))
    entry = Manifest.read(str(dest)).variants["single"]
    with pytest.raises(UserError, match=f"{entry.files[0]} line 2 is not a row"):
        list(rows(str(dest), "single", entry))


# --- no traceback, no hang for bad numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("plan", "--tokens-per-gpu-s", "nan"),
        ("plan", "--gpu-memory", "inf"),
        ("data", "wait", "missing", "--interval", "nan"),
        ("train", "--variant", "single", "--data", "d", "--output", "o", "--val-size", "nan"),
    ],
)
def test_non_finite_numbers_are_refused(args):
    result = neosft(*args)
    assert result.returncode == 2 and "finite" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "nan" not in result.stdout


@pytest.mark.parametrize("interval", ["3600", "1e300"])
def test_data_wait_never_sleeps_past_its_timeout(tmp_path, interval):
    result = neosft("data", "wait", tmp_path, "--timeout", "1", "--interval", interval, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("did not appear within 1s")


# --- memory flat per record, sources that cannot seek ------------------------------------------------------------


def test_one_conversation_of_thousands_of_rounds_builds_in_flat_memory(tmp_path):
    from test_hostile import limited

    rounds = 2700  # a 330 KB record whose conversations rows are about 400 MB
    turns = [{"from": f, "value": f"{f} turn {i} " + "x" * 40} for i in range(rounds) for f in ("human", "gpt")]
    (tmp_path / "long.jsonl").write_text(json.dumps({"conversations": turns}) + "\n")
    result = limited(
        "data", "build", tmp_path / "long.jsonl", "--out", tmp_path / "o", "--variants", "conversations", gib=0.5
    )
    assert result.returncode == 0, result.stderr
    assert Manifest.read(str(tmp_path / "o")).variants["conversations"].rows == rounds


def test_a_named_pipe_holding_parquet_is_spooled(tmp_path):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"conversations": [QA["conversations"]] * 3}), tmp_path / "c.parquet")
    os.mkfifo(tmp_path / "pipe")
    feeder = threading.Thread(target=lambda: (tmp_path / "pipe").write_bytes((tmp_path / "c.parquet").read_bytes()))
    feeder.start()
    result = neosft("data", "build", tmp_path / "pipe", "--out", tmp_path / "o", timeout=120)
    feeder.join()
    assert result.returncode == 0, result.stderr
    assert Manifest.read(str(tmp_path / "o")).kept == 3


@pytest.mark.parametrize("body", [json.dumps([QA]).encode(), b"PAR1"])
def test_dev_stdin_is_read_as_a_stream(tmp_path, body):
    if body == b"PAR1":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.table({"conversations": [QA["conversations"]]}), buffer)
        body = buffer.getvalue()
    command = [sys.executable, "-m", "neosft", "data", "build", "/dev/stdin", "--out", str(tmp_path / "o")]
    result = subprocess.run(command, input=body, capture_output=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert Manifest.read(str(tmp_path / "o")).kept == 1


def test_valid_json_after_70_kb_of_whitespace_parses(tmp_path):
    (tmp_path / "c.json").write_text(" \n" * 35_000 + json.dumps([QA]))
    assert build(str(tmp_path / "c.json"), str(tmp_path / "o")).kept == 1


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: (p / "f").write_text("x") and p / "f" / "c.json", "a part of its path is a file"),
        (lambda p: (p / "loop").symlink_to(p / "loop") or p / "loop", "symbolic links form a loop"),
        (lambda p: p / ("n" * 300), "the name is too long"),
    ],
)
def test_every_os_error_on_a_local_source_is_one_line(tmp_path, make, needle):
    assert_user_error(neosft("data", "build", make(tmp_path), "--out", tmp_path / "o"), needle)


# --- S3 answers botocore cannot parse ------------------------------------------------------------------------------


def test_an_s3_5xx_with_checksum_headers_is_unreachable_and_retried(monkeypatch):
    from neosft.errors import Unreachable

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # rclone's answer when a listed object vanished
            requests.append(self.path)
            body = b'<?xml version="1.0"?><Error><Code>InternalError</Code><Message>gone</Message></Error>'
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amz-checksum-crc32", "AAAAAA==")
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    with serving(Handler) as url:
        for key, value in {
            "NEOSFT_S3_ENDPOINT": url,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "AWS_MAX_ATTEMPTS": "2",
        }.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(Unreachable, match="S3 answered 500 InternalError for s3://bkt/x"):
            location("s3://bkt/x").read_bytes()
    assert len(requests) >= 2


# --- values files and --set as Helm reads them ---------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused(tmp_path):
    lines, previous = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join(['*' + previous] * 9)}]")
        previous = name
    (tmp_path / "v.yaml").write_text("\n".join(lines) + "\n")
    assert_user_error(neosft("submit", "--dry-run", "--values", tmp_path / "v.yaml"), "aliasing")


def test_a_values_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "v.yaml").write_bytes(b"s3:\n  bucket: \xff\xfe\n")
    assert_user_error(neosft("submit", "--dry-run", "--values", tmp_path / "v.yaml"), "not valid UTF-8", "byte 14")


def test_several_sets_on_one_list_element_merge_as_helms_strvals():
    from neosft.k8s.render import load_values

    values = load_values(None, ("train.tolerations[0].key=gpu", "train.tolerations[0].operator=Exists"), {})
    assert values["train"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]


@pytest.mark.parametrize(
    "values,where",
    [
        ({"data": {"resources": {"requests": {"cpu": -2}}}}, "/data/resources/requests/cpu"),
        ({"train": {"shmSize": -1}}, "/train/shmSize"),
        ({"podLabels": {"a" * 64: "x"}}, "/podLabels"),
        ({"podAnnotations": {"example.com/" + "n" * 64: "x"}}, "/podAnnotations"),
        ({"data": {"activeDeadlineSeconds": 0}}, "/data/activeDeadlineSeconds"),
    ],
)
def test_the_schema_refuses_what_the_api_server_refuses(values, where):
    from neosft.k8s.render import render

    with pytest.raises(UserError, match=where):
        render(values, "r1", "ml")


def test_the_data_job_has_a_deadline():
    from neosft.k8s.render import render

    [job] = [o for o in render({}, "r1", "ml") if o["kind"] == "Job" and o["metadata"]["name"].endswith("-data")]
    assert job["spec"]["activeDeadlineSeconds"] == 21600


# --- time bounded per request --------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_server_trickling_its_headers_ends_in_one_line(monkeypatch):
    from neosft.storage import http as http_source

    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(6000):  # a header byte every 0.05 s, for at most 5 minutes
                if stop.wait(0.05):
                    return
                try:
                    self.wfile.write(b"X")
                    self.wfile.flush()
                except OSError:
                    return

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    monkeypatch.setattr(http_source, "DEADLINE_S", 0.5)
    monkeypatch.setattr(http_source, "_POOL", None)
    with serving(Trickle) as url:
        try:
            with pytest.raises(UserError, match="did not answer .* within"):
                http_source.HttpFile(f"{url}/c.json").size()
        finally:
            stop.set()


def test_a_hub_revision_holding_a_slash_is_named_url_encoded(tmp_path, monkeypatch):
    from hub_server import Hub, Repo, serve

    hub = Hub({"o/n": Repo({"c.json": json.dumps([QA]).encode()}, branches=("main", "refs/convert/parquet"))})
    server = serve(hub)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        manifest = build("hf://datasets/o/n@refs%2Fconvert%2Fparquet/c.json", str(tmp_path / "o"))
    finally:
        server.shutdown()
    assert manifest.kept == 1 and manifest.source.revision == hub.repos["o/n"].commit


# --- trainer settings checked at submit; the model is the model asked for -------------------------------------------


@pytest.mark.parametrize(
    "setting,needle",
    [
        ("train.set.nonsense_key=1", "--set nonsense_key: not a hyper-parameter"),
        ("train.set.report_to=wandb", "--set report_to: use --report-to"),
        ("train.set.learning_rate=fast", 'learning_rate="fast": expected a finite number'),
        ("train.variantSet.single.cutoff_len=0", "cutoff_len=0: expected an integer above 0"),
    ],
)
def test_trainer_settings_are_checked_at_submit(setting, needle):
    result = neosft("submit", "--dry-run", "--variant", "single", "--set", "s3.bucket=bkt", "--set", setting)
    assert_user_error(result, needle)


def test_a_model_folder_whose_config_names_another_architecture_is_refused(sample_dataset, tiny_model, tmp_path):
    import shutil

    from test_train_inputs import assert_refused, train

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(
        json.dumps({**config, "model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    )
    assert_refused(train(data=sample_dataset, model=model, tmp_path=tmp_path), f"--model {model}", "unexpected keys")


# --- an S3 server that forgets a multipart upload ------------------------------------------------------------------


def test_a_multipart_upload_the_server_forgot_is_uploaded_again_from_its_start(s3, tmp_path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    from neosft.storage import s3 as s3_store

    monkeypatch.setattr(
        s3_store,
        "_transfer_config",
        lambda: TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20, max_concurrency=1),
    )
    forgotten = []

    def forget(params, **kwargs):  # as a restarted server: the upload id is gone before its second part
        if params.get("PartNumber") == 2 and not forgotten:
            forgotten.append(params["UploadId"])
            client.abort_multipart_upload(Bucket=params["Bucket"], Key=params["Key"], UploadId=params["UploadId"])

    client = s3_store._client()
    client.meta.events.register("provide-client-params.s3.UploadPart", forget)
    try:
        data = bytes(range(256)) * (48 << 12)  # 12 MiB: three parts
        (tmp_path / "blob").write_bytes(data)
        location(f"{s3}/blob").upload(tmp_path / "blob")
    finally:
        client.meta.events.unregister("provide-client-params.s3.UploadPart", forget)
    assert forgotten and location(f"{s3}/blob").read_bytes() == data


def test_submit_without_transformers_checks_the_table_keys_and_says_what_it_left_to_the_trainer():
    """`[submit]` has no transformers: a key outside the table is left to the trainer, with a warning, while the
    table's own keys are still checked."""
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from neosft.errors import UserError\n"
        "from neosft.train.args import checked_overrides\n"
        "print(checked_overrides('single', ['max_grad_norm=0.5'])[0])\n"
        "try:\n    checked_overrides('single', ['cutoff_len=0'])\nexcept UserError as e:\n    print('refused:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[0] == "{'max_grad_norm': 0.5}", result.stdout
    assert result.stdout.splitlines()[1].startswith("refused: ") and "cutoff_len" in result.stdout
    assert "max_grad_norm: not checked here (transformers is not installed)" in result.stderr

"""`neosft data build` against hostile input and hostile timing: values kept exactly, memory flat whatever
the input's shape, bad options refused before any work, concurrent and stopped builds leave DEST whole."""

import gzip
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
from conftest import assert_user_error, neosft, write_json, write_synthetic_corpus

from neosft.artifacts import Manifest
from neosft.data.build import build

QA = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}


def limited(*args, gib: float = 1.0) -> subprocess.CompletedProcess:
    """`neosft ARGS` with its address space capped: a reader whose memory grew with the input would fail."""
    cap = int(gib * (1 << 30))
    return subprocess.run(
        [sys.executable, "-m", "neosft", *map(str, args)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
    )


def snapshot(dest):
    return {p: p.read_bytes() for p in dest.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture
def previous(tmp_path):
    dest = tmp_path / "out"
    build("sample", str(dest))
    return dest, snapshot(dest)


def test_a_lone_surrogate_keeps_its_escape(tmp_path):
    (tmp_path / "s.json").write_bytes(
        b'[{"conversations":[{"from":"human","value":"a\\ud800b"},{"from":"gpt","value":"\\udfff\\ud83d\\u0041"}]}]'
    )
    assert neosft("data", "build", tmp_path / "s.json", "--out", tmp_path / "o").returncode == 0
    part = (tmp_path / "o" / Manifest.read(str(tmp_path / "o")).variants["single"].files[0]).read_bytes()
    assert part == b'{"instruction":"a\\ud800b","input":"","output":"\\udfff\\ud83dA"}\n'


@pytest.mark.parametrize(
    "text",
    [
        "[" + "[" * 100_000 + "]" * 100_000 + "]",  # 200 KB, depth 100000
        '{"id": ' + "[" * 15_000 + "]" * 15_000 + "}\n",  # JSON lines
    ],
)
def test_deep_nesting_is_one_clear_line_in_bounded_memory(tmp_path, text, previous):
    (tmp_path / "deep").write_text(text)
    assert_user_error(limited("data", "build", tmp_path / "deep", "--out", previous[0], gib=0.5), "nested deeper")
    assert snapshot(previous[0]) == previous[1]


def test_a_huge_integer_in_an_ignored_field_is_kept_quietly(tmp_path):
    write_json(tmp_path / "c.json", [{"id": 1, **QA}])
    (tmp_path / "c.json").write_text((tmp_path / "c.json").read_text().replace('"id": 1', '"id": ' + "9" * 5000))
    result = neosft("data", "build", tmp_path / "c.json", "--out", tmp_path / "o")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert Manifest.read(str(tmp_path / "o")).kept == 1


def test_gigabytes_of_whitespace_in_json_lines_stream_in_flat_memory(tmp_path):
    with gzip.open(tmp_path / "ws.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(json.dumps(QA).encode() + b"\n")
        for _ in range(1024):
            f.write(b" " * (1 << 20))  # one 1 GB line of blanks
        f.write(b"\n" * (64 << 20) + json.dumps(QA).encode() + b"\n")
    result = limited("data", "build", tmp_path / "ws.jsonl.gz", "--out", tmp_path / "o", gib=0.5)
    assert result.returncode == 0, result.stderr
    assert Manifest.read(str(tmp_path / "o")).kept == 2


def test_progress_shows_while_no_record_comes(tmp_path, monkeypatch, capsys):
    from neosft.data import reader
    from neosft.progress import Progress

    monkeypatch.setattr(Progress, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(reader, "PROGRESS_EVERY_S", 0.05)
    with gzip.open(tmp_path / "ws.jsonl.gz", "wb", compresslevel=1) as f:
        f.write(json.dumps(QA).encode() + b"\n" + b"\n" * (400 << 20))
    build(str(tmp_path / "ws.jsonl.gz"), str(tmp_path / "o"))
    progress = [line for line in capsys.readouterr().err.splitlines() if "MB/s" in line]
    assert len(progress) >= 2 and len({line.split(" of ")[0] for line in progress}) >= 2  # the byte count moves


@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--joiner", b"\xa7", "--joiner is not valid UTF-8"),
        ("--input-prompt", b"\xff", "--input-prompt is not valid UTF-8"),
        ("--build-id", b"r\xa7", "--build-id is not valid UTF-8"),
        ("--variants", b"single,single", "named twice"),
        ("--variants", b"", "no variant to build"),
        ("--shard-rows", b"0", "at least 1"),
    ],
)
def test_a_bad_option_is_refused_before_any_work_and_the_previous_dataset_stays(previous, option, value, needle):
    dest, before = previous
    result = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"neosft",
            b"data",
            b"build",
            b"sample",
            b"--out",
            str(dest).encode(),
            option.encode(),
            value,
        ],
        capture_output=True,
        text=True,
    )
    assert_user_error(result, needle)
    assert snapshot(dest) == before


def test_an_empty_out_and_a_source_without_usable_records(tmp_path, previous):
    assert_user_error(neosft("data", "build", "sample", "--out", ""), "--out is empty")
    (tmp_path / "openai.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    result = neosft("data", "build", tmp_path / "openai.jsonl", "--out", previous[0])
    assert_user_error(result, "no usable record among 1", "malformed 1", '{"conversations": [{"from": "human"')
    assert snapshot(previous[0]) == previous[1]


def test_a_non_utf8_source_name_is_refused(tmp_path, previous):
    name = os.fsencode(tmp_path) + b"/c\xa7.json"
    with open(name, "wb") as f:
        f.write(json.dumps([QA]).encode())
    result = subprocess.run(
        [sys.executable.encode(), b"-m", b"neosft", b"data", b"build", name, b"--out", str(previous[0]).encode()],
        capture_output=True,
        text=True,
    )
    assert_user_error(result, "SOURCE is not valid UTF-8")
    assert snapshot(previous[0]) == previous[1]


def test_concurrent_builds_never_touch_each_other_and_the_last_publisher_wins_whole(tmp_path):
    """Three builds into one DEST, each reading its own pipe: all three are held mid-source at once (three
    staging folders), then finish one by one; the one that published last is what DEST holds, whole."""
    corpus = write_synthetic_corpus(tmp_path / "c.json", 3).read_bytes()
    dest = tmp_path / "out"
    dest.mkdir()
    fifos = [tmp_path / f"c{i}.json" for i in range(3)]
    for fifo in fifos:
        os.mkfifo(fifo)
    builds = [
        subprocess.Popen(
            [sys.executable, "-m", "neosft", "data", "build", str(fifo), "--out", str(dest), "--shard-rows", str(n)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for fifo, n in zip(fifos, (500, 700, 900))
    ]
    writers = [open(fifo, "wb") for fifo in fifos]  # each open returns once its build opened its source
    half = len(corpus) // 2
    for writer in writers:
        writer.write(corpus[:half])
        writer.flush()
    deadline = time.monotonic() + 120  # a bound for a hung build, not a synchronisation
    while len(list(dest.glob(".neosft-staging-*"))) < 3:  # every build is inside its own staging at once
        assert all(b.poll() is None for b in builds) and time.monotonic() < deadline
        time.sleep(0.05)
    for i in (2, 0, 1):  # finish them in this order: build 1 publishes last
        writers[i].write(corpus[half:])
        writers[i].close()
        assert builds[i].wait() == 0, builds[i].stderr.read()
        assert Manifest.read(str(dest)).options["shard_rows"] == (500, 700, 900)[i]  # the newest publish, whole
    manifest = Manifest.read(str(dest))
    for v in manifest.variants.values():
        assert len(v.files) == -(-v.rows // 700) and all((dest / f).exists() for f in v.files)
        data = b"".join((dest / f).read_bytes() for f in v.files)
        assert hashlib.sha256(data).hexdigest() == v.sha256
    assert not list(dest.glob(".neosft-staging-*"))


@pytest.mark.parametrize("to_s3", [False, True])
def test_sigterm_ends_cleanly_and_leaves_nothing_behind(tmp_path, to_s3, request):
    fifo = tmp_path / "corpus.json"  # a source that stalls mid-way: SIGTERM lands while the build is reading
    os.mkfifo(fifo)
    dest = (
        f"{request.getfixturevalue('s3')}/data" if to_s3 else str(tmp_path / "out")
    )  # the s3 fixture sets the environment
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "neosft", "data", "build", str(fifo), "--out", dest],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )
    with open(fifo, "wb") as writer:
        writer.write(b"[" + b",".join([json.dumps(QA).encode()] * 20_000) + b",")
        writer.flush()
        staging = (tmp_path / "tmp") if to_s3 else (tmp_path / "out")
        deadline = time.monotonic() + 120  # a bound for a hung build, not a synchronisation
        while not any(staging.glob("*neosft-staging-*")):  # the build is inside its staging, reading the pipe
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("interrupted"), err
    assert list((tmp_path / "tmp").iterdir()) == []
    if not to_s3:
        assert [p.name for p in (tmp_path / "out").iterdir()] == []

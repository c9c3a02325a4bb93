"""`neosft data build` end to end: rows, formats, shards, manifest, atomicity and bad input."""

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_user_error, neosft, write_json, write_jsonl, write_synthetic_corpus

from neosft.artifacts import Manifest, SourceInfo
from neosft.data.build import build
from neosft.sample import SAMPLE_CORPUS
from neosft.variants import VARIANTS

RECORDS = [
    {
        "id": 1,
        "conversations": [{"from": "human", "value": "你好 😀"}, {"from": "gpt", "value": "你好！有什么可以帮你？"}],
    },
    {
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "user", "value": "2+2?"},
            {"from": "assistant", "value": "4"},
            {"from": "human", "value": 'and "3+3"?'},
            {"from": "gpt", "value": "6\n"},
            {"from": "human", "value": "unanswered"},
        ]
    },
    {"conversations": [{"from": "gpt", "value": "out of order"}, {"from": "human", "value": "q"}]},
    {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "   "}]},
    {"conversations": [{"from": "human", "value": "only a question"}]},
    "not an object",
]

EXPECTED = {
    "conversations": [
        {"instruction": "你好 😀", "input": "", "output": "你好！有什么可以帮你？"},
        {"instruction": "2+2?", "input": "", "output": "4", "system": "Be brief."},
        {"instruction": '2+2?\n\n4\n\nand "3+3"?', "input": "", "output": "6\n", "system": "Be brief."},
    ],
    "multi": [
        {"instruction": "你好 😀", "input": "", "output": "你好！有什么可以帮你？"},
        {"instruction": '2+2?\n\nand "3+3"?', "input": "", "output": "4\n\n6\n", "system": "Be brief."},
    ],
    "single": [
        {"instruction": "你好 😀", "input": "", "output": "你好！有什么可以帮你？"},
    ],
    "all_pair": [
        {"instruction": "你好 😀", "input": "", "output": "你好！有什么可以帮你？"},
        {"instruction": "2+2?", "input": "", "output": "4", "system": "Be brief."},
        {"instruction": 'and "3+3"?', "input": "", "output": "6\n", "system": "Be brief."},
    ],
}


def read_rows(dest: Path, variant: str) -> list:
    rows = []
    for file in Manifest.read(str(dest)).variants[variant].files:
        rows += [json.loads(line) for line in (dest / file).read_text(encoding="utf-8").splitlines()]
    return rows


def test_rows_of_every_variant(tmp_path):
    build(str(write_json(tmp_path / "c.json", RECORDS)), str(tmp_path / "out"))
    for variant, rows in EXPECTED.items():
        assert read_rows(tmp_path / "out", variant) == rows, variant


def test_rows_are_compact_utf8_json_with_keys_in_order(tmp_path):
    m = build(str(write_json(tmp_path / "c.json", RECORDS)), str(tmp_path / "out"))
    lines = (tmp_path / "out" / m.variants["all_pair"].files[0]).read_bytes().splitlines()
    assert lines[0] == '{"instruction":"你好 😀","input":"","output":"你好！有什么可以帮你？"}'.encode()
    assert lines[1] == b'{"instruction":"2+2?","input":"","output":"4","system":"Be brief."}'
    assert b"\\u" not in b"".join(lines)


def test_joiner_and_input_prompt_options(tmp_path):
    build(
        str(write_json(tmp_path / "c.json", RECORDS)), str(tmp_path / "out"), ["multi"], joiner=" | ", input_prompt="P"
    )
    assert read_rows(tmp_path / "out", "multi")[1] == {
        "instruction": '2+2? | and "3+3"?',
        "input": "P",
        "output": "4 | 6\n",
        "system": "Be brief.",
    }


def test_manifest_counts_hashes_and_stats(tmp_path):
    source = write_json(tmp_path / "c.json", RECORDS)
    m = build(str(source), str(tmp_path / "out"))
    assert m == Manifest.read(str(tmp_path / "out"))
    assert m.source == SourceInfo(
        str(source), hashlib.sha256(source.read_bytes()).hexdigest(), source.stat().st_size, 6
    )
    assert m.skipped == {"malformed": 1, "no_rounds": 1, "bad_turn_order": 1, "empty_turn": 1}
    assert m.kept + sum(m.skipped.values()) == m.source.records
    assert m.options == {"joiner": "\n\n", "input_prompt": "", "shard_rows": 100_000}
    assert m.build_id is None
    assert build(str(source), str(tmp_path / "again"), build_id="r7").build_id == "r7"
    for name, v in m.variants.items():
        data = b"".join((tmp_path / "out" / f).read_bytes() for f in v.files)
        assert v.sha256 == hashlib.sha256(data).hexdigest()
        assert v.rows == v.stats["rows"] == len(EXPECTED[name])
    stats = m.variants["conversations"].stats
    assert stats["instruction_chars"]["max"] == len('2+2?\n\n4\n\nand "3+3"?')
    assert stats["output_chars"] == {"p50": 2, "p90": 11, "p99": 11, "max": 11, "total": 2 + 11 + 1}


def test_dataset_info_maps_system_only_where_present(tmp_path):
    records = [RECORDS[0], RECORDS[0]]
    build(str(write_json(tmp_path / "c.json", RECORDS + records)), str(tmp_path / "a"))
    build(str(write_json(tmp_path / "d.json", records)), str(tmp_path / "b"))
    with_system = json.loads((tmp_path / "a" / "dataset_info.json").read_text())
    without = json.loads((tmp_path / "b" / "dataset_info.json").read_text())
    parts = Manifest.read(str(tmp_path / "a")).parts
    assert with_system["multi"] == {
        "file_name": f"{parts}/multi",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
    }
    assert "system" not in without["multi"]["columns"]
    assert set(with_system) == set(VARIANTS)


def test_output_loads_with_hugging_face_datasets(tmp_path):
    from datasets import load_dataset

    parts = build(str(SAMPLE_CORPUS), str(tmp_path / "out")).parts
    ds = load_dataset(
        "json",
        data_files=str(tmp_path / "out" / parts / "all_pair" / "*.jsonl"),
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert len(ds) == read_rows(tmp_path / "out", "all_pair").__len__()
    assert set(ds.column_names) == {"instruction", "input", "output", "system"}


def formats(tmp_path: Path) -> dict[str, Path]:
    def gz(p: Path) -> Path:
        packed = p.with_name(p.name + ".gz")
        packed.write_bytes(gzip.compress(p.read_bytes()))
        return packed

    array = write_json(tmp_path / "c.json", RECORDS)
    lines = write_jsonl(tmp_path / "c.jsonl", RECORDS)
    pretty = tmp_path / "pretty.data"  # recognised by content, whatever the name
    pretty.write_bytes(b"\xef\xbb\xbf \n" + json.dumps(RECORDS, indent=2, ensure_ascii=False).encode())
    table = pa.table({"conversations": [r.get("conversations") if isinstance(r, dict) else None for r in RECORDS[:5]]})
    parquet = tmp_path / "c.parquet"
    pq.write_table(table, parquet)
    return {
        "json": array,
        "jsonl": lines,
        "json.gz": gz(array),
        "jsonl.gz": gz(lines),
        "bom+pretty": pretty,
        "parquet": parquet,
    }


def test_every_input_format_gives_the_same_rows(tmp_path):
    for kind, path in formats(tmp_path).items():
        build(str(path), str(tmp_path / kind))
        for variant, rows in EXPECTED.items():
            assert read_rows(tmp_path / kind, variant) == rows, (kind, variant)


def test_shards_split_rows_and_hash_like_one_file(tmp_path):
    source = str(SAMPLE_CORPUS)
    whole = build(source, str(tmp_path / "whole"))
    m = build(source, str(tmp_path / "parts"), shard_rows=100)
    v = m.variants["all_pair"]
    assert v.files == [f"{m.parts}/all_pair/part-{i:05d}.jsonl" for i in range(-(-v.rows // 100))]
    assert [len((tmp_path / "parts" / f).read_bytes().splitlines()) for f in v.files][:-1] == [100] * (len(v.files) - 1)
    assert v.sha256 == whole.variants["all_pair"].sha256


def test_rerun_is_byte_identical_and_keeps_only_the_current_and_previous_parts(tmp_path):
    source, dest = str(SAMPLE_CORPUS), tmp_path / "out"
    first = build(source, str(dest), shard_rows=50)
    second = build(source, str(dest), shard_rows=300)
    assert len(second.variants["all_pair"].files) == 3
    assert sorted(p.name for p in dest.glob("parts-*")) == sorted(
        [first.parts, second.parts]
    )  # readers of the first finish
    parts = {p: p.read_bytes() for p in dest.rglob("part-*.jsonl") if second.parts in str(p)}
    third = build(source, str(dest), shard_rows=300)
    assert third.parts == second.parts
    assert [p.name for p in dest.glob("parts-*")] == [second.parts]  # the 50-row parts are gone
    assert {p: p.read_bytes() for p in dest.rglob("part-*.jsonl")} == parts
    assert not list(dest.glob(".neosft-staging-*"))


def test_only_requested_variants_are_built(tmp_path):
    m = build(str(SAMPLE_CORPUS), str(tmp_path / "out"), ["single", "multi"])
    assert list(m.variants) == ["single", "multi"]
    assert sorted(p.name for p in (tmp_path / "out" / m.parts).iterdir()) == ["multi", "single"]


def test_an_empty_variant_has_one_loadable_part_and_a_warning(tmp_path):
    m = build(str(write_json(tmp_path / "c.json", RECORDS[1:2])), str(tmp_path / "out"), ["single", "multi"])
    assert m.variants["single"].rows == 0 and m.variants["multi"].rows == 1
    assert (tmp_path / "out" / m.variants["single"].files[0]).read_bytes() == b""
    assert m.warnings == [f"single has no rows: {VARIANTS['single'].rule}"]
    out = neosft("data", "build", tmp_path / "c.json", "--out", tmp_path / "o2", "--variants", "single,multi")
    assert out.returncode == 0 and "warning: single has no rows" in out.stderr


def test_token_stats_count_rows_over_the_cutoff(tmp_path, qwen_tokenizer):
    long_answer = "深度学习" * 3000  # well over 4096 tokens, under 8192
    records = RECORDS[:2] + [
        {"conversations": [{"from": "human", "value": "写长文"}, {"from": "gpt", "value": long_answer}]}
    ]
    m = build(str(write_json(tmp_path / "c.json", records)), str(tmp_path / "out"), tokenizer=str(qwen_tokenizer))
    single, multi = m.variants["single"].stats["tokens"], m.variants["multi"].stats["tokens"]
    assert (single["cutoff_len"], single["over_cutoff"]) == (4096, 1)
    assert (multi["cutoff_len"], multi["over_cutoff"]) == (8192, 0)
    assert 4096 < single["max"] < 8192
    # 你好 😀 / its answer in ChatML with the default system prompt: a short, exact-looking count
    assert 20 < single["p50"] < 40


def test_cli_summary_and_the_sample_only_when_asked_for(tmp_path):
    out = neosft("data", "build", "sample", "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert "311 records read, 300 kept" in out.stdout
    assert Manifest.read(str(tmp_path / "out")).source.uri == "sample"
    missing = neosft("data", "build", "--out", tmp_path / "o2")
    assert missing.returncode == 2 and "Missing argument 'SOURCE'" in missing.stderr
    assert not (tmp_path / "o2").exists()


def test_progress_is_logged_as_plain_lines_off_a_terminal(tmp_path, monkeypatch, capsys):
    from neosft.progress import Progress

    monkeypatch.setattr(Progress, "LOG_EVERY_S", 0.0)
    build(str(SAMPLE_CORPUS), str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert "records/s" in err and "MB/s" in err and "\x1b[" not in err


# ---- bad input: one clear line, exit code 2, nothing half-written -------------------------------


@pytest.fixture
def previous_build(tmp_path):
    dest = tmp_path / "out"
    build(str(SAMPLE_CORPUS), str(dest))
    return dest, {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def assert_untouched(previous_build):
    dest, before = previous_build
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before


def test_invalid_json_names_the_byte(tmp_path, previous_build):
    good = json.dumps(RECORDS[:3], ensure_ascii=False).encode()
    bad = good[:-1] + b', {"conversations": [}]'
    (tmp_path / "bad.json").write_bytes(bad)
    assert_user_error(
        neosft("data", "build", tmp_path / "bad.json", "--out", previous_build[0]),
        f"invalid JSON at byte {bad.index(b'[}') + 1}:",
    )
    assert_untouched(previous_build)


def test_invalid_json_in_a_long_file_names_the_exact_byte(tmp_path):
    good = json.dumps(RECORDS * 3000, ensure_ascii=False).encode()  # several MB: many reader chunks
    bad = good[:-1] + b',\n  {"conversations": [1 2]}]'
    (tmp_path / "bad.json").write_bytes(bad)
    assert_user_error(
        neosft("data", "build", tmp_path / "bad.json", "--out", tmp_path / "out"),
        f"invalid JSON at byte {bad.index(b'1 2') + 2}:",
    )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_invalid_jsonl_line_names_the_byte(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", RECORDS[:2])
    bad = path.read_bytes() + b'{"conversations": tru}\n'
    path.write_bytes(bad)
    assert_user_error(
        neosft("data", "build", path, "--out", tmp_path / "out"), f"invalid JSON at byte {bad.index(b'tru')}:"
    )


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "is empty"),
        (b"conversations,value\n", "unsupported format"),
        (b"[1, 2", "ends inside the array"),
        (gzip.compress(b"[" * 10)[:-8], "cannot read"),
    ],
)
def test_unreadable_sources(tmp_path, content, needle, previous_build):
    (tmp_path / "src").write_bytes(content)
    assert_user_error(neosft("data", "build", tmp_path / "src", "--out", previous_build[0]), needle)
    assert_untouched(previous_build)


def test_missing_source_and_unknown_variant(tmp_path):
    assert_user_error(neosft("data", "build", tmp_path / "nope.json", "--out", tmp_path / "out"), "does not exist")
    assert_user_error(
        neosft("data", "build", SAMPLE_CORPUS, "--out", tmp_path / "o", "--variants", "single,pairs"),
        "unknown variant 'pairs'",
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_destination(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_user_error(neosft("data", "build", SAMPLE_CORPUS, "--out", tmp_path / "file" / "out"), "cannot create")


# ---- killed builds ---------------------------------------------------------------------------------


def test_kill_9_at_20_moments_never_shows_partial_data_and_every_rerun_is_identical(tmp_path):
    import random

    source = write_synthetic_corpus(tmp_path / "big.json", 4)
    command = [
        sys.executable,
        "-m",
        "neosft",
        "data",
        "build",
        str(source),
        "--out",
        str(tmp_path / "out"),
        "--shard-rows",
        "1000",
        "--holdout",
        "0",
    ]
    reference = build(str(source), str(tmp_path / "reference"), shard_rows=1000)
    expected = {f: (tmp_path / "reference" / f).read_bytes() for v in reference.variants.values() for f in v.files}
    dest, rng = tmp_path / "out", random.Random(0)
    for _ in range(20):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.2))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (dest / "manifest.json").exists():  # whatever a reader can see must be whole
            for v in Manifest.read(str(dest)).variants.values():
                data = b"".join((dest / f).read_bytes() for f in v.files)
                assert hashlib.sha256(data).hexdigest() == v.sha256
        assert subprocess.run(command, capture_output=True).returncode == 0
        assert {f: (dest / f).read_bytes() for f in expected} == expected
        assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jsonl")) == sorted(expected)
        assert not list(dest.glob(".neosft-staging-*"))
    deadline = time.monotonic() + 30  # an orphaned reader sees its pipe close and exits: wait for that, boundedly
    while (
        survivors := subprocess.run(
            ["pgrep", "-f", f"neosft data build {source}"], capture_output=True, text=True
        ).stdout
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not survivors, "a reader process outlived its killed build"


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path):
    write_synthetic_corpus(tmp_path / "c.json", 2)
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        result = neosft("data", "build", tmp_path / "c.json", "--out", disk / "out")
        assert_user_error(result, "No space left on device")
        assert list((disk / "out").iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)

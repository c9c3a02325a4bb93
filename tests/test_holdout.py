"""`neosft data build --holdout`: records set aside by content before any variant, the same whatever the order."""

from __future__ import annotations

import hashlib
import json
import random

import orjson
import pytest
from conftest import neosft, write_json, write_jsonl

from neosft.artifacts import Manifest
from neosft.data.build import build
from neosft.data.holdout import Holdout
from neosft.data.records import parse_record
from neosft.errors import UserError
from neosft.sample import SAMPLE_CORPUS
from neosft.variants import VARIANTS

RECORDS = json.loads(SAMPLE_CORPUS.read_text())


def _rows(dest, files) -> list[str]:
    return [line for f in files for line in (dest / f).read_text(encoding="utf-8").splitlines()]


def _held(dest) -> list[str]:
    return (dest / Manifest.read(str(dest)).heldout.file).read_text(encoding="utf-8").splitlines()


def documented_key(record) -> int:
    """The key as the module's docstring defines it, of a record as the build's parser normalises it."""
    conversation = parse_record(record)

    def body(text):
        return orjson.dumps(text)[1:-1]  # the JSON-escaped string

    data = b"\x01" if conversation.system is None else b"\x02" + body(conversation.system) + b"\x00"
    data += b"".join(body(h) + b"\x00" + body(g) + b"\x00" for h, g in conversation.rounds)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


USABLE = [r for r in RECORDS if not isinstance(parse_record(r), str)]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    dest = tmp_path_factory.mktemp("full")
    return dest, build(str(SAMPLE_CORPUS), str(dest))


def test_held_out_records_give_no_variant_a_row_and_lose_none(full, tmp_path):
    full_dest, whole = full
    manifest = build(str(SAMPLE_CORPUS), str(tmp_path / "d"), holdout="20%")
    held = manifest.heldout
    assert 30 < held.records < 95 and held.spec == "20%" and "sha256" in held.rule
    assert Manifest.read(str(tmp_path / "d")) == manifest  # the typed manifest round-trips
    assert hashlib.sha256("".join(line + "\n" for line in _held(tmp_path / "d")).encode()).hexdigest() == held.sha256
    for name in VARIANTS:
        train = _rows(tmp_path / "d", manifest.variants[name].files)
        out = _rows(tmp_path / "d", held.variants[name].files)
        assert sorted(train + out) == sorted(_rows(full_dest, whole.variants[name].files))  # nothing lost
        assert held.variants[name].rows == len(out)
    multi_train = set(_rows(tmp_path / "d", manifest.variants["multi"].files))  # one row per record
    assert not multi_train & set(_rows(tmp_path / "d", held.variants["multi"].files))


def test_the_same_records_whatever_the_order(tmp_path):
    shuffled = RECORDS[:]
    random.Random(7).shuffle(shuffled)
    for spec in ("15%", "15%:20", "25"):
        a = build(str(SAMPLE_CORPUS), str(tmp_path / f"a{spec}"), holdout=spec)
        b = build(str(write_jsonl(tmp_path / "shuffled.jsonl", shuffled)), str(tmp_path / f"b{spec}"), holdout=spec)
        assert sorted(_held(tmp_path / f"a{spec}")) == sorted(_held(tmp_path / f"b{spec}"))
        assert a.heldout.records == b.heldout.records > 0


def test_the_rule_is_the_documented_key_threshold_and_cap(tmp_path):
    build(str(SAMPLE_CORPUS), str(tmp_path / "p"), holdout="30%")
    build(str(SAMPLE_CORPUS), str(tmp_path / "c"), holdout="30%:10")
    percent = [documented_key(json.loads(line)) for line in _held(tmp_path / "p")]
    capped = [documented_key(json.loads(line)) for line in _held(tmp_path / "c")]
    assert all(k < 0.3 * 2**64 for k in percent)
    kept_by_all = sorted(k for k in map(documented_key, USABLE) if k < 0.3 * 2**64)
    assert sorted(percent) == [k for k in kept_by_all]  # every record under the threshold
    assert len(capped) <= 10 and sorted(capped) == sorted(percent)[: len(capped)]  # the smallest keys
    # fewer only where the next key's records (identical ones) would not all fit
    assert len(capped) == 10 or sorted(percent)[len(capped)] == sorted(percent)[10]


def test_identical_records_are_held_out_together(tmp_path):
    twin = {"conversations": [{"from": "human", "value": "twin?"}, {"from": "gpt", "value": "yes"}]}
    others = [
        {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]} for i in range(30)
    ]
    below = sum(documented_key(r) < documented_key(twin) for r in others)  # records held out before the twins
    held_counts = set()
    for cap in range(max(1, below - 1), below + 4):  # caps around where the twins fall
        build(str(write_json(tmp_path / "c.json", [twin, *others, twin])), str(tmp_path / f"d{cap}"), holdout=f"{cap}")
        held = _held(tmp_path / f"d{cap}")
        train = _rows(tmp_path / f"d{cap}", Manifest.read(str(tmp_path / f"d{cap}")).variants["multi"].files)
        twins = sum("twin?" in line for line in held)
        assert twins in (0, 2) and twins + sum("twin?" in line for line in train) == 2 and len(held) <= cap
        held_counts.add(twins)
    assert held_counts == {0, 2}  # some caps keep both twins, the others neither


def test_holdout_zero_is_the_full_dataset(full, tmp_path):
    _, whole = full
    manifest = build(str(SAMPLE_CORPUS), str(tmp_path / "z"), holdout="0")
    assert manifest.heldout is None and not (tmp_path / "z" / manifest.parts / "heldout").exists()
    for name in VARIANTS:
        assert manifest.variants[name].sha256 == whole.variants[name].sha256


@pytest.mark.parametrize("spec", ["-1", "1.5", "101%", "10%:", "%", "ten", "5%:x"])
def test_a_bad_spec_is_refused(spec):
    with pytest.raises(UserError, match="--holdout"):
        Holdout.parse(spec)


def test_the_cli_holds_out_by_default_and_reports_it(tmp_path):
    result = neosft("data", "build", "sample", "--out", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    held = Manifest.read(str(tmp_path / "d")).heldout
    assert held.spec == "1%:1000" and held.records >= 1 and "held out" in result.stdout

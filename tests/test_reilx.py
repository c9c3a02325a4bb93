"""`data build --rules reilx` writes the bytes of REILX's published scripts, checked against an oracle: the
scripts as published on the dataset cards (json.load of the whole corpus, one function per record, rows
written with json.dumps(ensure_ascii=False) to a UTF-8 file), changed only to skip and count a record on which
they would have raised instead of stopping."""

from __future__ import annotations

import gzip
import hashlib
import json

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neosft.artifacts import Manifest
from neosft.cli import cli
from neosft.data import published, reilx
from neosft.data.build import build
from neosft.errors import UserError
from neosft.variants import VARIANTS

SCRIPTS = ("conversations", "multi", "single")


# The oracle ------------------------------------------------------------------------------------------------
# REILX/neo_sft_phase2_conversations, verbatim
def convert_conversations_to_sft(conversations):
    sft_data = []
    instruction = ""
    for i, turn in enumerate(conversations):  # noqa: B007  (the script as published)
        if turn["from"] == "human":
            instruction += turn["value"] + "\n\n"
        else:
            sft_data.append({"instruction": instruction.strip(), "input": "", "output": turn["value"]})
            instruction += turn["value"] + "\n\n"
    return sft_data


# REILX/neo_sft_phase2_multi, verbatim
def convert_conversations_to_single_turn(conversations):
    instruction = ""
    output = ""
    for turn in conversations:
        if turn["from"] == "human":
            instruction += turn["value"] + "\n\n"
        else:
            output += turn["value"] + "\n\n"
    return {"instruction": instruction.strip(), "input": "", "output": output.strip()}


# REILX/neo_sft_phase2_single's loop body, verbatim
def process_item(item):
    conversations = item.get("conversations", [])
    if len(conversations) == 2:
        human_value = conversations[0].get("value", "")
        gpt_value = conversations[1].get("value", "")
        output_data = {"instruction": human_value, "output": gpt_value}
        return [output_data]
    return []


PER_RECORD = {
    "conversations": lambda conversation_set: convert_conversations_to_sft(conversation_set["conversations"]),
    "multi": lambda conversation_set: [convert_conversations_to_single_turn(conversation_set["conversations"])],
    "single": process_item,
}


def oracle(corpus, out_folder) -> dict[str, tuple[bytes, int]]:
    """Each script's output file (its bytes) and the records it would have raised on."""
    with open(corpus, encoding="utf-8") as f:
        data = json.load(f)
    result = {}
    for name, per_record in PER_RECORD.items():
        crashed = 0
        with open(out_folder / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for item in data:
                try:
                    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in per_record(item)]
                    for line in lines:
                        line.encode("utf-8")  # the write would raise on a lone surrogate
                except Exception:  # noqa: BLE001 - whatever the script would have raised
                    crashed += 1
                    continue
                for line in lines:
                    f.write(line)
        result[name] = ((out_folder / f"{name}.jsonl").read_bytes(), crashed)
    return result


# Corpora ---------------------------------------------------------------------------------------------------


def turn(role, value):
    return {"from": role, "value": value}


PADDED = "\u00a0\u2028\u3000 \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\u1680\u2000\u200a\u2029\u202f\u205f"
ADVERSARIAL = [
    {"conversations": [turn("human", "hi"), turn("gpt", "hello")]},
    {
        "conversations": [
            turn("system", " be brief "),
            turn("human", "q1"),
            turn("gpt", "a1"),
            turn("human", "q2"),
            turn("gpt", "a2"),
        ]
    },
    {
        "conversations": [
            turn("Human", "capital"),
            turn("user", "user"),
            turn("gpt", "g"),
            turn("chatgpt", "c"),
            turn("assistant", "x"),
        ]
    },
    {"conversations": [turn("gpt", "answer first"), turn("human", "question after")]},
    {"conversations": [turn("human", "one"), turn("human", "two")]},
    {"conversations": [turn("gpt", "g1"), turn("gpt", "g2")]},
    {"conversations": [turn("system", "s"), turn("human", "only")]},
    {"conversations": [turn("human", PADDED + "padded" + PADDED), turn("gpt", PADDED + "out" + PADDED)]},
    {"conversations": [turn("human", PADDED), turn("gpt", PADDED), turn("human", "\u200b\ufeffzero-width\u200b")]},
    {
        "conversations": [
            turn("human", 'ctl \x00\x01\x07\x08\x1b\x7f "q" \\ / </script>'),
            turn("gpt", "\x1f\u2028\u2029😀𝄞\U0010ffff"),
        ]
    },
    {"conversations": [turn("human", "中文" * 3), turn("gpt", "日本語 한국어 عربى")]},
    {"conversations": []},
    {"conversations": ""},
    {"conversations": {}},
    {"conversations": "ab"},  # len 2: single raises on "a".get
    {"conversations": {"a": 1, "b": 2}},  # len 2: single raises on [0]
    {"conversations": [turn("human", "q"), 7]},
    {"conversations": [{"value": "no from"}, turn("gpt", "g")]},
    {"conversations": [{"from": "human"}, {"from": "gpt"}]},  # single writes "" and "", the others raise
    {"conversations": [turn("human", 3), turn("gpt", None)]},
    {"conversations": [turn("human", "q"), turn("gpt", ["a", {"b": 1.5, "c": None}, True, 1e300])]},
    {"conversations": [turn(None, "none role"), turn(1, "numeric role")]},
    {"conversations": [turn("human", "surrogate \ud800 never written"), turn("human", "q")]},  # multi writes it
    {"conversations": [turn("gpt", "emitted \udfff"), turn("human", "q")]},
    {"conversations": [turn("human", "q"), turn("gpt", "a")], "id": "\ud800 elsewhere"},
    {"conversations": [turn("human", "x" * 300_000), turn("gpt", "y" * 200_000), turn("human", "z"), turn("gpt", "w")]},
    {"id": 1},
    {"conversations": None},
    {"conversations": 5},
    [],
    "string record",
    7,
    None,
]
# Texts json.dumps does not make: duplicate keys (the last wins), NaN, Infinity, 1e400, a 4100-digit integer,
# an escaped surrogate pair (one character), an escaped lone surrogate before a letter.
LITERALS = [
    (
        '{"conversations": [{"from": "gpt", "value": "dropped"}], "conversations": [{"from": "human", "value": "kept",'
        ' "value": "last"}, {"from": "gpt", "value": "g", "from": "human"}]}'
    ),
    '{"conversations": [{"from": "human", "value": NaN}, {"from": "gpt", "value": Infinity}]}',
    '{"conversations": [{"from": "human", "value": 1e400}, {"from": "gpt", "value": -0.0}]}',
    '{"conversations": [{"from": "human", "value": ' + "9" * 4100 + '}, {"from": "gpt", "value": "big int"}]}',
    '{"conversations": [{"from": "human", "value": "pair \\ud83d\\ude00"}, {"from": "gpt", "value": "lone \\ud83dA"}]}',
    '{"conversations": [{"from": "human", "value": "esc \\u00e9\\u2028\\/\\b\\f"}, {"from": "gpt", "value": "ok"}]}',
]


def corpus_text(records, literals=()) -> bytes:
    texts = [json.dumps(r, ensure_ascii=False) for r in records] + list(literals)
    return ("[\n" + ",\n".join(texts) + "\n]").encode("utf-8", "backslashreplace")  # a lone surrogate stays escaped


def variant_bytes(dest, manifest: Manifest, name: str) -> bytes:
    return b"".join((dest / f).read_bytes() for f in manifest.variants[name].files)


def assert_scripts_bytes(tmp_path, data: bytes, **options) -> Manifest:
    (tmp_path / "c.json").write_bytes(data)
    (tmp_path / "oracle").mkdir()
    expected = oracle(tmp_path / "c.json", tmp_path / "oracle")
    manifest = build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx", **options)
    assert manifest.rules == "reilx"
    for name in SCRIPTS:
        want, crashed = expected[name]
        v = manifest.variants[name]
        assert variant_bytes(tmp_path / "out", manifest, name) == want, name
        assert (v.sha256, v.bytes, v.rows) == (hashlib.sha256(want).hexdigest(), len(want), want.count(b"\n")), name
        assert sum(v.skipped.values()) == crashed, name
    return manifest


def test_orjson_escapes_every_string_as_json_dumps_does():  # what the rows' fast path rests on
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    assert orjson.dumps(every) == json.dumps(every, ensure_ascii=False).encode()


def test_reilx_rules_write_the_scripts_bytes_on_an_adversarial_corpus(tmp_path):
    manifest = assert_scripts_bytes(tmp_path, corpus_text(ADVERSARIAL, LITERALS))
    v = manifest.variants
    assert v["single"].skipped == {"malformed": 9, "not_utf8": 3}
    assert v["conversations"].skipped == {"malformed": 17, "not_utf8": 2}
    assert b'"\\ud83dA"' not in variant_bytes(tmp_path / "out", manifest, "single")  # the lone surrogate row is skipped
    assert manifest.kept + sum(manifest.skipped.values()) == manifest.source.records


def test_reilx_bytes_are_the_same_across_parts_and_formats(tmp_path):
    records = ADVERSARIAL[:12] * 3
    (tmp_path / "json").mkdir()
    one = assert_scripts_bytes(tmp_path / "json", corpus_text(records), shard_rows=2)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(lines))
    other = build(str(tmp_path / "c.jsonl.gz"), str(tmp_path / "gz"), rules="reilx")
    assert len(one.variants["conversations"].files) > 1
    for name in SCRIPTS:
        assert other.variants[name].sha256 == one.variants[name].sha256
        assert variant_bytes(tmp_path / "gz", other, name) == variant_bytes(tmp_path / "json" / "out", one, name)


def test_a_record_s_lines_cross_in_chunks_and_keep_their_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(reilx, "CHUNK_BYTES", 100)  # the reader process is forked: it sees this too
    long = {"conversations": [turn("human" if i % 2 else "gpt", f"turn {i} " * 20) for i in range(40)]}
    manifest = assert_scripts_bytes(tmp_path, corpus_text([*ADVERSARIAL[:12], long, *ADVERSARIAL[:3]]), shard_rows=7)
    assert manifest.variants["conversations"].rows > 20 and len(manifest.variants["conversations"].files) > 3
    more = reilx.Rules([VARIANTS["conversations"]])
    first = more.record(long)
    assert first[0][1] < 20 and sum(m.lines[1] for m in more.rest()) + first[0][1] == 20


def test_reilx_all_pair_is_the_seed_rule_in_the_scripts_row_format(tmp_path):
    records = [r for r in ADVERSARIAL if "\ud800" not in json.dumps(r) and "\udfff" not in json.dumps(r)]
    (tmp_path / "c.json").write_bytes(corpus_text(records))
    seed = build(str(tmp_path / "c.json"), str(tmp_path / "seed"), variants=["all_pair"])
    reilx = build(str(tmp_path / "c.json"), str(tmp_path / "reilx"), variants=["all_pair"], rules="reilx")
    rows = [json.loads(line) for line in variant_bytes(tmp_path / "seed", seed, "all_pair").splitlines()]
    assert rows and any("system" in r for r in rows)
    want = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    assert variant_bytes(tmp_path / "reilx", reilx, "all_pair") == want
    assert reilx.variants["all_pair"].skipped == {**seed.skipped, "not_utf8": 0}


def test_a_lone_surrogate_in_an_all_pair_row_skips_the_record(tmp_path):
    lone = {"conversations": [turn("human", "\ud800"), turn("gpt", "g")]}
    (tmp_path / "c.json").write_bytes(corpus_text([*ADVERSARIAL[:2], lone]))
    m = build(str(tmp_path / "c.json"), str(tmp_path / "out"), variants=["all_pair"], rules="reilx")
    assert (m.variants["all_pair"].rows, m.variants["all_pair"].skipped["not_utf8"]) == (3, 1)


def test_dataset_info_has_no_input_column_for_reilx_single(tmp_path):
    (tmp_path / "c.json").write_bytes(corpus_text(ADVERSARIAL[:3]))
    build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx")
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["single"]["columns"]["query"] is None
    assert info["conversations"]["columns"]["query"] == "input"


def test_the_manifest_compares_each_variant_with_reilx_published_file(tmp_path, monkeypatch):
    data = corpus_text(ADVERSARIAL[:12])
    (tmp_path / "c.json").write_bytes(data)
    (tmp_path / "oracle").mkdir()
    expected = oracle(tmp_path / "c.json", tmp_path / "oracle")

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    monkeypatch.setattr(published, "SOURCE", published.PublishedFile("local", digest(data), len(data)))
    monkeypatch.setattr(
        published,
        "FILES",
        {
            "conversations": published.PublishedFile(
                "c", digest(expected["conversations"][0]), len(expected["conversations"][0])
            ),
            "multi": published.PublishedFile("m", digest(expected["multi"][0]), None),
            "single": published.PublishedFile("s", digest(b"other bytes"), len(expected["single"][0])),
        },
    )
    m = build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx")
    assert {n: v.published and v.published.equal for n, v in m.variants.items()} == {
        "conversations": True,
        "multi": True,
        "single": False,
        "all_pair": None,
    }
    assert Manifest.read(str(tmp_path / "out")) == m  # the comparison reads back, typed
    seed = build(str(tmp_path / "c.json"), str(tmp_path / "seed"))
    assert not seed.variants["conversations"].published.equal  # the seed rules are not REILX's bytes
    monkeypatch.setattr(published, "SOURCE", published.PublishedFile("local", digest(b"another corpus"), 1))
    assert build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx").variants["multi"].published is None


def test_reilx_rows_get_token_statistics(tmp_path, qwen_tokenizer):
    not_strings = {"conversations": [turn("human", 5), turn("gpt", [1])]}
    (tmp_path / "c.json").write_bytes(corpus_text([*ADVERSARIAL[:12], not_strings]))
    m = build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx", tokenizer=str(qwen_tokenizer))
    for v in m.variants.values():
        assert v.stats["rows"] == v.rows and v.stats["tokens"]["max"] > 0 and v.stats["tokens"]["over_cutoff"] == 0


def test_reilx_refuses_options_its_scripts_do_not_have(tmp_path):
    (tmp_path / "c.json").write_bytes(corpus_text(ADVERSARIAL[:1]))
    for options in ({"joiner": " "}, {"input_prompt": "p"}):
        with pytest.raises(UserError, match="--rules seed only"):
            build(str(tmp_path / "c.json"), str(tmp_path / "out"), rules="reilx", **options)
    command = ["data", "build", str(tmp_path / "c.json"), "--out", str(tmp_path / "o"), "--rules"]
    result = CliRunner().invoke(cli, [*command, "reilx", "--joiner", "|"])
    assert result.exit_code == 2 and "--rules seed only" in result.output
    assert not (tmp_path / "o" / "manifest.json").exists()
    result = CliRunner().invoke(cli, [*command, "card"])
    assert result.exit_code == 2


# Fuzzing against the oracle -------------------------------------------------------------------------------------

text = st.one_of(
    st.text(max_size=12), st.sampled_from(["", " ", PADDED, "\ud800", "a\x00b", '"\\', "\u2028x\u00a0", "😀"])
)
role = st.sampled_from(["human", "Human", "user", "gpt", "chatgpt", "assistant", "system", "", None, 1])
scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
fuzz_turn = st.one_of(
    st.fixed_dictionaries({"from": role, "value": text}),
    st.fixed_dictionaries(
        {"from": role, "value": st.recursive(scalar, lambda c: st.lists(c, max_size=2), max_leaves=3)}
    ),
    st.fixed_dictionaries({"from": role}),
    st.fixed_dictionaries({"value": text}),
    scalar,
)
fuzz_record = st.one_of(
    st.builds(lambda t: {"conversations": t}, st.lists(fuzz_turn, max_size=6)),
    st.builds(
        lambda t: {"conversations": t},
        st.lists(st.fixed_dictionaries({"from": role, "value": text}), min_size=2, max_size=2),
    ),
    st.fixed_dictionaries({"conversations": scalar | st.dictionaries(text, scalar, max_size=2)}),
    scalar,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(fuzz_record, min_size=1, max_size=10), shard_rows=st.sampled_from([1, 3, 100_000]))
def test_reilx_rules_match_the_scripts_on_any_records(tmp_path_factory, records, shard_rows):
    work = tmp_path_factory.mktemp("reilx")
    try:
        assert_scripts_bytes(work, corpus_text(records), shard_rows=shard_rows)
    except UserError as e:  # no record any variant could use: nothing published, and every script raised on all
        assert "no usable record" in str(e) and not (work / "out" / "manifest.json").exists()
        assert all(crashed == len(records) for _, crashed in oracle(work / "c.json", work / "oracle").values())

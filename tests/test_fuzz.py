"""Fuzzing the builder with generated records: it never crashes, every record yields its rows or
exactly one skip reason, the counts add up, and every row reads back as the rules say."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neosft.data.build import build
from neosft.data.records import SKIP_REASONS, parse_record
from neosft.errors import UserError
from neosft.variants import VARIANTS

text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\n\t", "你好", "😀", "\ud800", "a\x00b", '"\\', "\u2028"]),
)
role = st.sampled_from(["human", "user", "gpt", "assistant", "system", "GPT", "Human", "robot", ""])
turn = st.one_of(
    st.fixed_dictionaries({"from": role, "value": text}),
    st.fixed_dictionaries({"from": role, "value": st.one_of(st.none(), st.integers(), text)}),
    st.fixed_dictionaries({"value": text}),
    st.integers(),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | text, lambda c: st.lists(c, max_size=3), max_leaves=5
)
record = st.one_of(
    st.builds(lambda t: {"conversations": t}, st.lists(turn, max_size=8)),
    st.builds(lambda t, extra: {"conversations": t, "id": extra}, st.lists(turn, max_size=8), json_value),
    json_value,
    st.fixed_dictionaries({"conversations": json_value}),
)


def build_or_refusal(source, dest, joiner="\n\n"):
    """The manifest, or None when the build refused a source without one usable record (and published nothing)."""
    try:
        return build(str(source), str(dest), joiner=joiner)
    except UserError as e:
        assert "no usable record" in str(e) and not (dest / "manifest.json").exists()
        return None


def written_rows(dest, manifest, name) -> list[bytes]:
    return b"".join((dest / f).read_bytes() for f in manifest.variants[name].files).splitlines()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(record, max_size=12), joiner=st.sampled_from(["\n\n", "", " | ", "\u3000"]))
def test_builder_holds_for_any_records(tmp_path_factory, records, joiner):
    work = tmp_path_factory.mktemp("fuzz")
    (work / "c.json").write_text(json.dumps(records), encoding="utf-8")  # ASCII: lone surrogates survive as escapes
    manifest = build_or_refusal(work / "c.json", work / "out", joiner)

    outcomes = [parse_record(r) for r in records]
    if manifest is None:
        assert all(isinstance(c, str) for c in outcomes)
        return
    assert manifest.source.records == len(records)
    assert manifest.skipped == {reason: outcomes.count(reason) for reason in SKIP_REASONS}
    assert manifest.kept + sum(manifest.skipped.values()) == len(records)
    for name, variant in VARIANTS.items():
        expected = [
            {"instruction": i, "input": "", "output": o, **({} if c.system is None else {"system": c.system})}
            for c in outcomes
            if not isinstance(c, str)
            for i, o in variant.pairs(c.rounds, joiner)
        ]
        assert [json.loads(line) for line in written_rows(work / "out", manifest, name)] == expected
        assert manifest.variants[name].rows == len(expected)


# Values a parser may alter: lone high and low surrogates, a high one before a non-surrogate escape, real
# pairs, escapes of every kind, and long runs. Every one must come out as the same JSON value, whatever the format.
tricky = st.text(
    alphabet=st.sampled_from(
        ["a", "\ud800", "\udfff", "\ud83d", "\ude00", "A", "😀", "\\", '"', "\n", "\x00", "\u2028", "你"]
    ),
    min_size=1,
    max_size=40,
).filter(lambda v: v.strip())
conversation = st.lists(st.tuples(tricky, tricky), min_size=1, max_size=3).map(
    lambda rounds: {
        "conversations": [t for h, g in rounds for t in ({"from": "human", "value": h}, {"from": "gpt", "value": g})]
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(conversation, min_size=1, max_size=6), ensure_ascii=st.booleans())
def test_values_are_never_altered_in_any_format(tmp_path_factory, records, ensure_ascii):
    work = tmp_path_factory.mktemp("values")
    as_json = lambda r: json.dumps(r, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")  # noqa: E731
    formats = {
        "json": b"[" + b",".join(as_json(r) for r in records) + b"]",
        "jsonl": b"".join(as_json(r) + b"\n" for r in records),
    }
    if not ensure_ascii:  # a lone surrogate cannot be raw UTF-8: such values stay escaped
        formats = {
            k: v.decode("utf-8", "surrogatepass").encode("utf-8", "backslashreplace") for k, v in formats.items()
        }
    meant = json.loads(formats["json"])  # what the JSON text means (an escaped pair is one character, as JSON says)
    parts = {}
    for kind, data in formats.items():
        (work / kind).write_bytes(data)
        manifest = build(str(work / kind), str(work / f"out-{kind}"))
        parts[kind] = {name: written_rows(work / f"out-{kind}", manifest, name) for name in VARIANTS}
        rows = [json.loads(line) for line in parts[kind]["all_pair"]]
        assert [(r["instruction"], r["output"]) for r in rows] == [
            (t["value"], u["value"]) for r in meant for t, u in zip(r["conversations"][::2], r["conversations"][1::2])
        ]
    assert parts["json"] == parts["jsonl"]

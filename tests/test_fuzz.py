"""Fuzzing the builder with generated records: it never crashes, every record yields its rows or
exactly one skip reason, the counts add up, and every row reads back as the rules say."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neosft.data.build import build
from neosft.data.records import SKIP_REASONS, parse_record
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
json_value = st.recursive(st.none() | st.booleans() | st.integers() | text, lambda c: st.lists(c, max_size=3), max_leaves=5)
record = st.one_of(
    st.builds(lambda t: {"conversations": t}, st.lists(turn, max_size=8)),
    st.builds(lambda t, extra: {"conversations": t, "id": extra}, st.lists(turn, max_size=8), json_value),
    json_value,
    st.fixed_dictionaries({"conversations": json_value}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(record, max_size=12), joiner=st.sampled_from(["\n\n", "", " | ", "\u3000"]))
def test_builder_holds_for_any_records(tmp_path_factory, records, joiner):
    work = tmp_path_factory.mktemp("fuzz")
    (work / "c.json").write_text(json.dumps(records), encoding="utf-8")  # ASCII: lone surrogates survive as escapes
    manifest = build(str(work / "c.json"), str(work / "out"), joiner=joiner)

    outcomes = [parse_record(r) for r in records]
    assert manifest.source.records == len(records)
    assert manifest.skipped == {reason: outcomes.count(reason) for reason in SKIP_REASONS}
    assert manifest.kept + sum(manifest.skipped.values()) == len(records)
    for name, variant in VARIANTS.items():
        expected = [
            {"instruction": i, "input": "", "output": o, **({} if c.system is None else {"system": c.system})}
            for c in outcomes if not isinstance(c, str) for i, o in variant.pairs(c.rounds, joiner)
        ]
        lines = (work / "out" / name / "part-00000.jsonl").read_bytes().splitlines()
        assert [json.loads(line) for line in lines] == expected
        assert manifest.variants[name]["rows"] == len(expected)

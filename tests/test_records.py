"""The record rules, one behaviour per test, on hand-written records."""

import pytest

from neosft.data.records import Conversation, parse_record
from neosft.variants import VARIANTS


def turns(*pairs):
    return {"conversations": [{"from": f, "value": v} for f, v in pairs]}


@pytest.mark.parametrize(
    "record",
    [
        ["a list"],
        "a string",
        None,
        {"id": 1},
        {"conversations": "text"},
        {"conversations": []},
        {"conversations": ["not an object"]},
        {"conversations": [{"from": "human"}, {"from": "gpt", "value": "a"}]},
        {"conversations": [{"value": "q"}, {"from": "gpt", "value": "a"}]},
        turns(("human", 1), ("gpt", "a")),
        turns(("human", "q"), ("gpt", None)),
        {"conversations": [{"from": ["human"], "value": "q"}, {"from": "gpt", "value": "a"}]},
        turns(("robot", "q"), ("gpt", "a")),
        turns(("human", "q"), ("gpt", "a"), ("bot", "")),  # malformed wins over later checks
    ],
)
def test_malformed(record):
    assert parse_record(record) == "malformed"


@pytest.mark.parametrize(
    "record",
    [turns(("system", "s")), turns(("human", "q")), turns(("system", "s"), ("user", "q"))],
)
def test_no_rounds_after_dropping_the_unanswered_question(record):
    assert parse_record(record) == "no_rounds"


@pytest.mark.parametrize(
    "record",
    [
        turns(("gpt", "a")),
        turns(("gpt", "a"), ("human", "q")),
        turns(("human", "q"), ("human", "q2")),
        turns(("human", "q"), ("gpt", "a"), ("gpt", "a2")),
        turns(("human", "q"), ("system", "s"), ("gpt", "a")),
        turns(("system", "s"), ("system", "s2"), ("human", "q"), ("gpt", "a")),
        turns(("human", "q"), ("gpt", "a"), ("human", "q2"), ("human", "q3")),
    ],
)
def test_bad_turn_order(record):
    assert parse_record(record) == "bad_turn_order"


@pytest.mark.parametrize("blank", ["", " ", "\n\t", "\u3000"])
def test_empty_turn(blank):
    assert parse_record(turns(("human", blank), ("gpt", "a"))) == "empty_turn"
    assert parse_record(turns(("human", "q"), ("gpt", blank))) == "empty_turn"


def test_order_of_checks_no_rounds_before_empty_turn():
    assert parse_record(turns(("system", "s"), ("human", " "))) == "no_rounds"


def test_order_of_checks_bad_order_before_empty_turn():
    assert parse_record(turns(("gpt", " "), ("human", "q"))) == "bad_turn_order"


def test_an_empty_trailing_question_is_dropped_not_counted():
    assert parse_record(turns(("human", "q"), ("gpt", "a"), ("human", "  "))) == Conversation([("q", "a")])


def test_roles_are_case_insensitive_and_aliases_map():
    conv = parse_record(turns(("SYSTEM", "sys"), ("User", "q1"), ("Assistant", "a1"), ("HUMAN", "q2"), ("GPT", "a2")))
    assert conv == Conversation([("q1", "a1"), ("q2", "a2")], "sys")


def test_values_are_kept_unchanged():
    q, a = "  你好，世界 😀\n", '\tanswer with "quotes" and \\ backslash  '
    assert parse_record(turns(("human", q), ("gpt", a))) == Conversation([(q, a)])


def test_other_keys_are_ignored():
    record = {"id": 7, "source": "x", **turns(("human", "q"), ("gpt", "a"))}
    assert parse_record(record) == Conversation([("q", "a")])


ROUNDS = [("h1", "g1"), ("h2", "g2"), ("h3", "g3")]


def pairs(variant, rounds=ROUNDS, joiner="\n\n"):
    return list(VARIANTS[variant].pairs(rounds, joiner))


def test_conversations_rule_carries_the_history():
    assert pairs("conversations", joiner="|") == [("h1", "g1"), ("h1|g1|h2", "g2"), ("h1|g1|h2|g2|h3", "g3")]


def test_multi_rule_joins_all_questions_and_all_answers():
    assert pairs("multi") == [("h1\n\nh2\n\nh3", "g1\n\ng2\n\ng3")]
    assert pairs("multi", ROUNDS[:1]) == [("h1", "g1")]


def test_single_rule_keeps_single_round_records_only():
    assert pairs("single") == []
    assert pairs("single", ROUNDS[:1]) == [("h1", "g1")]


def test_all_pair_rule_has_no_history():
    assert pairs("all_pair") == ROUNDS

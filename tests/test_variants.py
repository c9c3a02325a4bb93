"""The variant table is the one source of truth: pin every number, and the CLI prints it."""

import json

import pytest
from conftest import neosft
from hypothesis import given, settings
from hypothesis import strategies as st

from neosft.errors import UserError
from neosft.variants import (
    NUM_DEVICES,
    SHARED,
    TOTAL_EVAL_BATCH,
    TOTAL_TRAIN_BATCH,
    VARIANTS,
    get,
    gradient_accumulation,
    per_device_eval_batch,
)

SEED_TABLE = {  # variant: (learning_rate, cutoff_len), as the seed run used them
    "conversations": (5e-6, 8192),
    "multi": (5e-5, 8192),
    "single": (5e-5, 4096),
    "all_pair": (2e-5, 4096),
}


def test_every_variant_has_the_seed_learning_rate_and_cutoff():
    assert {n: (v.learning_rate, v.cutoff_len) for n, v in VARIANTS.items()} == SEED_TABLE


def test_shared_hyperparameters_are_the_seed_ones():
    assert SHARED == {
        "per_device_train_batch_size": 1,
        "num_train_epochs": 5,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "adam_beta1": 0.9,
        "adam_beta2": 0.999,
        "adam_epsilon": 1e-8,
        "seed": 42,
    }
    assert NUM_DEVICES == 8
    assert (TOTAL_TRAIN_BATCH, TOTAL_EVAL_BATCH) == (64, 64)
    assert (gradient_accumulation(NUM_DEVICES), per_device_eval_batch(NUM_DEVICES)) == (8, 8)  # the seed's 1 x 8 x 8
    assert gradient_accumulation(NUM_DEVICES, per_device=2) == 4


@pytest.mark.parametrize("world", [1, 2, 4, 8, 16, 32, 64])
def test_total_batch_is_64_at_any_world_size_that_divides_it(world):
    assert world * 1 * gradient_accumulation(world) == TOTAL_TRAIN_BATCH
    assert world * per_device_eval_batch(world) == TOTAL_EVAL_BATCH


@pytest.mark.parametrize("world", [3, 5, 12, 24, 128])
def test_a_world_size_that_does_not_divide_the_batch_is_refused(world):
    with pytest.raises(UserError, match=f"not divisible by {world} device"):
        gradient_accumulation(world)
    with pytest.raises(UserError, match="eval batch 64"):
        per_device_eval_batch(world)


def test_hyperparameters_merge_the_variant_and_shared_values():
    hp = VARIANTS["single"].hyperparameters()
    assert hp["learning_rate"] == 5e-5 and hp["cutoff_len"] == 4096 and hp["seed"] == 42


def test_unknown_variant_names_the_choices():
    with pytest.raises(UserError, match="conversations, multi, single, all_pair"):
        get("pairs")


def test_cli_prints_the_table():
    out = neosft("variants")
    assert out.returncode == 0
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:5]}
    assert {n: (float(row[1]), int(row[2])) for n, row in lines.items()} == SEED_TABLE
    assert "total train batch 64" in out.stdout


def test_cli_prints_the_table_as_json():
    table = json.loads(neosft("variants", "--json").stdout)
    assert {n: (v["learning_rate"], v["cutoff_len"]) for n, v in table["variants"].items()} == SEED_TABLE
    assert table["variants"]["multi"]["warmup_ratio"] == 0.1
    assert table["total_train_batch_size"] == 64


@settings(max_examples=200, deadline=None)
@given(
    conversations=st.lists(
        st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), min_size=1, max_size=6), max_size=4
    ),
    joiner=st.sampled_from(["", "\n\n", " | "]),
)
def test_each_rule_on_lengths_equals_the_rule_on_strings(conversations, joiner):
    """The rule on a batch of conversations' lengths gives the lengths of all their rows, in order."""
    for variant in VARIANTS.values():
        rows = [row for rounds in conversations for row in variant.pairs(rounds, joiner)]
        lengths = variant.lengths([[(len(h), len(g)) for h, g in rounds] for rounds in conversations], len(joiner))
        assert lengths == ([len(i) for i, _ in rows], [len(o) for _, o in rows]), variant.name

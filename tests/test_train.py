"""The trainer's pieces in one process: arguments from the table, tokens, masking, truncation, packing, plots."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import neosft
from hypothesis import given
from hypothesis import strategies as st

from neosft.artifacts import Manifest
from neosft.chat import segments
from neosft.data.build import build
from neosft.errors import UserError
from neosft.sample import SAMPLE_CORPUS
from neosft.train.args import arguments_record, hyperparameters, parse_overrides, training_arguments
from neosft.train.packing import (
    VARLEN_ATTENTION,
    FlattenCollator,
    PackedDataset,
    SampleDataset,
    pack,
    register_varlen_attention,
)
from neosft.train.tokenize import IGNORE_INDEX, tokenize, truncated_lengths
from neosft.variants import VARIANTS


def _arguments(variant: str, sets: list[str], tmp_path):
    overrides = parse_overrides(sets)
    hp = hyperparameters(variant, overrides)
    args = training_arguments(hp, overrides, tmp_path, deepspeed=None, max_steps=-1, save_steps=100, evaluate=False)
    return json.loads(json.dumps(arguments_record(hp, overrides, args))), args  # as run.json stores it


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_saved_arguments_match_the_table(variant, tmp_path):
    record, args = _arguments(variant, [], tmp_path)
    table = VARIANTS[variant].hyperparameters()
    assert record["hyperparameters"] == table and record["overrides"] == {}
    for key, value in table.items():
        if key == "warmup_ratio":  # transformers 5 has it as a fractional warmup_steps
            assert args.get_warmup_steps(1000) == round(1000 * value)
        elif key != "cutoff_len":  # not a TrainingArguments field; the tokenizer applies it
            assert record["training_arguments"][key] == value, key


def test_set_overrides_any_field_and_is_recorded(tmp_path):
    record, _ = _arguments("single", ["learning_rate=1e-4", "cutoff_len=512", "lr_scheduler_type=linear",
                                   "logging_steps=5"], tmp_path)
    assert record["overrides"] == {"learning_rate": 1e-4, "cutoff_len": 512, "lr_scheduler_type": "linear",
                                   "logging_steps": 5}
    assert record["hyperparameters"]["learning_rate"] == 1e-4 and record["hyperparameters"]["cutoff_len"] == 512
    assert record["training_arguments"]["learning_rate"] == 1e-4
    assert record["training_arguments"]["lr_scheduler_type"] == "linear"
    assert record["training_arguments"]["logging_steps"] == 5
    with pytest.raises(UserError, match="--set learnin_rate"):
        _arguments("single", ["learnin_rate=1"], tmp_path)
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["learning_rate"])


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(8, 4096))
def test_truncation_cuts_prompt_and_response_in_proportion(prompt, response, cutoff):
    p, r = truncated_lengths(prompt, response, cutoff)
    assert 0 <= p <= prompt and 0 <= r <= response
    if prompt + response > cutoff:
        assert p + r == cutoff
        if 2 * response < cutoff:
            assert r == response  # a short response stays whole
        elif 2 * prompt < cutoff:
            assert p == prompt  # a short prompt stays whole
        else:  # both long: each keeps its share, within one token
            assert abs(r - cutoff * response / (prompt + response)) < 1


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_loss_only_on_the_assistant_tokens(tokenizer):
    rows = [{"instruction": "What is 2+2?", "input": "Answer briefly.", "output": "4"},
            {"instruction": "Hi", "input": "", "output": "Hello!", "system": "You are terse."}]
    tokens = tokenize(rows, tokenizer, cutoff_len=4096)
    assert len(tokens) == 2 and tokens.truncated == 0
    for i, row in enumerate(rows):
        sample = tokens.sample(i)
        prompt, response = segments(row["instruction"], row["input"], row["output"], row.get("system"))
        n = sum(1 for label in sample["labels"] if label == IGNORE_INDEX)
        assert tokenizer.decode(sample["input_ids"][:n]) == prompt
        assert tokenizer.decode(sample["labels"][n:]) == response == f"{row['output']}<|im_end|>\n"
        assert all(label != IGNORE_INDEX for label in sample["labels"][n:])
    assert "Answer briefly." in tokenizer.decode(tokens.sample(0)["input_ids"])
    assert "You are terse." in tokenizer.decode(tokens.sample(1)["input_ids"])
    assert "You are a helpful assistant." in tokenizer.decode(tokens.sample(0)["input_ids"])


def test_long_rows_are_truncated_counted_and_kept(tokenizer):
    rows = [{"instruction": "question " * 200, "input": "", "output": "answer " * 300},
            {"instruction": "short", "input": "", "output": "answer " * 300},
            {"instruction": "ok", "input": "", "output": "fine"}]
    tokens = tokenize(rows, tokenizer, cutoff_len=128)
    assert len(tokens) == 3 and tokens.truncated == 2
    assert list(tokens.lengths[:2]) == [128, 128] and tokens.lengths[2] < 128
    prompt_len = len(tokenizer(segments("short", "", "")[0], add_special_tokens=False)["input_ids"])
    assert tokens.prompt_lens[1] == prompt_len  # a short prompt stays whole; the response takes the rest
    assert 0 < tokens.prompt_lens[0] < 128


@given(st.lists(st.integers(1, 100), min_size=1, max_size=200))
def test_packing_places_every_sample_once_within_capacity(lengths):
    bins = pack(np.array(lengths), 100)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)


@pytest.mark.parametrize("attention", ["sdpa", "eager", VARLEN_ATTENTION])
def test_packed_loss_equals_unpacked_loss(attention, tiny_model, tokenizer, sample_dataset):
    from transformers import AutoConfig, AutoModelForCausalLM, DataCollatorForSeq2Seq

    register_varlen_attention()
    rows = [json.loads(line) for line in (sample_dataset / Manifest.read(str(sample_dataset)).variants["single"].files[0]).open()][:12]
    tokens = tokenize(rows, tokenizer, cutoff_len=256)
    torch.manual_seed(0)  # large random weights, so that what a token attends to shows in the loss
    # as the recipe loads it: without a KV cache, which would hide the sample borders from the mask
    config = AutoConfig.from_pretrained(tiny_model, initializer_range=0.5, use_cache=False)
    unpacked_model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    model = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=attention).eval()
    model.load_state_dict(unpacked_model.state_dict())
    packed_set = PackedDataset(tokens, np.arange(len(tokens)), capacity=1024)
    assert len(packed_set) < len(tokens)  # several samples per sequence
    packed = FlattenCollator()([packed_set[i] for i in range(len(packed_set))])
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)(
        list(SampleDataset(tokens, np.arange(len(tokens)))))
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        packed_loss = model(**packed).loss
        padded_loss = unpacked_model(**padded).loss
        leaky = unpacked_model(input_ids=packed["input_ids"], labels=packed["labels"]).loss  # one long sequence
    assert packed_loss.item() == pytest.approx(padded_loss.item(), rel=1e-5)
    assert abs(leaky.item() - padded_loss.item()) > 1e-2  # attention across samples would change it


def test_plot_compares_runs(tmp_path):
    runs = []
    for name, slope in (("single", 0.1), ("multi", 0.2)):
        run = tmp_path / name
        run.mkdir()
        (run / "loss.jsonl").write_text("".join(json.dumps({"current_steps": s, "loss": 5 - slope * s}) + "\n"
                                                for s in range(1, 20)))
        runs.append(run)
    result = neosft("plot", *runs, "--out", tmp_path / "cmp.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = neosft("plot", tmp_path / "nowhere", "--out", tmp_path / "x.png")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_refuses_a_dataset_that_does_not_match(tmp_path, tiny_model):
    only_single = tmp_path / "data"
    build(str(SAMPLE_CORPUS), str(only_single), ["single"])
    common = ["--output", tmp_path / "out", "--model", tiny_model, "--deepspeed", "none", "--max-steps", "1",
              "--work-dir", tmp_path / "work"]
    wrong_variant = neosft("train", "--variant", "multi", "--data", only_single, *common)
    assert wrong_variant.returncode == 2 and "has no 'multi' dataset" in wrong_variant.stderr
    assert len(wrong_variant.stderr.strip().splitlines()) == 1
    part = only_single / Manifest.read(str(only_single)).variants["single"].files[0]
    part.write_text(part.read_text().replace('"output":"', '"output":"tampered ', 1))
    tampered = neosft("train", "--variant", "single", "--data", only_single, *common)
    assert tampered.returncode == 2 and "do not match the sha256" in tampered.stderr, tampered.stderr[-2000:]
    assert "Traceback" not in tampered.stderr
    shutil.rmtree(only_single)
    assert "build the dataset first" in neosft("train", "--variant", "single", "--data", only_single, *common).stderr

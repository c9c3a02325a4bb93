"""The trainer's pieces in one process: arguments from the table, tokens, masking, truncation, packing, plots."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import neosft
from hypothesis import given
from hypothesis import strategies as st

from neosft.artifacts import LossRecord, Manifest, losses_jsonl, read_losses
from neosft.chat import DEFAULT_SYSTEM, ChatFormat, segments
from neosft.data.build import build
from neosft.errors import UserError
from neosft.sample import SAMPLE_CORPUS
from neosft.train.args import arguments_record, checked_overrides, parse_overrides, training_arguments
from neosft.train.packing import (
    VARLEN_ATTENTION,
    FlattenCollator,
    PackedDataset,
    SampleDataset,
    pack,
    register_varlen_attention,
)
from neosft.train.tiny import QWEN2_CHAT_TEMPLATE
from neosft.train.tokenize import IGNORE_INDEX, tokenize, truncated_lengths
from neosft.variants import VARIANTS


def _arguments(variant: str, sets: list[str], tmp_path, world_size: int = 8):
    overrides, hp = checked_overrides(variant, sets)  # as `neosft train` checks them
    args = training_arguments(
        hp, overrides, tmp_path, deepspeed=None, max_steps=-1, save_steps=100, evaluate=False, world_size=world_size
    )
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
    assert (args.gradient_accumulation_steps, args.per_device_eval_batch_size) == (8, 8)  # at the seed's 8 devices


@pytest.mark.parametrize("world, accumulation, eval_batch", [(1, 64, 64), (2, 32, 32), (4, 16, 16), (16, 4, 4)])
def test_batches_keep_the_total_at_any_world_size(world, accumulation, eval_batch, tmp_path):
    _, args = _arguments("single", [], tmp_path, world_size=world)
    assert (args.gradient_accumulation_steps, args.per_device_eval_batch_size) == (accumulation, eval_batch)
    with pytest.raises(UserError, match="not divisible by 3 device"):
        _arguments("single", [], tmp_path, world_size=3)
    with pytest.raises(UserError, match="--set per_device_eval_batch_size=N"):
        _arguments("single", ["gradient_accumulation_steps=5"], tmp_path, world_size=3)
    sets = ["gradient_accumulation_steps=5", "per_device_eval_batch_size=7"]
    record, args = _arguments("single", sets, tmp_path, world_size=3)
    assert (args.gradient_accumulation_steps, args.per_device_eval_batch_size) == (5, 7)
    assert record["overrides"] == {"gradient_accumulation_steps": 5, "per_device_eval_batch_size": 7}


def test_set_overrides_any_field_and_is_recorded(tmp_path):
    record, _ = _arguments(
        "single", ["learning_rate=1e-4", "cutoff_len=512", "lr_scheduler_type=linear", "logging_steps=5"], tmp_path
    )
    assert record["overrides"] == {
        "learning_rate": 1e-4,
        "cutoff_len": 512,
        "lr_scheduler_type": "linear",
        "logging_steps": 5,
    }
    assert record["hyperparameters"]["learning_rate"] == 1e-4 and record["hyperparameters"]["cutoff_len"] == 512
    assert record["training_arguments"]["learning_rate"] == 1e-4
    assert record["training_arguments"]["lr_scheduler_type"] == "linear"
    assert record["training_arguments"]["logging_steps"] == 5
    with pytest.raises(UserError, match="--set learnin_rate"):
        _arguments("single", ["learnin_rate=1"], tmp_path)
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["learning_rate"])


def llamafactory_infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory 0.9.x `data/processor/processor_utils.py: infer_seqlen`, verbatim."""
    if target_len * 2 < cutoff_len:  # truncate source
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:  # truncate target
        max_target_len = cutoff_len - source_len
    else:  # truncate both
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))

    new_target_len = min(max_target_len, target_len)
    max_source_len = max(cutoff_len - new_target_len, 0)
    new_source_len = min(max_source_len, source_len)
    return new_source_len, new_target_len


def test_truncation_is_llamafactory_infer_seqlen_on_a_grid():
    assert truncated_lengths(63, 87, 100) == (43, 57)  # where `cutoff * response / total` would keep (42, 58)
    lengths = [*range(1, 130), 150, 255, 256, 257, 1000, 2047, 2048, 4095, 4096, 4097, 5000, 8191, 8192, 9000]
    cutoffs = [*range(1, 130), 255, 256, 1000, 1023, 4096, 8192]
    differ = 0
    for cutoff in cutoffs:
        for prompt in lengths:
            for response in lengths:
                ours = truncated_lengths(prompt, response, cutoff)
                assert ours == llamafactory_infer_seqlen(prompt, response, cutoff), (prompt, response, cutoff)
                whole = min(cutoff * response // (prompt + response), response)
                differ += 2 * prompt >= cutoff and 2 * response >= cutoff and ours[1] != whole
    assert differ > 0  # the grid holds cases where the two expressions part


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


def llamafactory_qwen_sample(row: dict, tokenizer, cutoff_len: int, default_system: str = DEFAULT_SYSTEM):
    """What LLaMA-Factory's supervised processor makes of one alpaca row with its `qwen` template
    (train_on_prompt off): each formatted slot encoded on its own, `system or default_system`, `infer_seqlen`."""
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    user = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    source = encode(f"<|im_start|>system\n{row.get('system') or default_system}<|im_end|>\n") + encode(
        f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
    target = encode(f"{row['output']}<|im_end|>\n")
    source_len, target_len = llamafactory_infer_seqlen(len(source), len(target), cutoff_len)
    return source[:source_len] + target[:target_len], [IGNORE_INDEX] * source_len + target[:target_len]


def _rows(sample_dataset, variant: str, limit: int = 60) -> list[dict]:
    part = sample_dataset / Manifest.read(str(sample_dataset)).variants[variant].files[0]
    rows = [json.loads(line) for line in part.open()][:limit]
    return rows + [{**rows[0], "system": ""}, {**rows[1], "system": "You are terse."}, {**rows[2], "input": "more"}]


@pytest.fixture(scope="module")
def qwen2_tokenizer(qwen_tokenizer):
    """The real Qwen2 BPE (local files) with Qwen2-7B-Instruct's chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen_tokenizer)
    tokenizer.chat_template = QWEN2_CHAT_TEMPLATE
    return tokenizer


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_sample_equals_llamafactory_at_the_variant_cutoff_and_small_ones(
    variant, sample_dataset, qwen2_tokenizer
):
    rows = _rows(sample_dataset, variant)
    for cutoff in (VARIANTS[variant].cutoff_len, 100, 37, 16):
        tokens = tokenize(rows, qwen2_tokenizer, cutoff)
        for i, row in enumerate(rows):
            ids, labels = llamafactory_qwen_sample(row, qwen2_tokenizer, cutoff)
            assert tokens.sample(i) == {"input_ids": ids, "labels": labels}, (variant, cutoff, i)


@pytest.mark.parametrize("which", ["tiny", "qwen2"])
def test_the_chat_template_and_chatml_give_identical_tokens(which, sample_dataset, tokenizer, qwen2_tokenizer):
    tok = tokenizer if which == "tiny" else qwen2_tokenizer
    assert tok.chat_template == QWEN2_CHAT_TEMPLATE
    rows = [row for variant in VARIANTS for row in _rows(sample_dataset, variant, 30)]
    template, chatml = ChatFormat(tok), ChatFormat(tok, use_template=False)
    assert (template.name, chatml.name) == ("tokenizer chat template", "ChatML")
    for system in (DEFAULT_SYSTEM, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."):
        a = tokenize(rows, tok, 64, ChatFormat(tok, system))
        b = tokenize(rows, tok, 64, ChatFormat(tok, system, use_template=False))
        assert all(
            np.array_equal(x, y) for x, y in ((a.ids, b.ids), (a.offsets, b.offsets), (a.prompt_lens, b.prompt_lens))
        )
        assert a.truncated == b.truncated > 0


def test_an_empty_system_gets_the_default_and_the_default_is_a_setting(tokenizer):
    row = {"instruction": "Hi", "input": "", "output": "Hello!"}
    for chat in (ChatFormat(tokenizer), ChatFormat(tokenizer, use_template=False)):
        assert chat(**row, system="")[0] == chat(**row, system=None)[0] == chat(**row, system=DEFAULT_SYSTEM)[0]
        assert "You are a helpful assistant." in chat(**row, system="")[0]
    custom = ChatFormat(tokenizer, "Be brief.")
    assert custom(**row, system="")[0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert custom(**row, system="Be kind.")[0].startswith("<|im_start|>system\nBe kind.<|im_end|>\n")


def test_a_template_whose_prompt_is_not_a_prefix_is_refused(tokenizer):
    odd = copy.copy(tokenizer)
    odd.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    )
    with pytest.raises(UserError, match="--chat-format chatml"):
        ChatFormat(odd)("Hi", "", "Hello")


def test_loss_only_on_the_assistant_tokens(tokenizer):
    rows = [
        {"instruction": "What is 2+2?", "input": "Answer briefly.", "output": "4"},
        {"instruction": "Hi", "input": "", "output": "Hello!", "system": "You are terse."},
    ]
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
    rows = [
        {"instruction": "question " * 200, "input": "", "output": "answer " * 300},
        {"instruction": "short", "input": "", "output": "answer " * 300},
        {"instruction": "ok", "input": "", "output": "fine"},
    ]
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
    rows = [
        json.loads(line)
        for line in (sample_dataset / Manifest.read(str(sample_dataset)).variants["single"].files[0]).open()
    ][:12]
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
        list(SampleDataset(tokens, np.arange(len(tokens))))
    )
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        packed_loss = model(**packed).loss
        padded_loss = unpacked_model(**padded).loss
        leaky = unpacked_model(input_ids=packed["input_ids"], labels=packed["labels"]).loss  # one long sequence
    assert packed_loss.item() == pytest.approx(padded_loss.item(), rel=1e-5)
    assert abs(leaky.item() - padded_loss.item()) > 1e-2  # attention across samples would change it


def _losses(slope: float, steps: int = 19) -> list[LossRecord]:
    return [
        LossRecord(
            current_steps=s,
            total_steps=steps,
            epoch=s / steps,
            total_tokens=100 * s,
            throughput=10.0,
            percentage=100 * s / steps,
            elapsed_s=float(s),
            elapsed_time="0:00:01",
            remaining_time="0:00:01",
            loss=5 - slope * s,
            lr=1e-5,
        )
        for s in range(1, steps + 1)
    ]


def test_loss_records_round_trip_and_a_bad_line_is_one_clear_error():
    records = [*_losses(0.1, 3), dataclasses.replace(_losses(0.1, 3)[-1], loss=None, eval_loss=4.0)]
    data = losses_jsonl(records)
    assert read_losses(data) == records
    assert b"eval_loss" not in data.splitlines()[0] and b'"loss"' not in data.splitlines()[-1]
    with pytest.raises(UserError, match="loss.jsonl line 2 is not a loss record"):
        read_losses(data.splitlines()[0] + b'\n{"step": 2}\n')


def test_plot_compares_runs(tmp_path):
    runs = []
    for name, slope in (("single", 0.1), ("multi", 0.2)):
        run = tmp_path / name
        run.mkdir()
        (run / "loss.jsonl").write_bytes(losses_jsonl(_losses(slope)))
        runs.append(run)
    result = neosft("plot", *runs, "--out", tmp_path / "cmp.png")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = neosft("plot", tmp_path / "nowhere", "--out", tmp_path / "x.png")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_refuses_a_dataset_that_does_not_match(tmp_path, tiny_model):
    only_single = tmp_path / "data"
    build(str(SAMPLE_CORPUS), str(only_single), ["single"])
    common = [
        "--output",
        tmp_path / "out",
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--max-steps",
        "1",
        "--work-dir",
        tmp_path / "work",
    ]
    wrong_variant = neosft("train", "--variant", "multi", "--data", only_single, *common)
    assert wrong_variant.returncode == 2 and "has no 'multi' dataset" in wrong_variant.stderr
    assert len(wrong_variant.stderr.strip().splitlines()) == 1
    part = only_single / Manifest.read(str(only_single)).variants["single"].files[0]
    part.write_text(part.read_text().replace('"output":"', '"output":"tampered ', 1))
    tampered = neosft("train", "--variant", "single", "--data", only_single, *common)
    assert tampered.returncode == 2 and "do not match the sha256" in tampered.stderr, tampered.stderr[-2000:]
    assert "Traceback" not in tampered.stderr
    shutil.rmtree(only_single)
    assert "no manifest.json" in neosft("train", "--variant", "single", "--data", only_single, *common).stderr


def test_the_loss_log_reaches_output_every_few_seconds_and_at_the_end(tmp_path, monkeypatch):
    """The uploader's timer, driven by a clock this test moves: an upload once `every_s` passed since the last,
    none in between, and every record at the end."""
    from transformers import TrainerState

    from neosft.storage import location
    from neosft.train import lossupload
    from neosft.train.losslog import LossLog

    now = [100.0]
    monkeypatch.setattr(lossupload.time, "monotonic", lambda: now[0])
    log, state = LossLog(), TrainerState(max_steps=6, is_world_process_zero=True)
    uploader = lossupload.LossUploader(location(tmp_path), log, "single", 1.0, None)
    log.on_train_begin(None, state, None)
    uploaded = []
    for step, at in enumerate((100.5, 101.0, 101.5, 101.9, 102.2, 102.4), 1):
        now[0] = at
        log.on_step_begin(None, state, None)
        state.global_step, state.epoch, state.num_input_tokens_seen = step, step / 6, 10 * step
        logs = {"loss": 2.0 / step, "learning_rate": 1e-5, "grad_norm": 1.0}
        log.on_log(None, state, None, logs=logs)
        uploader.on_log(None, state, None, logs=logs)
        uploader.wait()
        uploaded.append(
            len(read_losses((tmp_path / "loss.jsonl").read_bytes())) if (tmp_path / "loss.jsonl").exists() else 0
        )
    assert uploaded == [0, 2, 2, 2, 5, 5]  # at 101.0 (1 s after the start) and 102.2 (1.2 s after that)
    uploader.final()
    assert len(read_losses((tmp_path / "loss.jsonl").read_bytes())) == 6
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"

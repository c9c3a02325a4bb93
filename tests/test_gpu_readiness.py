"""What the user sets is what runs on a GPU: activation checkpointing (asked for, or from the memory plan), and
LLaMA-Factory's `val_size` split and row order, checked against the `datasets` and transformers code it runs."""

from __future__ import annotations

import json

import pytest
from conftest import assert_user_error, neosft

from neosft.artifacts import RunRecord
from neosft.errors import UserError
from neosft.storage import location
from neosft.train.checkpointing import decide
from neosft.train.dataset import held_out, split
from neosft.variants import LORA, QWEN2_7B


def _decide(overrides: dict, method: str, stage: str, cutoff: int, gpu_gb: float | None = 80):
    lora = LORA if method == "lora" else None
    return decide(
        overrides, gpu_memory_gb=gpu_gb, stage=stage, gpus=8, cutoff_len=cutoff, config=QWEN2_7B, lora=lora, liger=False
    )


def test_checkpointing_is_off_where_the_plan_says_the_step_fits():
    lora = _decide({}, "lora", "zero2", 4096)
    assert not lora.enabled and "within" in lora.reason and "cutoff_len 4096" in lora.reason
    full = _decide({}, "full", "zero3", 8192)
    assert full.enabled and "over" in full.reason
    assert not _decide({}, "full", "zero3", 8192, gpu_gb=None).enabled  # CPU


def test_the_users_checkpointing_wins_under_either_name():
    assert _decide({"gradient_checkpointing": True}, "lora", "zero2", 4096).enabled
    assert not _decide({"gradient_checkpointing": False}, "full", "zero3", 8192).enabled
    assert _decide({"activation_checkpointing": True}, "lora", "zero2", 4096, gpu_gb=None).enabled
    with pytest.raises(UserError, match="disagree"):
        _decide({"gradient_checkpointing": True, "activation_checkpointing": False}, "lora", "zero2", 4096)


@pytest.mark.parametrize("samples, val_size", [(10, 0.05), (10, 0.1), (101, 0.1), (1000, 0.0015), (7, 0.5)])
def test_val_size_holds_out_what_llamafactory_does(samples, val_size):
    """LLaMA-Factory's split_dataset calls `Dataset.train_test_split(test_size=val_size, seed=seed)`: the real one
    here gives the same held-out and training rows, in the same order."""
    from datasets import Dataset

    theirs = Dataset.from_dict({"i": list(range(samples))}).train_test_split(test_size=val_size, seed=42)
    train, held = split(samples, val_size, 42)
    assert held_out(samples, val_size) == len(theirs["test"]) == len(held)
    assert list(held) == theirs["test"]["i"] and list(train) == theirs["train"]["i"]


def test_without_val_size_rows_train_in_llamafactorys_order(tiny_model, tmp_path):
    """With nothing held out LLaMA-Factory keeps the file's order and its Trainer (`_get_train_sampler`, the default
    RandomSampler unless disable_shuffling) shuffles it; neosft's Trainer then yields the same rows batch for batch."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    train, held = split(40, 0.0, 42)
    assert list(train) == list(range(40)) and not len(held)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=4,
        use_cpu=True,
        seed=42,
        report_to="none",
        remove_unused_columns=False,
    )

    def batches(dataset) -> list[list[int]]:
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=lambda rows: rows)
        torch.manual_seed(args.seed)  # as Trainer.train does before it builds the dataloader
        return [[int(row["i"]) for row in batch] for batch in trainer.get_train_dataloader()]

    ours = batches([{"i": int(i)} for i in train])
    theirs = batches(Dataset.from_dict({"i": list(range(40))}))
    assert ours == theirs and ours != [list(range(k, k + 4)) for k in range(0, 40, 4)]


@pytest.mark.slow
@pytest.mark.parametrize("value", [True, False])
def test_set_gradient_checkpointing_is_honoured_and_recorded(sample_dataset, tiny_model, tmp_path, value):
    output = tmp_path / "out"
    result = neosft(
        "train", "--variant", "single", "--data", sample_dataset, "--output", output, "--model", tiny_model,
        "--deepspeed", "none", "--max-steps", "1", "--work-dir", tmp_path / "work",
        "--set", "cutoff_len=128", "--set", "gradient_accumulation_steps=1", "--set", f"gradient_checkpointing={json.dumps(value)}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunRecord.read(location(str(output)))
    assert run.checkpointing == {"enabled": value, "reason": f"--set gradient_checkpointing={json.dumps(value)}"}
    assert run.training_arguments["activation_checkpointing"] is value
    assert f"activation checkpointing {'on' if value else 'off'}" in result.stderr


def test_disagreeing_checkpointing_is_one_line(sample_dataset, tiny_model, tmp_path):
    result = neosft(
        "train", "--variant", "single", "--data", sample_dataset, "--output", tmp_path / "o", "--model", tiny_model,
        "--set", "gradient_checkpointing=true", "--set", "activation_checkpointing=false",
    )  # fmt: skip
    assert_user_error(result, "disagree")

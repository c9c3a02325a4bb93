"""Bad training input ends in one line and exit 2, before any model is loaded or any step runs; a finished run is
not trained again."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from click.testing import CliRunner
from conftest import neosft, write_json

from neosft.artifacts import Manifest
from neosft.cli import cli
from neosft.data.build import build


def train(*args, data, model, tmp_path, env=None):
    """`neosft train` in this process (the CLI's own error handling), one step of the tiny model on CPU."""
    argv = [
        "train",
        "--variant",
        "single",
        "--data",
        str(data),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model),
        "--deepspeed",
        "none",
        "--max-steps",
        "1",
        "--work-dir",
        str(tmp_path / "work"),
        *map(str, args),
    ]
    return CliRunner().invoke(cli, argv, env=env)


def assert_refused(result, *needles: str) -> None:
    """Exit 2 with one `error:` line holding every needle; nothing was tokenized, loaded or trained."""
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "tokenizing" not in result.stderr and "'loss'" not in result.output


@pytest.mark.parametrize(
    "setting, needle",
    [
        ("learning_rate=fast", 'learning_rate="fast": expected a finite number'),
        ("learning_rate=NaN", "learning_rate=NaN: expected a finite number"),
        ("learning_rate=-1e-5", "expected a finite number above 0"),
        ("cutoff_len=abc", 'cutoff_len="abc": expected an integer'),
        ("cutoff_len=0", "cutoff_len=0: expected an integer above 0"),
        ("per_device_train_batch_size=1.5", "per_device_train_batch_size=1.5: expected an integer"),
        ("bf16=maybe", "expected true or false"),
    ],
)
def test_bad_values_are_one_line(setting, needle, sample_dataset, tiny_model, tmp_path):
    assert_refused(train("--set", setting, data=sample_dataset, model=tiny_model, tmp_path=tmp_path), needle)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "report_to=tensorboard"], "--set report_to: use --report-to"),
        (["--set", "use_liger_kernel=true"], "--set use_liger_kernel: use --liger"),
        (["--report-to", "mlflow"], "--report-to mlflow: the mlflow package is not installed"),
    ],
)
def test_settings_with_their_own_option_or_a_missing_package(args, needle, sample_dataset, tiny_model, tmp_path):
    if "mlflow" in args and importlib.util.find_spec("mlflow"):
        pytest.skip("mlflow is installed here")
    assert_refused(train(*args, data=sample_dataset, model=tiny_model, tmp_path=tmp_path), needle)


def test_a_val_size_that_leaves_no_training_row(sample_dataset, tiny_model, tmp_path):
    result = train("--val-size", "0.9999", data=sample_dataset, model=tiny_model, tmp_path=tmp_path)
    assert_refused(result, "--val-size 0.9999 holds out all", "training set would be empty")


def test_a_world_size_that_does_not_divide_the_batch(sample_dataset, tiny_model, tmp_path):
    result = train(data=sample_dataset, model=tiny_model, tmp_path=tmp_path, env={"WORLD_SIZE": "3", "RANK": "0"})
    assert_refused(result, "total train batch 64 is not divisible by 3 device(s)", "gradient_accumulation_steps=N")


def test_a_variant_without_rows_fails_before_any_model_load(tmp_path):
    corpus = write_json(
        tmp_path / "two-rounds.json",
        [
            {
                "conversations": [
                    {"from": "human", "value": "a"},
                    {"from": "gpt", "value": "b"},
                    {"from": "human", "value": "c"},
                    {"from": "gpt", "value": "d"},
                ]
            }
        ],
    )
    build(str(corpus), str(tmp_path / "data"), ["single", "multi"])
    result = train(data=tmp_path / "data", model=tmp_path / "no-such-model", tmp_path=tmp_path)
    assert_refused(result, "the single dataset has no rows")


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("empty", "no usable config"),
        ("unknown model_type", "no usable config"),
        ("no weights", "the folder holds no weights"),
        ("corrupt weights", "corrupt weights"),
    ],
)
def test_a_bad_model_folder(damage, needle, sample_dataset, tiny_model, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    if damage != "empty":
        shutil.copytree(tiny_model, model, dirs_exist_ok=True)
    if damage == "unknown model_type":
        config = model / "config.json"
        config.write_text(config.read_text().replace('"model_type": "qwen2"', '"model_type": "nonsense"'))
    elif damage == "no weights":
        (model / "model.safetensors").unlink()
    elif damage == "corrupt weights":
        weights = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(weights[: len(weights) - 100])
    assert_refused(train(data=sample_dataset, model=model, tmp_path=tmp_path), f"--model {model}", needle)


def test_a_part_truncated_mid_line_is_one_line(sample_dataset, tiny_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_dataset, data)
    part = data / Manifest.read(str(data)).variants["single"].files[0]
    part.write_bytes(part.read_bytes()[:-40])
    result = neosft(
        "train",
        "--variant",
        "single",
        "--data",
        data,
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
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "part-00000.jsonl line" in last and "rebuild the dataset" in last


def test_a_finished_run_is_not_trained_again(sample_dataset, tiny_model, tmp_path):
    args = ("--set", "gradient_accumulation_steps=1", "--set", "cutoff_len=128")
    first = train(*args, data=sample_dataset, model=tiny_model, tmp_path=tmp_path)
    assert first.exit_code == 0, first.output
    record = (tmp_path / "out" / "final" / "run.json").read_bytes()
    again = train(*args, data=sample_dataset, model=tiny_model, tmp_path=tmp_path)
    assert again.exit_code == 0 and "holds a finished run (1 steps" in again.stderr
    assert "tokenizing" not in again.stderr and (tmp_path / "out" / "final" / "run.json").read_bytes() == record

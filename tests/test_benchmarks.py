"""Benchmarks through lm-evaluation-harness, offline: the tiny model on a task YAML over a local JSONL shipped in
tests/benchmarks/, a task whose data is missing, unknown tasks refused before anything runs, the chart's argument."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import assert_user_error, neosft
from test_eval import run_dataset  # noqa: F401  # the fixture: the sample with 48 held-out records

from neosft.artifacts import EvalRecord
from neosft.storage import location

ROOT = Path(__file__).resolve().parent.parent
TASK = "tests/benchmarks/neosft_tiny_choice.yaml"  # its data_files path is relative to the repository root
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}  # nothing is downloaded


@pytest.mark.slow
def test_a_task_yaml_on_a_local_jsonl_scores_the_tiny_model_offline(run_dataset, tiny_model, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ("eval", "--base", run, "--model", tiny_model, "--data", run_dataset, "--samples", "0")
    result = neosft(*args, "--benchmarks", TASK, cwd=ROOT, env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    record = EvalRecord.read(location(run / "base"))
    assert record.chat.samples == 48 and set(record.benchmarks) == {"neosft_tiny_choice"}
    scores = record.benchmarks["neosft_tiny_choice"]
    assert set(scores) == {"acc", "acc_norm"}
    docs = len((ROOT / "tests/benchmarks/neosft_tiny_choice.jsonl").read_text().splitlines())
    p = scores["acc"]["value"]
    assert p * docs == pytest.approx(round(p * docs))  # a share of the 8 documents
    assert scores["acc"]["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (docs - 1)))  # the harness's: sample sd
    text = (run / "comparison.md").read_text()
    assert "## Benchmarks" in text and "neosft_tiny_choice acc" in text
    assert f"{p:.4f} ± {scores['acc']['stderr']:.4f}" in text

    missing = tmp_path / "missing.yaml"  # a task whose data cannot be fetched: that stage fails, the chat loss stays
    config = yaml.safe_load((ROOT / TASK).read_text())
    config["task"], config["dataset_kwargs"]["data_files"]["test"] = "neosft_missing", str(tmp_path / "no.jsonl")
    missing.write_text(yaml.safe_dump(config))
    (run / "base" / "eval.json").unlink()
    failed = neosft(*args, "--benchmarks", missing, cwd=ROOT, env=OFFLINE)  # after the eval's progress lines: one
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert len(errors) == 1 and errors[0].startswith("error: benchmarks neosft_missing failed: FileNotFoundError")
    kept = EvalRecord.read(location(run / "base"))
    assert kept.chat == record.chat and kept.benchmarks == {}


def test_unknown_or_malformed_tasks_are_refused_in_one_line_before_anything_runs(tmp_path):
    assert_user_error(neosft("eval", tmp_path, "--benchmarks", "no_such_task_xyz"), "knows no task 'no_such_task_xyz'")
    assert_user_error(neosft("eval", tmp_path, "--benchmarks", "ifeval,,mmlu"), "TASK[,TASK...]")
    assert_user_error(neosft("eval", tmp_path, "--benchmarks", "rm -rf"), "neither an lm-evaluation-harness task")
    assert_user_error(neosft("eval", tmp_path, "--benchmarks", tmp_path / "nope.yaml"), "no task YAML at")
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"eval": {"benchmarks": ["ifeval", "no_such_task_xyz"]}}))
    assert_user_error(neosft("submit", "--run-id", "r1", "--dry-run", "--values", values), "no_such_task_xyz")
    values.write_text(yaml.safe_dump({"eval": {"benchmarks": ["ifeval; rm -rf /"]}}))
    assert_user_error(
        neosft("submit", "--run-id", "r1", "--dry-run", "--values", values), "'ifeval; rm -rf /' is neither"
    )


def test_the_chart_passes_the_tasks_to_every_variant_s_trainer(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"eval": {"benchmarks": ["ifeval", "gsm8k", "tasks/mine.yaml"]}}))
    result = neosft("submit", "--variant", "all", "--run-id", "r1", "--dry-run", "--values", values)
    assert result.returncode == 0, result.stderr
    trainers = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] in ("PyTorchJob", "TrainJob")]
    commands = [json.dumps(o) for o in trainers]
    assert commands and all(c.count("--benchmarks=ifeval,gsm8k,tasks/mine.yaml") == 1 for c in commands)

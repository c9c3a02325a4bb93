"""bench/gpu.py cannot rot: its CPU mode runs the device script's code paths on a tiny model and writes gpu.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_cpu_mode_writes_its_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    command = [sys.executable, ROOT / "bench" / "gpu.py", "--cpu", "--out", out, "--steps", "1", "--skip-zero3"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["probe"]["torch"]
    assert report["correctness"]["packed_equals_unpacked"]["ok"] is True
    names = [r["name"] for r in report["runs"]]
    assert len(names) == 16 and {"lora-128-ckpt-row", "full-256-nockpt-packed"} <= set(names)
    for run in report["runs"]:
        assert "error" not in run, run
        assert run["tokens_per_s_per_gpu"] > 0 and run["peak_memory_gb"] > 0
        assert run["rows_per_micro_step"] > 1 if run["packed"] else run["rows_per_micro_step"] == 1
    assert "| configuration |" in (out / "gpu.md").read_text()


def test_gpu_bench_refuses_to_run_without_a_gpu_unless_asked(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, ROOT / "bench" / "gpu.py", "--out", tmp_path], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2 and result.stderr.strip() == "error: no CUDA GPU here: run with --cpu"

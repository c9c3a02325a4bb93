"""bench/gpu.py cannot rot: its reduced CPU mode runs the real trainer in the benchmark's configurations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_gpu_bench_runs_in_its_reduced_cpu_mode(tmp_path, method):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache/neosft-torch-ext")),
    }
    out = tmp_path / "gpu.json"
    result = subprocess.run(
        [
            sys.executable,
            ROOT / "bench" / "gpu.py",
            "--cpu",
            "--steps",
            "3",
            "--out",
            out,
            "--work",
            tmp_path,
            "--method",
            method,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["gradient_accumulation_steps"] == 4 and report["method"] == method
    assert [r["name"] for r in report["runs"]] == ["zero2-unpacked-plain", "zero3-packed-liger"]
    for run in report["runs"]:
        assert "error" not in run, run
        assert run["steps"] == 3 and run["tokens_per_s_per_gpu"] > 0 and run["peak_memory_gb"] > 0.1
        assert run["liger_active"] is False  # no GPU: Liger falls back cleanly
    assert "tokens/s/GPU" in result.stdout and "zero3-packed-liger" in result.stdout

"""GPU training throughput of `neosft train`: a Qwen2-shaped model (Qwen2-0.5B's config, random bf16 weights, no
download) on every GPU of this machine, for ZeRO-2 / ZeRO-3 x unpacked / packed x Liger off / on, full fine-tuning or
with `--method lora` a LoRA adapter (the table's LoRA settings). Prints and writes tokens/s per GPU, MFU against the
GPU's bf16 peak and peak GPU memory.

    PYTHONPATH=. python bench/gpu.py [--steps 30] [--out bench-gpu.json]     # about 5 minutes on one H100
    PYTHONPATH=. python bench/gpu.py --method lora                            # the same configurations, LoRA
    PYTHONPATH=. python bench/gpu.py --cpu                                    # reduced: tiny model, CPU, 2 configs

Each configuration is one real `neosft train` (under torchrun on several GPUs) on the `single` variant of a synthetic corpus, at
cutoff_len 4096 with gradient accumulation 4 (an explicit override; the table's total batch 64 would make a step take
16 times longer on one GPU). Throughput counts the steps after the first `--warmup` ones, from the run's loss.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import corpus

QWEN2_0_5B = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
}
BF16_PEAK_TFLOPS = {
    "H200": 989,
    "H100 SXM": 989,
    "H100 80GB HBM3": 989,
    "H100 NVL": 835,
    "H100 PCIe": 756,
    "H100": 756,
    "A100": 312,
    "L40S": 362,
    "A10G": 70,
    "L4": 121,
}  # dense, no sparsity
CUTOFF, ACCUMULATION = 4096, 4


def configs(cpu: bool) -> list[dict]:
    if cpu:
        return [
            {"deepspeed": "zero2", "packing": False, "liger": False},
            {"deepspeed": "zero3", "packing": True, "liger": True},
        ]
    return [
        {"deepspeed": d, "packing": p, "liger": lg}
        for d, p, lg in itertools.product(("zero2", "zero3"), (False, True), (False, True))
    ]


def prepare(work: Path, cpu: bool) -> tuple[Path, Path]:
    """(dataset folder, model folder): the synthetic corpus built, and a random model of the benchmark's shape."""
    import torch

    from neosft.data.build import build
    from neosft.train.tiny import make_tiny_qwen2

    data, source = work / "data", work / "corpus.json"
    corpus.write(str(source), 0.3 if cpu else 4)
    part = data / build(str(source), str(data), ["single"]).variants["single"].files[0]
    texts = [json.loads(line)["output"] for line in part.open(encoding="utf-8")]
    if cpu:
        return data, make_tiny_qwen2(work / "model", texts[:2000])
    shape = {k: v for k, v in QWEN2_0_5B.items() if k not in ("vocab_size", "hidden_size", "num_hidden_layers")}
    return data, make_tiny_qwen2(
        work / "model",
        texts[:2000],
        hidden_size=QWEN2_0_5B["hidden_size"],
        layers=QWEN2_0_5B["num_hidden_layers"],
        model_vocab_size=QWEN2_0_5B["vocab_size"],
        dtype=torch.bfloat16,
        **shape,
    )


class PeakMemory:
    """Peak memory while a process runs: the most any GPU used (nvidia-smi), or on CPU the resident set of the process
    and its descendants (torchrun and its workers)."""

    def __init__(self, pid: int, cpu: bool):
        self.pid, self.cpu, self.peak, self.done = pid, cpu, 0, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, self._now())

    def _now(self) -> int:
        try:
            if self.cpu:
                return sum(_rss(pid) for pid in _tree(self.pid))
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return max(int(v) for v in out.split()) * 2**20
        except (OSError, StopIteration, ValueError, subprocess.CalledProcessError):
            return 0

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in _tree(int(child)))]


def _rss(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # ended meanwhile
        return 0
    return int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")), 0)) * 1024


def train_flops_per_token(model: Path, method: str = "full") -> float:
    """6 x the parameters a token passes through (embeddings are a lookup, the output projection is not); 4 x with
    LoRA, whose frozen weights get no gradient (the adapter's own FLOPs are negligible)."""
    config = json.loads((model / "config.json").read_text())
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = h // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter
    return (6 if method == "full" else 4) * (layers * per_layer + config["vocab_size"] * h)


def run_one(
    cfg: dict, data: Path, model: Path, work: Path, steps: int, warmup: int, gpus: int, cpu: bool, method: str
) -> dict:
    from neosft.artifacts import RunRecord, read_losses, train_losses
    from neosft.storage import location

    name = f"{cfg['deepspeed']}-{'packed' if cfg['packing'] else 'unpacked'}-{'liger' if cfg['liger'] else 'plain'}"
    output = work / "runs" / name
    cutoff = 128 if cpu else CUTOFF
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"] if gpus > 1 else []
    command = [
        sys.executable,
        *launcher,
        "-m",
        "neosft",
        "train",
        "--variant",
        "single",
        "--data",
        str(data),
        "--output",
        str(output),
        "--model",
        str(model),
        "--method",
        method,
        "--deepspeed",
        cfg["deepspeed"],
        "--max-steps",
        str(steps),
        "--save-steps",
        str(10 * steps),
        "--work-dir",
        str(work / "work" / name),
        "--set",
        f"cutoff_len={cutoff}",
        "--set",
        f"gradient_accumulation_steps={ACCUMULATION}",
        "--set",
        f"per_device_eval_batch_size={ACCUMULATION}",
        *(["--packing"] if cfg["packing"] else []),
        *(["--liger"] if cfg["liger"] else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if cpu else "8")}
    log = work / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        memory = PeakMemory(proc.pid, cpu)
        proc.wait()
        peak = memory.stop()
    if proc.returncode:
        return {**cfg, "name": name, "error": log.read_text(errors="replace").strip().splitlines()[-1:]}
    records = train_losses(read_losses((output / "loss.jsonl").read_bytes()))
    first, last = records[min(warmup, len(records) - 2)], records[-1]
    tokens_per_s = (last.total_tokens - first.total_tokens) / max(last.elapsed_s - first.elapsed_s, 1e-9) / gpus
    run = RunRecord.read(location(str(output)))
    return {
        **cfg,
        "name": name,
        "liger_active": run.liger,
        "steps": run.steps,
        "tokens": run.tokens,
        "tokens_per_s_per_gpu": round(tokens_per_s, 1),
        "peak_memory_gb": round(peak / 1e9, 2),
        "wall_s": round(time.monotonic() - started, 1),
        "final_loss": run.final_loss,
    }


def peak_tflops(override: float | None) -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", override
    name = torch.cuda.get_device_name(0)
    return name, override or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="Reduced mode: tiny model, CPU, two configurations.")
    parser.add_argument("--steps", type=int, help="Optimizer steps per configuration [30; 3 with --cpu].")
    parser.add_argument("--warmup", type=int, help="Steps left out of the throughput [5; 1 with --cpu].")
    parser.add_argument("--gpus", type=int, help="Processes (GPUs) per run [every visible GPU; 1 with --cpu].")
    parser.add_argument("--peak-tflops", type=float, help="The GPU's dense bf16 peak, when not in the table.")
    parser.add_argument("--method", default="full", choices=("full", "lora"), help="What each run trains [full].")
    parser.add_argument("--out", default="bench-gpu.json", help="JSON results.")
    parser.add_argument("--work", help="Scratch folder [a temporary one].")
    a = parser.parse_args()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --cpu for the reduced mode")
    steps, warmup = a.steps or (3 if a.cpu else 30), a.warmup if a.warmup is not None else (1 if a.cpu else 5)
    gpus = a.gpus or (1 if a.cpu else torch.cuda.device_count())
    device, peak = peak_tflops(a.peak_tflops)
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        work = Path(tmp)
        data, model = prepare(work, a.cpu)
        flops = train_flops_per_token(model, a.method)
        rows = []
        for cfg in configs(a.cpu):
            row = run_one(cfg, data, model, work, steps, warmup, gpus, a.cpu, a.method)
            if "error" not in row:
                row["mfu"] = round(row["tokens_per_s_per_gpu"] * flops / (peak * 1e12), 4) if peak else None
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": device,
        "gpus": gpus,
        "bf16_peak_tflops": peak,
        "method": a.method,
        "model": "cpu-tiny" if a.cpu else "Qwen2-0.5B shape",
        "cutoff_len": 128 if a.cpu else CUTOFF,
        "gradient_accumulation_steps": ACCUMULATION,
        "steps": steps,
        "warmup_steps": warmup,
        "train_flops_per_token": flops,
        "runs": rows,
    }
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'configuration':<26}{'tokens/s/GPU':>14}{'MFU':>8}{'peak GB':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<26}  failed: {r['error']}")
        else:
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            print(f"{r['name']:<26}{r['tokens_per_s_per_gpu']:>14,.0f}{mfu:>8}{r['peak_memory_gb']:>9.1f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""The first ten minutes on a GPU machine: probe it, check correctness in bf16, measure training throughput.

    sh bench/wheelhouse.sh                       # here, once: .whl/ with what the GPU machine lacks (< 64 MiB)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    python3 bench/gpu.py --out "$OUT"            # there: about 5 minutes on one H100
    python3 bench/gpu.py --cpu --out DIR         # here: the same script on a tiny model (tests/test_bench_gpu.py)

It writes OUT/gpu.json and OUT/gpu.md:
- probe: GPU, driver, CUDA, torch, flash-attn (whether it imports);
- correctness: the loss of rows packed into one sequence (neosft's FlattenCollator, position_ids restarting at each
  row) equals their token-weighted unpacked loss; the ZeRO-3 train -> merge -> eval path of `neosft train` on one
  process ends in merged/ and eval.json;
- throughput: a Qwen2-7B-shaped model with random bf16 weights built on the GPU (full fine-tuning keeps FULL_LAYERS
  of its 28 layers, so that weights, gradients and Adam's states fit one GPU; tokens/s per layer are the same),
  rows of realistic lengths (log-normal, median ROW_MEDIAN tokens), LoRA and full, at cutoff 4096 and 8192, with
  activation checkpointing on and off, one row per micro-step or several packed up to the cutoff: tokens/s, MFU
  against the GPU's dense bf16 peak, peak memory. A configuration that runs out of memory is recorded as such.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neosft.variants import QWEN2_7B  # noqa: E402 - the one table's Qwen2-7B shape, light to import

TINY_SHAPE = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
FULL_LAYERS = 8  # full fine-tuning on one GPU: 8 of 28 layers (~3.1B parameters, ~50 GB of states with Adam)
ROW_MEDIAN = 600  # tokens: the seed's rows are mostly a few hundred tokens, with a long tail
BF16_PEAK_TFLOPS = {"H200": 989, "H100 SXM": 989, "H100 80GB HBM3": 989, "H100 NVL": 835, "H100": 756, "A100": 312}


def probe(cpu: bool) -> dict:
    import torch

    info: dict[str, object] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    if not cpu and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gb": round(props.total_memory / 1e9, 1),
            "gpus": torch.cuda.device_count(),
        }
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    try:
        import flash_attn

        info["flash_attn"] = flash_attn.__version__
    except (ImportError, OSError) as e:
        info["flash_attn"] = f"not usable: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    return info


def peak_tflops(name: str | None) -> float | None:
    for key, value in BF16_PEAK_TFLOPS.items():  # most specific first
        if name and key in name:
            return value
    return None


def build_model(shape: dict, device: str, dtype, layers: int | None = None, packing: bool = True):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from neosft.train.packing import attention_implementation

    config = Qwen2Config(**{**shape, "num_hidden_layers": layers or shape["num_hidden_layers"]}, use_cache=False)
    config._attn_implementation = attention_implementation(packing) if device != "cpu" or packing else "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def row_lengths(count: int, cutoff: int, seed: int) -> list[int]:
    """Log-normal row lengths, median ROW_MEDIAN (at most an eighth of the cutoff: the tiny CPU cutoffs still pack)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    median = min(ROW_MEDIAN, cutoff // 8)
    return [int(n) for n in np.clip(rng.lognormal(math.log(median), 0.8, count), 8, cutoff)]


def rows(lengths: list[int], vocab: int, seed: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(0, vocab, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 3] = -100  # the prompt: not trained on
        out.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    return out


def packed_equals_unpacked(shape: dict, device: str, dtype) -> dict:
    """The loss of three rows packed into one sequence equals their token-weighted loss one by one."""
    import torch

    from neosft.train.packing import FlattenCollator

    model = build_model(shape, device, dtype, packing=True).eval()
    samples = rows([40, 17, 64], shape["vocab_size"], 1)
    with torch.no_grad():
        total, tokens = 0.0, 0
        for s in samples:
            ids = torch.tensor([s["input_ids"]], device=device)
            labels = torch.tensor([s["labels"]], device=device)
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            tokens += n
        batch = {k: v.to(device) for k, v in FlattenCollator()([{"samples": samples}]).items()}
        packed = float(model(**batch).loss)
    unpacked = total / tokens
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    return {
        "packed": packed,
        "unpacked": unpacked,
        "ok": abs(packed - unpacked) <= tolerance * max(1.0, abs(unpacked)),
        "attention": model.config._attn_implementation,
    }


def zero3_path(work: Path) -> dict:
    """`neosft train --deepspeed zero3 --method lora --merge --eval` on one process, on a tiny model and a dataset
    with held-out records: it must end in merged/ and eval.json."""
    from neosft.artifacts import Manifest
    from neosft.data.build import build
    from neosft.sample import SAMPLE_CORPUS
    from neosft.train.tiny import make_tiny_qwen2

    data, output = work / "data", work / "out"
    build(str(SAMPLE_CORPUS), str(data), ["single"], holdout="12")
    part = data / Manifest.read(str(data)).variants["single"].files[0]
    texts = [r["instruction"] + r["output"] for r in map(json.loads, part.open(encoding="utf-8"))]
    model = make_tiny_qwen2(work / "model", texts)
    command = [
        sys.executable, "-m", "neosft", "train", "--variant", "single", "--data", data, "--output", output,
        "--model", model, "--deepspeed", "zero3", "--max-steps", "2", "--work-dir", work / "work", "--merge",
        "--eval", "--eval-samples", "2", "--set", "cutoff_len=256", "--set", "gradient_accumulation_steps=2",
    ]  # fmt: skip
    started = time.monotonic()
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env={**os.environ})
    ok = result.returncode == 0 and (output / "merged" / "config.json").exists() and (output / "eval.json").exists()
    report: dict[str, object] = {"ok": ok, "seconds": round(time.monotonic() - started, 1)}
    if not ok:
        report["error"] = result.stderr.strip()[-2000:]
    return report


def flops_per_token(model, method: str, context: float) -> float:
    """Model FLOPs per trained token (no recompute): 6 per weight (full) or 4 (LoRA: no frozen weight gradients) per
    matmul weight, plus causal attention's 6 (or 4) x layers x hidden x context."""
    config = model.config
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in n)
    per = 6 if method == "full" else 4
    return per * matmul + per * config.num_hidden_layers * config.hidden_size * context


def throughput(model, method: str, cutoff: int, checkpointing: bool, packed: bool, steps: int, device: str) -> dict:
    import torch

    from neosft.train.packing import FlattenCollator

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device == "cuda")
    lengths = row_lengths(64 * (steps + 2), cutoff, seed=cutoff)
    samples = rows(lengths, model.config.vocab_size, 2)
    collate = FlattenCollator()

    def micro_steps():
        i = 0
        while True:
            take = [samples[i % len(samples)]]
            i += 1
            while (
                packed
                and sum(len(s["input_ids"]) for s in take) + len(samples[i % len(samples)]["input_ids"]) <= cutoff
            ):
                take.append(samples[i % len(samples)])
                i += 1
            yield {k: v.to(device) for k, v in collate([{"samples": take}]).items()}, len(take)

    def step(batch):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    batches = micro_steps()
    try:
        step(next(batches)[0])  # warm-up: kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
        tokens, rows_done, started = 0, 0, time.perf_counter()
        for _ in range(steps):
            batch, n = next(batches)
            step(batch)
            tokens += batch["input_ids"].numel()
            rows_done += n
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    except torch.cuda.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()
        torch.cuda.empty_cache()
        return {"error": "out of memory"}
    optimizer.state.clear()  # Adam's moments go before the next configuration
    per_s = tokens / seconds
    report = {
        "tokens_per_s_per_gpu": round(per_s, 1),
        "rows_per_micro_step": round(rows_done / steps, 2),
        "tokens_per_micro_step": round(tokens / steps, 1),
        "flops_per_token": flops_per_token(model, method, tokens / rows_done),
    }
    if device == "cuda":
        report["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        torch.cuda.empty_cache()
    else:
        report["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    return report


def with_lora(model):
    from peft import LoraConfig, get_peft_model

    from neosft.variants import LORA

    config = LoraConfig(
        r=LORA.rank,
        lora_alpha=LORA.alpha,
        lora_dropout=LORA.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.enable_input_require_grads()  # checkpointed layers of a frozen base still pass gradients to the adapter
    return model


def measure(cpu: bool, steps: int, peak: float | None) -> list[dict]:
    import torch

    device, dtype = ("cpu", torch.float32) if cpu else ("cuda", torch.bfloat16)
    shape = TINY_SHAPE if cpu else QWEN2_7B
    cutoffs = (128, 256) if cpu else (4096, 8192)
    runs = []
    for method in ("lora", "full"):
        layers = None if method == "lora" or cpu else FULL_LAYERS
        model = build_model(shape, device, dtype, layers, packing=True)
        if method == "lora":
            model = with_lora(model)
        for cutoff in cutoffs:
            for checkpointing in (True, False):
                for packed in (False, True):
                    name = f"{method}-{cutoff}-{'ckpt' if checkpointing else 'nockpt'}-{'packed' if packed else 'row'}"
                    report = throughput(model, method, cutoff, checkpointing, packed, steps, device)
                    run = {"name": name, "method": method, "cutoff": cutoff, "checkpointing": checkpointing}
                    run |= {"packed": packed, "layers": model.config.num_hidden_layers, **report}
                    if peak and "tokens_per_s_per_gpu" in report:
                        run["mfu"] = round(
                            report["tokens_per_s_per_gpu"] * report["flops_per_token"] / (peak * 1e12), 3
                        )
                    print(f"{name}: {report}", flush=True)
                    runs.append(run)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return runs


def markdown(report: dict) -> str:
    p = report["probe"]
    lines = [
        f"GPU {p.get('gpu', 'none (CPU)')}, driver {p.get('driver')}, CUDA {p['cuda']}, torch {p['torch']}, "
        f"flash-attn {p['flash_attn']}",
        "",
        f"packed loss = unpacked loss: {report['correctness']['packed_equals_unpacked']['ok']}; "
        f"ZeRO-3 train -> merge -> eval: {report['correctness']['zero3'].get('ok')}",
        "",
        "| configuration | layers | rows/micro-step | tokens/s/GPU | MFU | peak GB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['layers']} | | {r['error']} | | |")
        else:
            lines.append(
                f"| {r['name']} | {r['layers']} | {r['rows_per_micro_step']} | {r['tokens_per_s_per_gpu']:,.0f} | "
                f"{r.get('mfu', '')} | {r['peak_memory_gb']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="a tiny model on CPU (the same code paths)")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-gpu"), help="folder for gpu.json and gpu.md")
    parser.add_argument("--steps", type=int, default=None, help="timed micro-steps per configuration")
    parser.add_argument("--skip-zero3", action="store_true", help="leave out the ZeRO-3 train -> merge -> eval check")
    args = parser.parse_args()
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here: run with --cpu", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = args.steps or (2 if args.cpu else 8)
    info = probe(args.cpu)
    print(f"probe: {info}", flush=True)
    shape, device = (TINY_SHAPE, "cpu") if args.cpu else (QWEN2_7B | {"num_hidden_layers": 2}, "cuda")
    dtype = torch.float32 if args.cpu else torch.bfloat16
    correctness = {"packed_equals_unpacked": packed_equals_unpacked(shape, device, dtype)}
    print(f"packed = unpacked: {correctness['packed_equals_unpacked']}", flush=True)
    if args.skip_zero3:
        correctness["zero3"] = {"ok": None, "skipped": True}
    else:
        with tempfile.TemporaryDirectory(prefix="neosft-bench-") as tmp:
            correctness["zero3"] = zero3_path(Path(tmp))
        print(f"zero3 train -> merge -> eval: {correctness['zero3']}", flush=True)
    peak = None if args.cpu else peak_tflops(info.get("gpu"))
    report = {
        "device": "cpu" if args.cpu else "cuda",
        "probe": info,
        "peak_bf16_tflops": peak,
        "steps": steps,
        "correctness": correctness,
        "runs": measure(args.cpu, steps, peak),
    }
    (out / "gpu.json").write_text(json.dumps(report, indent=2))
    (out / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: `neosft train` against a plain Hugging Face Trainer script on the same tiny Qwen2,
data and settings (the `single` variant's table row, one CPU process, no DeepSpeed), with and without
`--packing`; LoRA (the default method) against full fine-tuning: tokens/s and the memory of the trainable state;
plus padding efficiency (real tokens / computed tokens).

    PYTHONPATH=. python bench/train.py [--mb 1] [--steps 36] [--packed-steps 4] [--rounds 3]

The runs alternate for `--rounds` rounds and each reports its median, so that other load on the machine
hits every run alike. The default steps cover about one epoch of the corpus, so every run sees the same samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import corpus
import numpy as np

VARIANT = "single"
ACCUMULATION = 8  # micro-steps per optimizer step in both runs (the trainer's own at one process would be 64)

PLAIN_HF = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
from neosft.chat import segments
from neosft.variants import VARIANTS

data, model_dir, out, steps, ACCUMULATION = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
hp = VARIANTS["single"].hyperparameters()
tok = AutoTokenizer.from_pretrained(model_dir)
samples = []
for line in open(data, encoding="utf-8"):
    row = json.loads(line)
    prompt, response = segments(row["instruction"], row["input"], row["output"], row.get("system"))
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"]
    ids = (p + r)[: hp["cutoff_len"]]
    samples.append({"input_ids": ids, "labels": ([-100] * len(p) + r)[: hp["cutoff_len"]]})
args = TrainingArguments(output_dir=out, max_steps=steps, learning_rate=hp["learning_rate"],
    per_device_train_batch_size=hp["per_device_train_batch_size"],
    gradient_accumulation_steps=ACCUMULATION, lr_scheduler_type=hp["lr_scheduler_type"],
    warmup_steps=hp["warmup_ratio"], adam_beta1=hp["adam_beta1"], adam_beta2=hp["adam_beta2"],
    adam_epsilon=hp["adam_epsilon"], seed=hp["seed"], logging_steps=1, save_strategy="no", report_to="none",
    use_cpu=True, include_num_input_tokens_seen="non_padding")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
trainer = Trainer(model=model, args=args, train_dataset=samples, processing_class=tok,
                  data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=-100))
result = trainer.train()
print(json.dumps({"tokens": trainer.state.num_input_tokens_seen, "train_runtime_s": result.metrics["train_runtime"]}))
"""


TRAINABLE_STATE_BYTES = 4 + 4 + 4 + 4  # per trainable parameter: fp32 weight, its gradient, Adam's two moments


def trainable_parameters(final: Path) -> int:
    """Parameters the run updated: every weight of final/model.safetensors, or its LoRA adapter's."""
    from safetensors import safe_open

    weights = final / "adapter_model.safetensors"
    with safe_open(str(weights if weights.exists() else final / "model.safetensors"), "np") as f:
        names = f.keys()  # a safe_open handle is not iterable
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in names)


def neosft_train(data: Path, model: Path, out: Path, steps: int, packing: bool, method: str = "full") -> dict:
    cmd = [
        sys.executable,
        "-m",
        "neosft",
        "train",
        "--variant",
        VARIANT,
        "--data",
        data,
        "--output",
        out,
        "--model",
        model,
        "--method",
        method,
        "--deepspeed",
        "none",
        "--max-steps",
        steps,
        "--save-steps",
        10 * steps,
        "--work-dir",
        out.with_name(out.name + "-work"),
        "--set",
        f"gradient_accumulation_steps={ACCUMULATION}",
    ] + (["--packing"] if packing else [])
    subprocess.run(list(map(str, cmd)), check=True, capture_output=True)
    run = json.loads((out / "final" / "run.json").read_text())
    trainable = trainable_parameters(out / "final")
    return {
        "tokens": run["tokens"],
        "train_runtime_s": run["train_runtime_s"],
        "steps": run["steps"],
        "trainable": trainable,
        "trainable_state_mb": trainable * TRAINABLE_STATE_BYTES / 1e6,
    }


def plain_hf(data: Path, model: Path, out: Path, steps: int) -> dict:
    script = out.with_suffix(".py")
    script.write_text(PLAIN_HF)
    result = subprocess.run(
        [sys.executable, str(script), str(data), str(model), str(out), str(steps), str(ACCUMULATION)],
        check=True,
        capture_output=True,
        text=True,
    )
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "steps": steps}


def padding_efficiency(data: Path, model: Path, batch: int) -> dict:
    """Real tokens / computed tokens over the dataset, padded batches of `batch` rows vs packed sequences."""
    from transformers import AutoTokenizer

    from neosft.train.dataset import manifest_entry, rows
    from neosft.train.packing import pack
    from neosft.train.tokenize import tokenize
    from neosft.variants import VARIANTS

    cutoff = VARIANTS[VARIANT].cutoff_len
    tokens = tokenize(
        rows(str(data), VARIANT, manifest_entry(str(data), VARIANT)[1]), AutoTokenizer.from_pretrained(model), cutoff
    )
    lengths = np.asarray(tokens.lengths)
    order = np.random.default_rng(0).permutation(len(lengths))
    padded = sum(
        int(lengths[order[i : i + batch]].max()) * len(order[i : i + batch]) for i in range(0, len(order), batch)
    )
    bins = pack(lengths, cutoff)
    return {
        "samples": len(lengths),
        "real_tokens": int(lengths.sum()),
        "padded_batch": batch,
        "padded_efficiency": lengths.sum() / padded,
        "packed_sequences": len(bins),
        "packed_fill": lengths.sum() / (len(bins) * cutoff),
        "packed_efficiency": 1.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=1.0, help="Size of the synthetic corpus.")
    ap.add_argument("--steps", type=int, default=36, help="Optimizer steps of the unpacked runs.")
    ap.add_argument("--packed-steps", type=int, default=4, help="Optimizer steps of the packed run.")
    ap.add_argument("--rounds", type=int, default=3, help="Times each run is repeated.")
    args = ap.parse_args()

    from neosft.data.build import build
    from neosft.train.tiny import make_tiny_qwen2

    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
    with tempfile.TemporaryDirectory(prefix="neosft-bench-") as tmp:
        tmp = Path(tmp)
        corpus.write(str(tmp / "corpus.json"), args.mb)
        part = tmp / "data" / build(str(tmp / "corpus.json"), str(tmp / "data"), [VARIANT]).variants[VARIANT].files[0]
        texts = [r["instruction"] + r["output"] for r in map(json.loads, part.open(encoding="utf-8"))]
        model = make_tiny_qwen2(tmp / "model", texts[:2000])

        runs = {
            "plain HF Trainer": lambda out: plain_hf(part, model, out, args.steps),
            "neosft train": lambda out: neosft_train(tmp / "data", model, out, args.steps, False),
            "neosft train --packing": lambda out: neosft_train(tmp / "data", model, out, args.packed_steps, True),
            "neosft train --method lora": lambda out: neosft_train(tmp / "data", model, out, args.steps, False, "lora"),
        }
        trials: dict[str, list[dict]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            for i, (name, fn) in enumerate(runs.items()):
                r = fn(tmp / f"run-{round_}-{i}")
                r["tokens_per_s"] = r["tokens"] / r["train_runtime_s"]
                trials[name].append(r)
        results = {name: sorted(rs, key=lambda r: r["tokens_per_s"])[len(rs) // 2] for name, rs in trials.items()}
        base = results["plain HF Trainer"]["tokens_per_s"]
        print(f"{'run':<27} {'steps':>5} {'real tokens':>11} {'train s':>8} {'tokens/s':>9} {'vs plain':>8}")
        for name, r in results.items():
            print(
                f"{name:<27} {r['steps']:>5} {r['tokens']:>11,} {r['train_runtime_s']:>8.1f} "
                f"{r['tokens_per_s']:>9,.0f} {r['tokens_per_s'] / base:>7.2f}x"
            )
        full, lora = results["neosft train"], results["neosft train --method lora"]
        print(
            f"LoRA vs full (method full is `neosft train` above): {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x "
            f"tokens/s; trainable {lora['trainable']:,} vs {full['trainable']:,} parameters, trainable state "
            f"{lora['trainable_state_mb']:,.2f} MB vs {full['trainable_state_mb']:,.2f} MB "
            f"({lora['trainable_state_mb'] / full['trainable_state_mb']:.1%})"
        )
        eff = padding_efficiency(tmp / "data", model, batch=8)
        print(
            f"padding efficiency: batch 1 (the table's): 1.00; padded batches of {eff['padded_batch']}: "
            f"{eff['padded_efficiency']:.2f}; packed (flattened, no padding): {eff['packed_efficiency']:.2f}, "
            f"{eff['samples']} samples in {eff['packed_sequences']} sequences, "
            f"{eff['packed_fill']:.0%} of cutoff_len filled"
        )
        print(json.dumps({"runs": results, "padding": eff}, default=float))


if __name__ == "__main__":
    main()

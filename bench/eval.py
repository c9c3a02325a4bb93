"""Eval throughput against training throughput of the same tiny Qwen2: `neosft train` on one variant, then the eval
that ends it, on the shipped sample with held-out records. Both count real (non-padding) input tokens per second:
training from run.json (tokens / train_runtime_s), the eval from eval.json (`tokens_per_s`, the scoring part).
Then the greedy samples: the same prompts answered in left-padded batches (`GENERATE_BATCH`) against one at a time,
by the trained model, in the same process (`samples_speedup`: one-at-a-time seconds over batched seconds).

    PYTHONPATH=. python bench/eval.py [--variant conversations] [--steps 8] [--holdout 64] [--samples 32]

Prints one JSON line; the README records the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="conversations")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--holdout", default="64")
    parser.add_argument("--samples", type=int, default=32, help="prompts answered, batched and one at a time")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    options = parser.parse_args()

    from neosft.artifacts import EvalRecord, Manifest, RunRecord
    from neosft.data.build import build
    from neosft.sample import SAMPLE_CORPUS
    from neosft.storage import location
    from neosft.train.tiny import make_tiny_qwen2

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(str(SAMPLE_CORPUS), str(work / "data"), holdout=options.holdout)
        entry = Manifest.read(str(work / "data")).variants[options.variant]
        rows = [json.loads(line) for f in entry.files for line in (work / "data" / f).read_text().splitlines()]
        model = make_tiny_qwen2(work / "model", [r["instruction"] + r["output"] for r in rows])
        trained = subprocess.run(
            [
                sys.executable,
                "-m",
                "neosft",
                "train",
                "--variant",
                options.variant,
                "--data",
                str(work / "data"),
                "--output",
                str(work / "out"),
                "--model",
                str(model),
                "--deepspeed",
                "none",
                "--max-steps",
                str(options.steps),
                "--set",
                "gradient_accumulation_steps=8",
                "--work-dir",
                str(work / "scratch"),
                "--eval-samples",
                "0",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if trained.returncode:
            raise SystemExit(f"neosft train failed: {trained.stderr.strip().splitlines()[-1:]}")
        run, evaluated = RunRecord.read(location(work / "out")), EvalRecord.read(location(work / "out"))
        one, batched, same = _samples(work / "out" / "final", str(work / "data"), options)
    train_rate = run.tokens / run.train_runtime_s
    print(
        json.dumps(
            {
                "variant": options.variant,
                "train_tokens_per_s": round(train_rate, 1),
                "eval_tokens_per_s": evaluated.tokens_per_s,
                "ratio": round(evaluated.tokens_per_s / train_rate, 2),
                "eval_label_tokens": evaluated.chat.tokens,
                "eval_s": evaluated.elapsed_s,
                "samples": options.samples,
                "samples_one_at_a_time_s": round(one, 2),
                "samples_batched_s": round(batched, 2),
                "samples_speedup": round(one / batched, 2),
                "samples_identical": same,
            }
        )
    )


def _samples(final: Path, data: str, options) -> tuple[float, float, bool]:
    """Seconds to answer the first `options.samples` held-out prompts one at a time and in batches, and whether the
    answers are the same."""
    import time

    from neosft.eval import GENERATE_BATCH
    from neosft.eval.evaluate import Settings, load_output, prompts, read_heldout
    from neosft.eval.score import answers

    model, tokenizer, _ = load_output(final)
    questions = prompts(read_heldout(data), Settings(samples=options.samples))
    seconds, texts = [], []
    for batch in (1, GENERATE_BATCH):
        started = time.perf_counter()
        texts.append(answers(model, tokenizer, questions, options.max_new_tokens, batch=batch))
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1], texts[0] == texts[1]


if __name__ == "__main__":
    main()

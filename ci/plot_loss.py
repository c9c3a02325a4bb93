"""Plot the training loss of every variant of a run: python ci/plot_loss.py s3://bucket/prefix/runs/RUN loss.png"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from neosft.storage import location


def main(run_uri: str, out: str) -> None:
    run = location(run_uri)
    fig, ax = plt.subplots(figsize=(9, 5))
    for name in run.list():
        if name.endswith("/loss.jsonl") and name.count("/") == 1:
            rows = [json.loads(line) for line in (run / name).read_bytes().decode().splitlines() if line.strip()]
            rows = [r for r in rows if "loss" in r]
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=name.split("/")[0])
    ax.set(xlabel="step", ylabel="training loss", title=run_uri)
    ax.legend()
    fig.savefig(out, dpi=120, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])

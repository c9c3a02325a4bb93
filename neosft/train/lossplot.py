"""Loss curves: one run's raw and smoothed loss (loss.png), or several runs in one figure (`neosft plot`)."""

from __future__ import annotations

import io
import math

from neosft.artifacts import LossRecord


def smooth(values: list[float]) -> list[float]:
    """Exponential moving average, stronger for longer curves (LLaMA-Factory's `smooth`)."""
    if not values:
        return []
    weight = 1.8 * (1 / (1 + math.exp(-0.05 * len(values))) - 0.5)
    out, last = [], values[0]
    for v in values:
        last = last * weight + (1 - weight) * v
        out.append(last)
    return out


def _curve(records: list[LossRecord], key: str) -> tuple[list[int], list[float]]:
    points = [(r.current_steps, getattr(r, key)) for r in records if getattr(r, key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def png(figure) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def run_plot(records: list[LossRecord], title: str) -> bytes:
    """PNG of one run: raw loss, smoothed loss, and eval loss when there is one."""
    from matplotlib.figure import Figure  # no pyplot: safe on the uploader thread

    figure = Figure(figsize=(9, 5))
    ax = figure.subplots()
    steps, loss = _curve(records, "loss")
    ax.plot(steps, loss, color="#1f77b4", alpha=0.35, label="loss")
    ax.plot(steps, smooth(loss), color="#1f77b4", label="loss (smoothed)")
    eval_steps, eval_loss = _curve(records, "eval_loss")
    if eval_steps:
        ax.plot(eval_steps, eval_loss, "o-", color="#d62728", label="eval loss")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png(figure)


def compare_plot(runs: dict[str, list[LossRecord]]) -> bytes:
    """PNG comparing the smoothed loss of several runs (labelled by the dict's keys)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5))
    ax = figure.subplots()
    for label, records in runs.items():
        steps, loss = _curve(records, "loss")
        (line,) = ax.plot(steps, smooth(loss), label=label)
        ax.plot(steps, loss, color=line.get_color(), alpha=0.2)
    ax.set(xlabel="step", ylabel="loss (smoothed; raw faint)", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return png(figure)

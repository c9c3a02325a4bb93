"""A run's comparison from the eval records in its folder: RUN/comparison.md (table, format matrix, samples side by
side) and RUN/eval.png (chat loss per variant, the base model as a line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neosft.artifacts import EvalRecord, RunRecord, diverged, shown
from neosft.errors import UserError
from neosft.progress import text_table
from neosft.storage import Location
from neosft.variants import VARIANTS

BASE = "base"  # RUN/base/eval.json
COMPARISON, PLOT = "comparison.md", "eval.png"


@dataclass(frozen=True)
class Evaluated:
    """One variant's run record and eval record (either may be missing while the run goes on)."""

    name: str
    run: RunRecord | None
    eval: EvalRecord | None


def collect(run: Location) -> tuple[list[Evaluated], EvalRecord | None]:
    """The variants found in RUN (in the table's order) and the base's eval record."""
    found = []
    for name in VARIANTS:
        output = run / name
        record, evaluated = RunRecord.read(output), EvalRecord.read(output)
        if record or evaluated:
            found.append(Evaluated(name, record, evaluated))
    return found, EvalRecord.read(run / BASE)


def table(variants: list[Evaluated], base: EvalRecord | None) -> list[list[str]]:
    """VARIANT, METHOD, STEPS, TRAIN LOSS, CHAT LOSS, PERPLEXITY, VS BASE: the base first."""
    rows = []
    if base:
        rows.append([BASE, base.method, "-", "-", shown(base.chat.loss), shown(base.chat.perplexity, 2), "-"])
    for v in variants:
        chat = v.eval.chat if v.eval else None
        rows.append(
            [
                v.name,
                v.eval.method if v.eval else "-",
                str(v.run.steps) if v.run else "-",
                shown(v.run.final_loss if v.run else None),
                shown(chat.loss if chat else None),
                shown(chat.perplexity if chat else None, 2),
                f"{chat.loss - base.chat.loss:+.4f}"
                if chat and base and not diverged(chat.loss) and not diverged(base.chat.loss)
                else "-",
            ]
        )
    return rows


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]


def _indented(text: str) -> list[str]:
    """A Markdown code block by indentation: no fence for the text to close."""
    return ["    " + line for line in (text or "(empty)").splitlines()] or ["    (empty)"]


HEADERS = ["variant", "method", "steps", "final train loss", "chat loss", "perplexity", "vs base"]


def markdown(run_name: str, variants: list[Evaluated], base: EvalRecord | None) -> str:
    evaluated = [(v.name, v.eval) for v in variants if v.eval] + ([(BASE, base)] if base else [])
    first = base or (evaluated[0][1] if evaluated else None)  # the yardstick: the base's held-out set
    lines = [f"# Run {run_name}: which variant makes the better chat model?", ""]
    if first:
        lines += [
            (
                f"Chat loss: token-weighted mean cross-entropy over the assistant turns of {first.chat.samples} "
                f"held-out conversations ({first.chat.tokens:,} label tokens, LLaMA-Factory's `qwen` template, "
                f"cutoff_len {first.cutoff_len}; held-out sha256 {first.heldout_sha256[:12]}), the same tokens for "
                "every model. Lower is better."
            ),
            "",
        ]
        others = sorted({n for n, e in evaluated if e.heldout_sha256 != first.heldout_sha256})
        if others:
            lines += [f"**Not comparable**: {', '.join(others)} scored other held-out records.", ""]
    lines += [*_markdown_table(HEADERS, table(variants, base)), ""]
    if first:
        columns = list(first.matrix)
        lines += [
            "## Format matrix",
            "",
            (
                "Response loss of each model (rows) on each variant's held-out rows "
                "(columns), each encoded as that variant trains."
            ),
            "",
            *_markdown_table(
                ["model", *columns],
                [
                    [name, *(shown(e.matrix[c].loss) if c in e.matrix else "-" for c in columns)]
                    for name, e in evaluated
                ],
            ),
            "",
        ]
        lines += ["## Samples", "", "Greedy answers to the first round of the first held-out conversations.", ""]
        for i, sample in enumerate(first.samples):
            lines += [f"### {i + 1}", "", *_indented(sample["prompt"]), ""]
            for name, e in evaluated:
                answer = e.samples[i]["answer"] if i < len(e.samples) else "(none)"
                lines += [f"**{name}**", "", *_indented(answer), ""]
    return "\n".join(lines) + "\n"


def plot(variants: list[Evaluated], base: EvalRecord | None) -> bytes:
    """PNG: a bar of chat loss per evaluated variant, the base model's as a dashed line; a diverged model's
    loss is named so on an empty bar."""
    from matplotlib.figure import Figure

    from neosft.train.lossplot import png

    scored = [(v.name, v.eval.chat.loss) for v in variants if v.eval]
    figure = Figure(figsize=(8, 4.5))
    ax = figure.subplots()
    losses = [0.0 if diverged(loss) else loss for _, loss in scored]
    bars = ax.bar([name for name, _ in scored], losses, color="#1f77b4")
    ax.bar_label(bars, labels=[shown(loss) for _, loss in scored])
    if base and not diverged(base.chat.loss):
        ax.axhline(base.chat.loss, color="#d62728", linestyle="--", label=f"base ({shown(base.chat.loss)})")
        ax.legend()
    finite = [loss for loss in [loss for _, loss in scored] + ([base.chat.loss] if base else []) if not diverged(loss)]
    if finite:  # differences between fine-tunes are small: the axis spans the values, not zero to them
        low, high = min(finite), max(finite)
        margin = max(high - low, 0.01 * high, 1e-3)
        ax.set_ylim(max(0.0, low - margin), high + margin)
    ax.set(ylabel="chat loss (held-out, lower is better)", title="chat loss per variant")
    ax.grid(alpha=0.3, axis="y")
    return png(figure)


def summary(run: Location) -> str:
    """The comparison table as text, as `neosft run`, `neosft eval` and `neosft compare` print it."""
    return text_table(HEADERS, table(*collect(run)))


def _name(run: Location) -> str:
    uri = str(run).rstrip("/")
    return uri.rsplit("/", 1)[-1] if "://" in uri else Path(uri).resolve().name


def write(run: Location) -> str:
    """Write RUN/comparison.md and RUN/eval.png from what RUN holds; returns the Markdown."""
    variants, base = collect(run)
    if not base and not any(v.eval for v in variants):
        raise UserError(
            f"{run} holds no eval.json yet (RUN/<variant>/eval.json, RUN/base/eval.json): run `neosft eval` first"
        )
    text = markdown(_name(run), variants, base)
    (run / COMPARISON).write_bytes(text.encode())
    (run / PLOT).write_bytes(plot(variants, base))
    return text

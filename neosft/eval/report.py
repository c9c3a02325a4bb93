"""A run's comparison from the eval records in its folder: RUN/comparison.md (table with 95 % intervals and ranks,
a verdict per pair, format matrix, samples side by side) and RUN/eval.png (chat loss per variant with its interval,
the base model as a line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from neosft.artifacts import EvalRecord, RunRecord, diverged, shown
from neosft.errors import UserError
from neosft.eval.uncertainty import RESAMPLES, SEED, Paired, conversations_needed, paired
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


def comparable(variants: list[Evaluated], base: EvalRecord | None) -> list[tuple[str, EvalRecord]]:
    """The evaluated models (the base first) scored on the yardstick's held-out set: the base's, else the first's."""
    evaluated = ([(BASE, base)] if base else []) + [(v.name, v.eval) for v in variants if v.eval]
    if not evaluated:
        return []
    sha = evaluated[0][1].heldout_sha256
    return [(name, e) for name, e in evaluated if e.heldout_sha256 == sha]


def uncertainty(models: list[tuple[str, EvalRecord]]) -> Paired | None:
    """The paired bootstrap over the models' per-conversation scores (None without a model); a diverged model has
    no interval and takes no part."""
    models = [(name, e) for name, e in models if not diverged(e.chat.loss)]
    if not models:
        return None
    return paired({name: (e.conversation_loss, e.conversation_tokens) for name, e in models})


def _number(x: float, sign: str = "") -> str:
    return f"{round(x, 4) + 0.0:{sign}.4f}"  # + 0.0: no "-0.0000" for a difference of -1e-12


def _interval(low: float, high: float, sign: str = "") -> str:
    return f"[{_number(low, sign)}, {_number(high, sign)}]"


def table(variants: list[Evaluated], base: EvalRecord | None, bootstrap: Paired | None) -> list[list[str]]:
    """VARIANT, METHOD, STEPS, TRAIN LOSS, CHAT LOSS [95 %], PERPLEXITY, VS BASE [95 %], RANK: the base first."""
    ranks = bootstrap.ranks() if bootstrap else {}

    def loss(name: str, e: EvalRecord) -> str:
        iv = bootstrap.loss.get(name) if bootstrap else None
        return shown(e.chat.loss) + (f" {_interval(iv.low, iv.high)}" if iv and not diverged(e.chat.loss) else "")

    def vs_base(name: str, e: EvalRecord) -> str:
        if base is None:
            return "-"
        if bootstrap and name in bootstrap.loss and BASE in bootstrap.loss:
            d = bootstrap.between(name, BASE)
            return f"{_number(d.estimate, '+')} {_interval(d.low, d.high, '+')}"
        return f"{e.chat.loss - base.chat.loss:+.4f}"

    rows = []
    if base:
        rows.append(
            [
                BASE,
                base.method,
                "-",
                "-",
                loss(BASE, base),
                shown(base.chat.perplexity, 2),
                "-",
                str(ranks.get(BASE, "-")),
            ]
        )
    for v in variants:
        e = v.eval
        rows.append(
            [
                v.name,
                e.method if e else "-",
                str(v.run.steps) if v.run else "-",
                shown(v.run.final_loss if v.run else None),
                loss(v.name, e) if e else "-",
                shown(e.chat.perplexity, 2) if e else "-",
                vs_base(v.name, e) if e else "-",
                str(ranks.get(v.name, "-")) if e else "-",
            ]
        )
    return rows


def benchmark_lines(evaluated: list[tuple[str, EvalRecord]]) -> list[str]:
    """The lm-evaluation-harness scores of the models that have any: one column per task and metric, value ± the
    harness's standard error."""
    columns = sorted({(task, metric) for _, e in evaluated for task, m in e.benchmarks.items() for metric in m})
    if not columns:
        return []

    def cell(e: EvalRecord, task: str, metric: str) -> str:
        score = e.benchmarks.get(task, {}).get(metric)
        if score is None:
            return "-"
        return f"{score['value']:.4f}" + (f" ± {score['stderr']:.4f}" if score["stderr"] is not None else "")

    return [
        "## Benchmarks",
        "",
        "lm-evaluation-harness scores (± the harness's standard error); higher is better for accuracies.",
        "",
        *_markdown_table(
            ["model", *(f"{task} {metric}" for task, metric in columns)],
            [[name, *(cell(e, t, m) for t, m in columns)] for name, e in evaluated if e.benchmarks],
        ),
        "",
    ]


def verdicts(bootstrap: Paired) -> list[str]:
    """One sentence per pair of models: the base against each variant first, then the variants' pairs."""
    return [bootstrap.verdict(b, a) for a, b in bootstrap.difference]


def too_wide(bootstrap: Paired | None) -> str | None:
    """A warning when no pair of models can be told apart, with the held-out size that would resolve a difference
    of the observed size; None when some pair is resolved (or there is no pair)."""
    if bootstrap is None or not bootstrap.difference or any(d.resolved for d in bootstrap.difference.values()):
        return None
    hardest = max(bootstrap.difference.values(), key=lambda d: d.se)
    if hardest.se == 0:
        return f"the models score identically on every one of the {bootstrap.conversations:,} held-out conversations"
    gap = max(abs(d.estimate) for d in bootstrap.difference.values())
    return (
        f"no two models' chat losses can be told apart on {bootstrap.conversations:,} held-out conversations (widest "
        f"95 % interval of a difference {hardest.low:+.4f} to {hardest.high:+.4f}): resolving a difference of "
        f"{gap:.4f} needs about {conversations_needed(gap, hardest.se, bootstrap.conversations):,} conversations "
        "(neosft data build --holdout N)"
    )


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


HEADERS = [
    "variant",
    "method",
    "steps",
    "final train loss",
    "chat loss [95 %]",
    "perplexity",
    "vs base [95 %]",
    "rank",
]


def markdown(title: str, variants: list[Evaluated], base: EvalRecord | None, bootstrap: Paired | None) -> str:
    evaluated = [(v.name, v.eval) for v in variants if v.eval] + ([(BASE, base)] if base else [])
    first = base or (evaluated[0][1] if evaluated else None)  # the yardstick: the base's held-out set
    lines = [f"# {title}: which variant makes the better chat model?", ""]
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
    lines += [*_markdown_table(HEADERS, table(variants, base, bootstrap)), ""]
    if bootstrap and bootstrap.difference:
        lines += [
            "## Verdicts",
            "",
            (
                f"95 % intervals from a paired bootstrap over the {bootstrap.conversations:,} held-out conversations "
                f"({RESAMPLES:,} resamples, seed {SEED}, percentile intervals): every model resampled with the same conversations, each statistic a ratio of "
                "summed loss to label tokens like the chat loss. A verdict is given only where the interval of a "
                "difference excludes 0; models share a rank unless one is resolvably better than the other."
            ),
            "",
            *(f"- {sentence}" for sentence in verdicts(bootstrap)),
            "",
        ]
        if warning := too_wide(bootstrap):
            lines += [f"**Too few held-out conversations**: {warning}.", ""]
    lines += benchmark_lines(evaluated)
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


def plot(variants: list[Evaluated], base: EvalRecord | None, bootstrap: Paired | None) -> bytes:
    """PNG: a bar of chat loss per evaluated variant with its 95 % interval, the base model's as a dashed line and
    its interval as a band; a diverged model's loss is named so on an empty bar."""
    from matplotlib.figure import Figure

    from neosft.train.lossplot import png

    scored = [(v.name, v.eval.chat.loss) for v in variants if v.eval]
    figure = Figure(figsize=(8, 4.5))
    ax = figure.subplots()
    losses = [0.0 if diverged(loss) else loss for _, loss in scored]
    intervals = [bootstrap.loss.get(name) if bootstrap and not diverged(loss) else None for name, loss in scored]
    errors = [
        [loss - iv.low if iv else 0.0 for loss, iv in zip(losses, intervals)],
        [iv.high - loss if iv else 0.0 for loss, iv in zip(losses, intervals)],
    ]
    bars = ax.bar([name for name, _ in scored], losses, color="#1f77b4", yerr=errors, capsize=6, ecolor="#333333")
    ax.bar_label(bars, labels=[shown(loss) for _, loss in scored], label_type="center", color="white")
    drawn = (
        [iv.low for iv in intervals if iv]
        + [iv.high for iv in intervals if iv]
        + [loss for _, loss in scored if not diverged(loss)]
    )
    if base and not diverged(base.chat.loss):
        ax.axhline(base.chat.loss, color="#d62728", linestyle="--", label=f"base ({shown(base.chat.loss)})")
        band = bootstrap.loss.get(BASE) if bootstrap else None
        if band:
            ax.axhspan(band.low, band.high, color="#d62728", alpha=0.12, label="base 95 % interval")
            drawn += [band.low, band.high]
        drawn.append(base.chat.loss)
        ax.legend()
    if drawn:  # differences between fine-tunes are small: the axis spans the values, not zero to them
        low, high = min(drawn), max(drawn)
        margin = max(high - low, 0.01 * high, 1e-3)
        ax.set_ylim(max(0.0, low - margin), high + margin)
    ax.set(ylabel="chat loss (held-out, lower is better)", title="chat loss per variant, 95 % intervals")
    ax.grid(alpha=0.3, axis="y")
    return png(figure)


def summary(run: Location) -> str:
    """The comparison table with its intervals and a verdict per pair, as `neosft run`, `neosft eval` and `neosft
    compare` print it."""
    variants, base = collect(run)
    return _text(variants, base, uncertainty(comparable(variants, base)))


def _text(variants: list[Evaluated], base: EvalRecord | None, bootstrap: Paired | None) -> str:
    lines = [text_table(HEADERS, table(variants, base, bootstrap))]
    if bootstrap and bootstrap.difference:
        lines += ["", *verdicts(bootstrap)]
    return "\n".join(lines)


def across(runs: list[Location]) -> tuple[list[Evaluated], Paired | None]:
    """Every evaluated model of every run in `runs`, named RUN/<variant> (RUN/base for a base), and their paired
    bootstrap; a `UserError` naming two models and their held-out sets unless every one scored the same records."""
    models = []
    for run in runs:
        variants, base = collect(run)
        name = _name(run)
        models += [Evaluated(f"{name}/{v.name}", v.run, v.eval) for v in variants if v.eval]
        if base:
            models.append(Evaluated(f"{name}/{BASE}", None, base))
    if not models:
        raise UserError(f"{', '.join(map(str, runs))} hold no eval.json yet: run `neosft eval` first")
    names = [_name(run) for run in runs]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UserError(f"two of the runs are named {twice}: compare runs whose folders have different names")
    first = models[0]
    for other in models[1:]:
        a, b = first.eval, other.eval
        if a and b and a.heldout_sha256 != b.heldout_sha256:
            raise UserError(
                f"{first.name} was scored on held-out set {a.heldout_sha256[:12]} ({a.dataset}) and {other.name} on "
                f"{b.heldout_sha256[:12]} ({b.dataset}): runs compare only on the same held-out records"
            )
    return models, uncertainty([(m.name, m.eval) for m in models if m.eval])


def write_across(runs: list[Location], dest: Path) -> tuple[str, str | None]:
    """Compare the runs in `runs` on their shared held-out set: DEST/comparison.md and DEST/eval.png; returns the
    text table with its verdicts, and `too_wide`'s warning."""
    models, bootstrap = across(runs)
    dest.mkdir(parents=True, exist_ok=True)
    title = "Runs " + ", ".join(_name(run) for run in runs)
    (dest / COMPARISON).write_text(markdown(title, models, None, bootstrap))
    (dest / PLOT).write_bytes(plot(models, None, bootstrap))
    return _text(models, None, bootstrap), too_wide(bootstrap)


def warning(run: Location) -> str | None:
    """`too_wide` of the models in RUN."""
    return too_wide(uncertainty(comparable(*collect(run))))


def measured_resolution(run: str) -> tuple[float, int, str]:
    """(the widest standard error of a difference, the held-out conversations, RUN) of the evaluated run in RUN, for
    `neosft plan`; a `UserError` when RUN holds fewer than two models scored on one held-out set."""
    from neosft.storage import location

    bootstrap = uncertainty(comparable(*collect(location(run.rstrip("/")))))
    if bootstrap is None or not bootstrap.difference:
        raise UserError(f"{run} holds fewer than two evaluated models on one held-out set: nothing to measure")
    if bootstrap.widest_se() == 0:
        raise UserError(f"{run}: its models score identically on every conversation: nothing to measure")
    return bootstrap.widest_se(), bootstrap.conversations, run


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
    bootstrap = uncertainty(comparable(variants, base))
    text = markdown(f"Run {_name(run)}", variants, base, bootstrap)
    (run / COMPARISON).write_bytes(text.encode())
    (run / PLOT).write_bytes(plot(variants, base, bootstrap))
    return text

"""The `neosft` command: a thin Click layer over the package; heavy imports happen inside commands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from neosft import __version__
from neosft.data.holdout import CLUSTER_DEFAULT as HOLDOUT_DEFAULT
from neosft.errors import UserError, redact
from neosft.eval import MAX_NEW_TOKENS
from neosft.progress import text_table
from neosft.train.spec import EVAL_SAMPLES, Finite, click_options, from_params
from neosft.variants import (
    DEFAULT_METHOD,
    LORA,
    METHODS,
    NUM_DEVICES,
    REILX_RUN,
    RULES,
    SHARED,
    TOTAL_EVAL_BATCH,
    TOTAL_TRAIN_BATCH,
    VARIANTS,
)

if TYPE_CHECKING:  # the backends import Helm and the Kubernetes client: only in the commands that use them
    from neosft.backends.base import ExecutionBackend
    from neosft.backends.types import RenderedRun

_TRAINER_KINDS = ["auto", "pytorchjob", "trainjob"]  # a run's trainer_kind: neosft.k8s.kinds.TRAINER_KINDS, or auto


class _UserFailure(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.secho(f"error: {self.message}", err=True, fg="red")


class _Group(click.Group):
    """Turns a `UserError` from any command into one red line on stderr and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            raise _UserFailure(redact(str(e))) from None  # a URL's credentials never reach the terminal
        except KeyboardInterrupt:
            click.secho("interrupted", err=True, fg="red")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="neosft")
def cli() -> None:
    """Supervised fine-tuning of Qwen2 on Kubernetes, from chat data to checkpoints in object storage.

    \b
    Example:
      neosft run                       # the whole pipeline on this machine
      neosft data build corpus.json --out s3://my-bucket/neosft/data
      neosft plan --data s3://my-bucket/neosft/data
      neosft submit --variant all --set s3.bucket=my-bucket --wait
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def variants(as_json: bool) -> None:
    """Print the variant table: rules and hyper-parameters."""
    if as_json:
        import json

        table = {name: {"rule": v.rule, **v.hyperparameters()} for name, v in VARIANTS.items()}
        click.echo(
            json.dumps(
                {
                    "variants": table,
                    "num_devices": NUM_DEVICES,
                    "total_train_batch_size": TOTAL_TRAIN_BATCH,
                    "total_eval_batch_size": TOTAL_EVAL_BATCH,
                    "method": DEFAULT_METHOD,
                    "lora": LORA.record(),
                },
                indent=2,
            )
        )
        return
    width = max(map(len, VARIANTS))
    click.echo(f"{'variant':<{width}}  learning_rate  cutoff_len  rule")
    for name, v in VARIANTS.items():
        click.echo(f"{name:<{width}}  {v.learning_rate:<13g}  {v.cutoff_len:<10}  {v.rule}")
    click.echo(
        f"\nshared by all: {NUM_DEVICES} devices, total train batch {TOTAL_TRAIN_BATCH}, total eval batch {TOTAL_EVAL_BATCH}"
    )
    for key, value in SHARED.items():
        click.echo(f"  {key} = {value}")
    click.echo(f"\nmethod: {DEFAULT_METHOD} (--method full: every weight); LoRA settings (--lora-*):")
    for key, value in LORA.record().items():
        click.echo(f"  {key} = {value}")


_rules = click.option(
    "--rules",
    type=click.Choice(RULES),
    default="seed",
    show_default=True,
    help="seed: the model card's rules; reilx: REILX's published scripts, byte for byte.",
)


@cli.group()
def data() -> None:
    """Build the SFT datasets from a ShareGPT corpus."""


@data.command("build")
@click.argument("source")
@click.option("--out", "dest", required=True, help="Output folder: a local path or s3://bucket/prefix.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="Comma-separated variants to build.")
@click.option("--joiner", default="\n\n", show_default=repr("\n\n"), help="Joins turns inside one field.")
@click.option("--input-prompt", default="", help="Value of every row's `input` field.")
@click.option("--shard-rows", default=100_000, show_default=True, type=int, help="Rows per part file.")
@click.option("--tokenizer", type=click.Path(), help="tokenizer.json (or its folder) for token-length stats.")
@click.option("--build-id", help="Recorded in the manifest, for `neosft data wait --build-id`.")
@_rules
@click.option(
    "--holdout",
    help="Records set aside for `neosft eval` before any variant: N, P% or P%:N (at most N); "
    f"0: none  [default: {HOLDOUT_DEFAULT}; 0 with --rules reilx]",
)
def data_build(source, dest, variants, joiner, input_prompt, shard_rows, tokenizer, build_id, rules, holdout) -> None:
    """Build the datasets from SOURCE into --out, in one streaming pass.

    SOURCE is a local path, s3://bucket/key, an https:// URL or hf://datasets/OWNER/NAME[@REVISION]/PATH
    holding a JSON array, JSON lines (either may be gzipped) or Parquet; or the word `sample` for the
    small sample corpus shipped with neosft.

    \b
    Example:
      neosft data build hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json --out s3://my-bucket/neosft/data
    """
    from neosft.data.build import build

    names = [n.strip() for n in variants.split(",")] if variants.strip() else []
    manifest = build(
        source,
        dest,
        names,
        joiner,
        input_prompt,
        shard_rows,
        tokenizer,
        build_id,
        rules,
        holdout or ("0" if rules == "reilx" else HOLDOUT_DEFAULT),
    )
    click.echo(
        f"{manifest.source.records:,} records read, {manifest.kept:,} kept; skipped: "
        + ", ".join(f"{k} {v:,}" for k, v in manifest.skipped.items())
    )
    for name, v in manifest.variants.items():
        line = f"  {name:<13} {v.rows:>10,} rows  in {len(v.files)} part(s)"
        if rules != "seed":  # each variant has its own skips
            line += "; skipped: " + ", ".join(f"{k} {n:,}" for k, n in v.skipped.items())
        if v.published:
            line += f"; {'equal to' if v.published.equal else 'differs from'} {v.published.uri}"
        click.echo(line)
    if manifest.heldout:
        click.echo(
            f"held out: {manifest.heldout.records:,} records ({manifest.heldout.spec}), in {manifest.parts}/heldout/"
        )
    for warning in manifest.warnings:
        click.secho(f"warning: {warning}", err=True, fg="yellow")
    click.echo(f"wrote {dest.rstrip('/')}/manifest.json")


@cli.command()
@click.option(
    "--variant", default="all", show_default=True, type=click.Choice([*VARIANTS, "all"]), help="Variant to plan."
)
@click.option("--data", "data_uri", help="Dataset folder (local or s3://)  [default: the newest `neosft run` dataset]")
@click.option(
    "--tokens-per-gpu-s",
    default=None,
    type=Finite(min=1),
    help="Training throughput per GPU [default: --gpu's, from a published measurement].",
)
@click.option(
    "--gpu",
    "gpu_type",
    default="h100",
    show_default=True,
    type=click.Choice(["a100", "h100", "h200"]),
    help="GPU type whose published throughput the hours assume.",
)
@click.option(
    "--from",
    "from_run",
    help="A finished run's OUTPUT folder (local or s3://): plan at the tokens/s per GPU it measured.",
)
@click.option(
    "--gpus", default=NUM_DEVICES, show_default=True, type=click.IntRange(min=1), help="GPUs in all (world size)."
)
@click.option("--gpu-memory", type=Finite(min=1), help="GB per GPU: also plan GPU memory for ZeRO-2 and ZeRO-3.")
@click.option(
    "--method",
    default=DEFAULT_METHOD,
    show_default=True,
    type=click.Choice(METHODS),
    help="lora: a LoRA adapter (the table's LoRA settings) on a frozen base; full: every weight.",
)
@click.option(
    "--run",
    "run_uri",
    help="A finished, evaluated run (RUN with RUN/<variant>/eval.json): measure how many held-out conversations "
    "resolve a difference from its bootstrap.",
)
def plan(
    variant: str,
    data_uri: str,
    tokens_per_gpu_s: float | None,
    gpu_type: str,
    from_run: str | None,
    gpus: int,
    gpu_memory: float | None,
    method: str,
    run_uri: str | None,
) -> None:
    """Estimate steps, tokens, GPU-hours, node disk and GPU memory before spending GPU money.

    \b
    Example:
      neosft plan --variant all --data s3://my-bucket/neosft/data --gpu-memory 80
    """
    from neosft.artifacts import Manifest
    from neosft.plan import default_tokens_per_gpu_s, plan_eval, render, render_eval, render_memory, render_resolution
    from neosft.plan import plan as make_plan
    from neosft.variants import gradient_accumulation

    gradient_accumulation(gpus)  # refuses a world size that does not divide the total batch
    names = list(VARIANTS) if variant == "all" else [variant]
    lora = LORA if method == "lora" else None
    if gpu_memory:
        cutoff = max(VARIANTS[n].cutoff_len for n in names)
        largest = ", ".join(n for n in names if VARIANTS[n].cutoff_len == cutoff)
        click.echo(render_memory(gpu_memory, gpus, cutoff, largest, lora))
        click.echo()
    speed = tokens_per_gpu_s or default_tokens_per_gpu_s(lora, gpu_type)
    if from_run:
        speed = _measured_speed(from_run, tokens_per_gpu_s)
    try:
        if data_uri is None:
            from neosft.runfolder import newest_local_dataset

            data_uri = newest_local_dataset()
        plans = make_plan(data_uri, names, speed, gpus)
        click.echo(render(plans, speed, gpus, lora))
        manifest = Manifest.read(data_uri)
        click.echo(render_eval(plan_eval(manifest, plans, speed, gpus)))
        if manifest.heldout and manifest.heldout.records:
            from neosft.eval.report import measured_resolution

            measured = measured_resolution(run_uri) if run_uri else None
            click.echo(render_resolution(manifest.heldout.records, measured))
    except UserError as e:
        if not gpu_memory:
            raise
        click.secho(f"warning: no steps or hours: {e}", err=True, fg="yellow")


def _measured_speed(run: str, tokens_per_gpu_s: float | None) -> float:
    """The tokens/s per GPU the finished run at `run` measured; refused beside --tokens-per-gpu-s."""
    from neosft.artifacts import RunRecord
    from neosft.plan import measured_tokens_per_gpu_s
    from neosft.storage import location

    if tokens_per_gpu_s:
        raise UserError("--from and --tokens-per-gpu-s both set the throughput: give one")
    record = RunRecord.read(location(run.rstrip("/")))
    if record is None or not record.train_runtime_s or not record.tokens:
        raise UserError(f"--from {run}: no finished run with measured tokens there (no final/run.json)")
    speed = measured_tokens_per_gpu_s(record)
    click.echo(
        f"throughput measured by {run}: {speed:,.0f} tokens/s per GPU ({record.method}, {record.world_size} GPUs)"
    )
    return speed


@cli.command("run")
@click.option(
    "--variant", default="all", show_default=True, type=click.Choice([*VARIANTS, "all"]), help="Variant(s) to train."
)
@click.option(
    "--source",
    default="sample",
    show_default=True,
    help="Corpus to build from: a path, s3://, https://, hf://datasets/... or `sample` (the shipped sample).",
)
@click.option(
    "--store",
    help="Object store: a folder (served by a local S3 server) or s3://bucket/prefix  [default: .neosft/store]",
)
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Training steps per variant  [default: 40]")
@click.option("--run-id", help="Name of the run; default: local-<UTC time>. Reusing one resumes it.")
@click.option(
    "--kind",
    "--backend",
    "trainer_kind",
    default="auto",
    show_default=True,
    type=click.Choice(_TRAINER_KINDS),
    help="Training objects to render and run here: TrainJob or PyTorchJob (auto: TrainJob); --backend: its old name.",
)
@click.option(
    "--method",
    default=DEFAULT_METHOD,
    show_default=True,
    type=click.Choice(METHODS),
    help="lora: LoRA adapters (the seed's method); full: every weight.",
)
@_rules
@click.option(
    "--reilx",
    is_flag=True,
    help="REILX's run of the seed, rehearsed: --rules reilx, LoRA, every record "
    "(no held-out split, so no eval); the tiny model keeps the rehearsal's learning rates.",
)
@click.option(
    "--benchmarks",
    "benchmark_spec",
    help="After each model's chat loss: lm-evaluation-harness tasks TASK[,TASK...] (names or task YAMLs). "
    "Needs neosft[eval].",
)
def run_pipeline(variant, source, store, steps, run_id, trainer_kind, method, rules, reilx, benchmark_spec) -> None:
    """The whole pipeline on this machine: no cluster, no GPU.

    Renders the chart as a cluster run would and runs its pods here: the data Job builds the four
    datasets, then each requested variant's training container trains a tiny Qwen2 on CPU with
    DeepSpeed, writing checkpoints, loss logs and plots where a cluster run puts them, beside the
    manifests it ran (runs/<run-id>/manifests.yaml).

    \b
    Example:
      neosft run --variant all
    """
    import signal
    from functools import partial

    from neosft import run as rehearsal
    from neosft.k8s.manifests import check_run_id

    names = list(VARIANTS) if variant == "all" else [variant]
    holdout = "0" if rules == "reilx" else rehearsal.HOLDOUT  # REILX's files hold every record
    if reilx:
        ctx = click.get_current_context()
        given = [
            f"--{name}"
            for name in ("method", "rules")
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            raise UserError(f"--reilx sets {given[0]} itself: drop {given[0]}")
        method, rules, holdout = REILX_RUN["train"]["method"], REILX_RUN["data"]["rules"], REILX_RUN["data"]["holdout"]
    tasks: tuple[str, ...] = ()
    if benchmark_spec is not None:
        from pathlib import Path

        from neosft.eval import benchmarks

        tasks = tuple(benchmarks.parse(benchmark_spec))
        benchmarks.check(list(tasks))
        tasks = tuple(str(Path(t).resolve()) if t.endswith(benchmarks.YAML) else t for t in tasks)  # the pods' cwd
    run_id = check_run_id(run_id or rehearsal.new_run_id())
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: stop the pods and the S3 server this run started
    with _backend(
        local=True, store=store, on_dataset=partial(rehearsal.tiny_model, rehearsal.model_folder(run_id))
    ) as backend:
        result = rehearsal.run(
            backend,
            names,
            source,
            run_id,
            steps or rehearsal.STEPS,
            trainer_kind,
            method=method,
            rules=rules,
            holdout=holdout,
            benchmarks=tasks,
        )
    click.echo(rehearsal.summary(result))
    click.echo(f"follow it: neosft status {run_id}; neosft logs {run_id} --variant {names[0]}")


@cli.command("eval")
@click.argument("target")
@click.option(
    "--base",
    is_flag=True,
    help="Score the base model of the run whose variants are in TARGET (RUN), into RUN/base/eval.json.",
)
@click.option("--model", help="With --base: the base model  [default: the one the run's variants trained from]")
@click.option("--data", "data_uri", help="Dataset folder with held-out records  [default: the run's]")
@click.option(
    "--samples",
    default=EVAL_SAMPLES,
    show_default=True,
    type=click.IntRange(min=0),
    help="Greedy answers to the first N held-out prompts.",
)
@click.option(
    "--max-new-tokens",
    default=MAX_NEW_TOKENS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Longest sample answer, in tokens.",
)
@click.option(
    "--benchmarks",
    "benchmark_spec",
    help="Then lm-evaluation-harness tasks, TASK[,TASK...] (names such as ifeval, mmlu, or task YAML paths): "
    "scores with their standard errors into eval.json. Needs neosft[eval].",
)
def eval_command(target, base, model, data_uri, samples, max_new_tokens, benchmark_spec) -> None:
    """Score a finished run (TARGET: its OUTPUT) or, with --base, its base model on the held-out records.

    Writes eval.json (chat loss, perplexity, format matrix, samples) beside the run, then refreshes
    RUN/comparison.md and RUN/eval.png.

    \b
    Example:
      neosft eval .neosft/store/neosft/runs/local-20261201-120000/multi
      neosft eval --base .neosft/store/neosft/runs/local-20261201-120000
    """
    from neosft.artifacts import shown
    from neosft.eval.evaluate import Settings
    from neosft.eval.outputs import eval_base, eval_output, in_run, run_of
    from neosft.eval.report import summary, warning
    from neosft.storage import location

    if model and not base:
        raise UserError("--model names the base model: use it with --base")
    tasks: tuple[str, ...] = ()
    if benchmark_spec is not None:
        from neosft.eval import benchmarks

        tasks = tuple(benchmarks.parse(benchmark_spec))
        benchmarks.check(list(tasks))
    settings = Settings(samples, max_new_tokens, benchmarks=tasks)
    record = eval_base(target, model, data_uri, settings) if base else eval_output(target, data_uri, settings)
    if base or in_run(target, record.name):
        run = location(target if base else run_of(target))
        click.echo(summary(run))
        if too_wide := warning(run):
            click.secho(f"warning: {too_wide}", err=True, fg="yellow")
    else:
        click.echo(
            f"{record.name}: chat loss {shown(record.chat.loss)}, perplexity {shown(record.chat.perplexity, 2)} "
            f"({record.chat.tokens:,} tokens)"
        )


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--out",
    "dest",
    type=click.Path(file_okay=False),
    help="Also copy comparison.md and eval.png here (with several RUNs: write them here).",
)
def compare(runs, dest) -> None:
    """Rewrite RUN/comparison.md and RUN/eval.png from the eval records in RUN, and print the table; with several
    RUNs, compare all their models (RUN/<variant>) on their shared held-out set into --out.

    RUN is the folder of a run's variants (local or s3://); no model is loaded. Runs are compared only where every
    model scored the same held-out records (the same sha256).

    \b
    Example:
      neosft compare s3://my-bucket/neosft/runs/20261201-120000-k3x9 --out collected/
      neosft compare runs/lora runs/full --out lora-vs-full/
    """
    from pathlib import Path

    from neosft.eval import report
    from neosft.storage import location

    folders = [location(run.rstrip("/")) for run in runs]
    if len(folders) > 1:
        if not dest:
            raise UserError("comparing several runs writes a comparison of its own: name where with --out DIR")
        text, too_wide = report.write_across(folders, Path(dest))
    else:
        [folder] = folders
        report.write(folder)
        if dest:
            Path(dest).mkdir(parents=True, exist_ok=True)
            for name in (report.COMPARISON, report.PLOT):
                (Path(dest) / name).write_bytes((folder / name).read_bytes())
        text, too_wide = report.summary(folder), report.warning(folder)
    click.echo(text)
    if too_wide:
        click.secho(f"warning: {too_wide}", err=True, fg="yellow")


@data.command("wait")
@click.argument("folder")
@click.option("--variant", type=click.Choice(list(VARIANTS)), help="Also require this variant in the manifest.")
@click.option("--timeout", default="1h", show_default=True, help="Give up after this long: seconds, or 30m, 12h, 7d.")
@click.option("--interval", default=15.0, show_default=True, type=Finite(min=0.01), help="Seconds between checks.")
@click.option("--build-id", help="Wait for the manifest of the build run with this --build-id, not an older one.")
def data_wait(folder, variant, timeout, interval, build_id) -> None:
    """Wait until FOLDER/manifest.json exists: training pods run this before they start."""
    import time

    from neosft.artifacts import MANIFEST, Manifest
    from neosft.progress import format_duration, parse_duration
    from neosft.storage import location

    manifest = location(folder) / MANIFEST
    timeout_s = parse_duration(timeout)
    deadline = time.monotonic() + timeout_s

    def ready() -> bool:
        return manifest.exists() and (build_id is None or Manifest.read(folder).build_id == build_id)

    if not ready():
        click.echo(f"waiting for {manifest}" + (f" of build {build_id}" if build_id else ""), err=True)
    while not ready():
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(
                f"{manifest}"
                + (f" of build {build_id}" if build_id else "")
                + f" did not appear within {format_duration(timeout_s)}"
            )
        time.sleep(min(interval, left))  # never past the deadline, whatever the interval
    if variant and variant not in Manifest.read(folder).variants:
        raise UserError(f"{folder} holds no {variant} dataset: neosft data build SOURCE --out {folder}")
    click.echo(f"{manifest} is ready")


@cli.command("check-storage")
@click.argument("uri")
def check_storage(uri) -> None:
    """Check that URI (s3://bucket/prefix or an existing folder) is reachable and writable; creates nothing."""
    from neosft.storage import location

    location(uri).check(create=False)
    click.echo(f"{uri} is reachable")


_namespace = click.option("--namespace", "-n", help="Kubernetes namespace; default: the kubeconfig context's.")


def _backend(run: str | None = None, **options) -> ExecutionBackend:
    """The one factory of backends (`neosft.backends.backend_for`): local for `neosft run` and the runs it holds."""
    from neosft.backends import backend_for  # the backends import the Kubernetes client and Helm: not for --help

    return backend_for(run, **options)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _warn(line: str) -> None:
    click.secho(line, err=True, fg="yellow")


@cli.command()
@click.option(
    "--variant", type=click.Choice([*VARIANTS, "all"]), help="Variant to train; default: the values' `variants`."
)
@_namespace
@click.option("--values", "values_file", type=click.Path(dir_okay=False), help="A Helm values file for the chart.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a chart value (Helm syntax); repeatable.")
@click.option(
    "--source",
    help="Corpus the data Job builds (hf://, s3://, https://, 'sample'); default: the "
    "values' data.source, the real corpus m-a-p/neo_sft_phase2.",
)
@click.option("--data", "data_uri", help="Train on this existing dataset folder (s3://...) instead of building one.")
@click.option("--data-only", is_flag=True, help="Only build the datasets.")
@click.option(
    "--rules",
    type=click.Choice(RULES),
    help="Conversion rules of the data Job (seed: the model card's; reilx: REILX's scripts, byte for byte); "
    "default: the values' data.rules, seed.",
)
@click.option("--queue", help="Kueue LocalQueue for every Job and training object of the run.")
@click.option(
    "--kind",
    "--backend",
    "trainer_kind",
    type=click.Choice(_TRAINER_KINDS),
    help="Training objects: PyTorchJob (Kubeflow training operator v1.9) or TrainJob (Kubeflow Trainer v2); "
    "--backend: its old name, kept for one release. "
    "[default: the values' train.kind, else auto: what the cluster serves, TrainJob first; "
    "pytorchjob with --dry-run]",
)
@click.option("--run-id", help="Name of the run; default: the values' runId, else a new time-stamped id.")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    help="lora (LoRA adapters) or full (every weight); default: the values' train.method, lora.",
)
@click.option(
    "--reilx",
    is_flag=True,
    help="REILX's run of the seed exactly: its conversion scripts (--rules reilx), "
    "every record (data.holdout 0), LoRA r 16 / alpha 32 / dropout 0 on every projection, the card's "
    "hyper-parameters.",
)
@click.option("--dry-run", is_flag=True, help="Print the validated YAML instead of applying it.")
@click.option("--wait", is_flag=True, help="Wait until every Job and training object has finished.")
@click.option(
    "--timeout",
    default="7d",
    show_default=True,
    help="With --wait: give up waiting after this long (seconds, or 30m, 12h, 7d); the run goes on.",
)
def submit(
    variant,
    namespace,
    values_file,
    sets,
    source,
    data_uri,
    data_only,
    rules,
    queue,
    trainer_kind,
    run_id,
    method,
    reilx,
    dry_run,
    wait,
    timeout,
) -> None:
    """Render the chart for one run, validate it, and create it on the cluster.

    The data Job builds the run's own dataset; the training objects are created suspended and
    start only when it is published, so no GPU is held while it builds, or after it failed.

    \b
    Example:
      neosft submit --variant single --set s3.bucket=my-bucket --dry-run
      neosft submit --variant all --values my-values.yaml --wait
    """
    import os

    from neosft.backends.submit import submit_values
    from neosft.k8s.manifests import check_run_id, new_run_id
    from neosft.progress import format_duration, parse_duration

    timeout_s = parse_duration(timeout)
    values = submit_values(
        variant=variant,
        values_file=values_file,
        sets=sets,
        source=source,
        data_uri=data_uri,
        data_only=data_only,
        rules=rules,
        queue=queue,
        method=method,
        reilx=reilx,
        environ=dict(os.environ),
    )
    run_id = check_run_id(run_id or values.get("runId") or new_run_id())
    backend = _backend(namespace=namespace, offline=dry_run)
    run = backend.render(values, run_id, trainer_kind, click.echo)
    if dry_run:
        click.echo(run.yaml(), nl=False)
        return
    _print_plan(run, (values.get("train") or {}).get("method") or DEFAULT_METHOD)
    created = backend.submit(run, click.echo, _warn)
    click.echo(f"run {run_id} submitted to namespace {backend.namespace}: {', '.join(created)}")
    for what, uri in run.outputs().items():
        click.echo(f"  {what:<13} -> {uri}")
    click.echo(f"watch it: neosft status {run_id} -n {backend.namespace}")
    if wait:
        click.echo(f"waiting up to {format_duration(timeout_s)} for the run's Jobs and training objects to finish")
        backend.wait(run_id, click.echo, timeout_s)
        click.echo(f"run {run_id} succeeded")


def _print_plan(run: RenderedRun, method: str) -> None:
    """`neosft plan` for what is about to train, when its dataset is already in storage."""
    from neosft.plan import default_tokens_per_gpu_s, plan, render

    if not run.variants:
        return
    if run.builds_data:
        click.echo(f"plan: `neosft plan --data {run.data_uri}` once the data Job has built the datasets")
        return
    try:
        lora = LORA if method == "lora" else None
        speed = default_tokens_per_gpu_s(lora)
        click.echo(render(plan(run.data_uri, list(run.variants), speed), speed, lora=lora))
    except UserError as e:
        _warn(f"warning: no plan: {e}")


@cli.command()
@click.argument("run", required=False)
@_namespace
@click.option(
    "--store", help="Read the run's progress from this store (a folder or s3://bucket/prefix), with no cluster."
)
def status(run, namespace, store) -> None:
    """Show a run's Jobs and training objects, their pods and latest loss; without RUN, list the runs.

    \b
    Example:
      neosft status 20261128-120501-k3x9 -n ml
      neosft status local-20261128-120501 --store .neosft/store
    """
    if store:
        from neosft.runfolder import STORE_HEADERS, store_rows

        if run is None:
            raise UserError("--store reads one run: neosft status RUN --store STORE")
        click.echo(text_table(list(STORE_HEADERS), store_rows(store, run)))
        return
    backend = _backend(run, namespace=namespace)
    if run is None:
        listing = [[r.run_id, ",".join(r.holds), r.states, r.created] for r in backend.runs()]
        click.echo(
            text_table(["RUN", "HOLDS", "STATE", "CREATED"], listing)
            if listing
            else f"no neosft runs in namespace {backend.namespace}"
        )
        return
    report = backend.status(run)
    from neosft.artifacts import shown

    rows = [
        [
            p.kind,
            p.name,
            p.variant,
            p.state,
            p.pods,
            str(p.restarts),
            "-"
            if p.progress is None or p.progress.loss is None
            else f"{shown(p.progress.loss)} @ step {p.progress.step}/{p.progress.total_steps}",
        ]
        for p in report.parts
    ]
    click.echo(text_table(["KIND", "NAME", "VARIANT", "STATE", "PODS", "RESTARTS", "LATEST LOSS"], rows))
    for part in report.parts:
        if part.event:
            click.echo(f"{part.kind}/{part.name}: {part.event}")
    if report.problems:
        _warn(f"latest loss unavailable: {report.problems[0]}")


@cli.command()
@click.argument("run")
@click.option(
    "--variant", type=click.Choice([*VARIANTS, "data"]), help="Only this variant's pods ('data': the data Job)."
)
@click.option("--follow", "-f", is_flag=True, help="Stream the logs of one pod (the master) as they grow.")
@_namespace
def logs(run, variant, follow, namespace) -> None:
    """Print the logs of a run's pods (rank 0 first) or local processes; with --follow, one's as they grow."""
    sources = _backend(run, namespace=namespace).logs(run, variant, follow)
    for name, lines in sources:
        if len(sources) > 1:
            click.echo(f"==> {name} <==")
        for line in lines:
            click.echo(line)


@cli.command()
@click.argument("run")
@_namespace
def delete(run, namespace) -> None:
    """Delete a run's Jobs, training objects (pods go with them), Role and ServiceAccount; its data in S3 stays."""
    for name in _backend(run, namespace=namespace).delete(run):
        click.echo(f"deleted {name}")


@cli.command(hidden=True)
@click.argument("names", nargs=-1, required=True)
@click.option("--kind", type=click.Choice(["PyTorchJob", "TrainJob"]), default="PyTorchJob", show_default=True)
@click.option("--timeout", default="5m", show_default=True, help="How long to wait for an object not created yet.")
@_namespace
def release(names, kind, timeout, namespace) -> None:
    """Start this run's held training objects: the data Job's last step, once the dataset is published."""
    from neosft.progress import parse_duration

    for name in _backend(namespace=namespace).release(kind, list(names), parse_duration(timeout)):
        click.echo(f"released {name}")


_method = click.option(
    "--method",
    default=DEFAULT_METHOD,
    show_default=True,
    type=click.Choice(METHODS),
    help="lora: train a LoRA adapter on the frozen model (the seed's method); full: every weight.",
)


@cli.command("await-runtime", hidden=True)
@click.argument("runtime")
@_namespace
def await_runtime(runtime, namespace) -> None:
    """Wait until the TrainJob webhooks see this TrainingRuntime: the chart's pre-install check under Helm."""
    from neosft.k8s.cluster import Cluster

    Cluster(namespace).await_runtime(runtime)
    click.echo(f"TrainingRuntime/{runtime} is seen by the TrainJob webhooks")


@cli.command()
@click_options
def train(**params) -> None:
    """Fine-tune MODEL on one variant's dataset (a LoRA adapter, or with --method full every weight); resumes from
    OUTPUT's newest complete checkpoint.

    Run it under torchrun (one process per GPU) or as a single process. Gradient accumulation keeps the
    total batch at 64 for any world size that divides it. OUTPUT receives loss.jsonl, loss.png (every
    --upload-every seconds), checkpoints/checkpoint-N/ and final/ (the PEFT adapter, or with --method
    full the model; tokenizer; run.json last).
    An OUTPUT whose run finished is left as it is.

    \b
    Example:
      torchrun --nproc-per-node=8 -m neosft train --variant single \\
        --data s3://my-bucket/neosft/data --output s3://my-bucket/neosft/runs/r1/single
    """
    from neosft.step import train_step

    train_step(from_params(params))


@cli.command()
@click.argument("output")
@click.option("--to", "dest", required=True, help="Folder for the merged model: a local path or s3://bucket/prefix.")
@click.option(
    "--dtype",
    default="base",
    show_default=True,
    type=click.Choice(["base", "bf16"]),
    help="Weights in the base model's own dtype (a float32 base merges to float32), or in bf16.",
)
def merge(output, dest, dtype) -> None:
    """Merge the LoRA adapter of a finished run (its OUTPUT folder) into the base model: plain transformers weights.

    \b
    Example:
      neosft merge s3://my-bucket/neosft/runs/r1/single --to s3://my-bucket/neosft/merged/r1-single
    """
    from neosft.train.lora import merge as merge_adapter

    merge_adapter(output, dest, dtype)
    click.echo(f"wrote {dest}")


@cli.command()
@click.argument("outputs", nargs=-1, required=True)
@click.option("--out", "dest", default="loss.png", show_default=True, help="The figure: a local path or s3:// URI.")
def plot(outputs, dest) -> None:
    """Compare the loss curves of several runs (their OUTPUT folders) in one figure.

    \b
    Example:
      neosft plot s3://my-bucket/neosft/runs/r1/{conversations,multi,single,all_pair} --out compare.png
    """
    from neosft.artifacts import LOSSES, read_losses
    from neosft.storage import location
    from neosft.train.lossplot import compare_plot

    runs = {}
    for output in outputs:
        where = location(output.rstrip("/")) / LOSSES
        runs[output.rstrip("/")] = read_losses(where.read_bytes(), str(where))
    location(dest).write_bytes(compare_plot(runs))
    click.echo(f"wrote {dest}")


def main() -> None:
    cli(prog_name="neosft")

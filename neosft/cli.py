"""The `neosft` command: a thin Click layer over the package; heavy imports happen inside commands."""

from __future__ import annotations

import sys

import click

from neosft import __version__
from neosft.errors import UserError
from neosft.chat import DEFAULT_SYSTEM
from neosft.data.holdout import CLUSTER_DEFAULT as HOLDOUT_DEFAULT
from neosft.train import DEFAULT_MODEL
from neosft.eval import MAX_NEW_TOKENS, SAMPLES
from neosft.variants import NUM_DEVICES, SHARED, TOTAL_EVAL_BATCH, TOTAL_TRAIN_BATCH, VARIANTS


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
            raise _UserFailure(str(e)) from None
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
        click.echo(json.dumps({"variants": table, "num_devices": NUM_DEVICES,
                               "total_train_batch_size": TOTAL_TRAIN_BATCH, "total_eval_batch_size": TOTAL_EVAL_BATCH}, indent=2))
        return
    width = max(map(len, VARIANTS))
    click.echo(f"{'variant':<{width}}  learning_rate  cutoff_len  rule")
    for name, v in VARIANTS.items():
        click.echo(f"{name:<{width}}  {v.learning_rate:<13g}  {v.cutoff_len:<10}  {v.rule}")
    click.echo(f"\nshared by all: {NUM_DEVICES} devices, total train batch {TOTAL_TRAIN_BATCH}, total eval batch {TOTAL_EVAL_BATCH}")
    for key, value in SHARED.items():
        click.echo(f"  {key} = {value}")


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
@click.option("--holdout", default=HOLDOUT_DEFAULT, show_default=True,
              help="Records set aside for `neosft eval` before any variant: N, P% or P%:N (at most N); 0: none.")
def data_build(source, dest, variants, joiner, input_prompt, shard_rows, tokenizer, build_id, holdout) -> None:
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
    manifest = build(source, dest, names, joiner, input_prompt, shard_rows, tokenizer, build_id, holdout)
    click.echo(f"{manifest.source.records:,} records read, {manifest.kept:,} kept; skipped: "
               + ", ".join(f"{k} {v:,}" for k, v in manifest.skipped.items()))
    for name, v in manifest.variants.items():
        click.echo(f"  {name:<13} {v.rows:>10,} rows  in {len(v.files)} part(s)")
    if manifest.heldout:
        click.echo(f"held out: {manifest.heldout.records:,} records ({holdout}), in {manifest.parts}/heldout/")
    for warning in manifest.warnings:
        click.secho(f"warning: {warning}", err=True, fg="yellow")
    click.echo(f"wrote {dest.rstrip('/')}/manifest.json")


@cli.command()
@click.option("--variant", default="all", show_default=True, type=click.Choice([*VARIANTS, "all"]), help="Variant to plan.")
@click.option("--data", "data_uri", help="Dataset folder (local or s3://)  [default: the newest `neosft run` dataset]")
@click.option("--tokens-per-gpu-s", default=None, type=click.FloatRange(min=1), help="Training throughput per GPU [default: 3000].")
@click.option("--gpus", default=NUM_DEVICES, show_default=True, type=click.IntRange(min=1), help="GPUs in all (world size).")
@click.option("--gpu-memory", type=click.FloatRange(min=1), help="GB per GPU: also plan GPU memory for ZeRO-2 and ZeRO-3.")
def plan(variant: str, data_uri: str, tokens_per_gpu_s: float | None, gpus: int, gpu_memory: float | None) -> None:
    """Estimate steps, tokens, GPU-hours, node disk and GPU memory before spending GPU money.

    \b
    Example:
      neosft plan --variant all --data s3://my-bucket/neosft/data --gpu-memory 80
    """
    from neosft.artifacts import Manifest
    from neosft.plan import DEFAULT_TOKENS_PER_GPU_S, plan as make_plan, plan_eval, render, render_eval, render_memory
    from neosft.variants import gradient_accumulation

    gradient_accumulation(gpus)  # refuses a world size that does not divide the total batch
    names = list(VARIANTS) if variant == "all" else [variant]
    if gpu_memory:
        cutoff = max(VARIANTS[n].cutoff_len for n in names)
        click.echo(render_memory(gpu_memory, gpus, cutoff, ", ".join(n for n in names if VARIANTS[n].cutoff_len == cutoff)))
        click.echo()
    speed = tokens_per_gpu_s or DEFAULT_TOKENS_PER_GPU_S
    try:
        if data_uri is None:
            from neosft.runfolder import newest_local_dataset

            data_uri = newest_local_dataset()
        plans = make_plan(data_uri, names, speed, gpus)
        click.echo(render(plans, speed, gpus))
        click.echo(render_eval(plan_eval(Manifest.read(data_uri), plans, speed, gpus)))
    except UserError as e:
        if not gpu_memory:
            raise
        click.secho(f"warning: no steps or hours: {e}", err=True, fg="yellow")


@cli.command("run")
@click.option("--variant", default="all", show_default=True, type=click.Choice([*VARIANTS, "all"]), help="Variant(s) to train.")
@click.option("--source", default="sample", show_default=True,
              help="Corpus to build from: a path, s3://, https://, hf://datasets/... or `sample` (the shipped sample).")
@click.option("--store", help="Object store: a folder (served by a local S3 server) or s3://bucket/prefix  [default: .neosft/store]")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="Training steps per variant  [default: 40]")
@click.option("--run-id", help="Name of the run; default: local-<UTC time>. Reusing one resumes it.")
def run_pipeline(variant, source, store, steps, run_id) -> None:
    """The whole pipeline on this machine: no cluster, no GPU.

    Renders the chart as a cluster run would and runs its pods here: the data Job builds the four
    datasets, then each requested variant's training container trains a tiny Qwen2 on CPU with
    DeepSpeed, writing checkpoints, loss logs and plots where a cluster run puts them, beside the
    manifests it ran (runs/<run-id>/manifests.yaml).

    \b
    Example:
      neosft run --variant all
    """
    from neosft.run import STEPS, run, summary

    names = list(VARIANTS) if variant == "all" else [variant]
    click.echo(summary(run(names, source, store, run_id, steps or STEPS)))


@cli.command("eval")
@click.argument("target")
@click.option("--base", is_flag=True, help="Score the base model of the run whose variants are in TARGET (RUN), "
              "into RUN/base/eval.json.")
@click.option("--model", help="With --base: the base model  [default: the one the run's variants trained from]")
@click.option("--data", "data_uri", help="Dataset folder with held-out records  [default: the run's]")
@click.option("--samples", default=SAMPLES, show_default=True, type=click.IntRange(min=0),
              help="Greedy answers to the first N held-out prompts.")
@click.option("--max-new-tokens", default=MAX_NEW_TOKENS, show_default=True, type=click.IntRange(min=1),
              help="Longest sample answer, in tokens.")
def eval_command(target, base, model, data_uri, samples, max_new_tokens) -> None:
    """Score a finished run (TARGET: its OUTPUT) or, with --base, its base model on the held-out records.

    Writes eval.json (chat loss, perplexity, format matrix, samples) beside the run, then refreshes
    RUN/comparison.md and RUN/eval.png.

    \b
    Example:
      neosft eval .neosft/store/neosft/runs/local-20261201-120000/multi
      neosft eval --base .neosft/store/neosft/runs/local-20261201-120000
    """
    from neosft.eval.evaluate import Settings
    from neosft.eval.outputs import eval_base, eval_output, in_run, run_of
    from neosft.eval.report import summary
    from neosft.storage import location

    if model and not base:
        raise UserError("--model names the base model: use it with --base")
    settings = Settings(samples, max_new_tokens)
    record = eval_base(target, model, data_uri, settings) if base else eval_output(target, data_uri, settings)
    if base or in_run(target, record.name):
        click.echo(summary(location(target if base else run_of(target))))
    else:
        click.echo(f"{record.name}: chat loss {record.chat.loss:.4f}, perplexity {record.chat.perplexity:.2f} "
                   f"({record.chat.tokens:,} tokens)")


@cli.command()
@click.argument("run")
@click.option("--out", "dest", type=click.Path(file_okay=False), help="Also copy comparison.md and eval.png here.")
def compare(run, dest) -> None:
    """Rewrite RUN/comparison.md and RUN/eval.png from the eval records in RUN, and print the table.

    RUN is the folder of a run's variants (local or s3://); no model is loaded.

    \b
    Example:
      neosft compare s3://my-bucket/neosft/runs/20261201-120000-k3x9 --out collected/
    """
    from pathlib import Path

    from neosft.eval import report
    from neosft.storage import location

    folder = location(run.rstrip("/"))
    report.write(folder)
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        for name in (report.COMPARISON, report.PLOT):
            (Path(dest) / name).write_bytes((folder / name).read_bytes())
    click.echo(report.summary(folder))


@data.command("wait")
@click.argument("folder")
@click.option("--variant", type=click.Choice(list(VARIANTS)), help="Also require this variant in the manifest.")
@click.option("--timeout", default="1h", show_default=True, help="Give up after this long: seconds, or 30m, 12h, 7d.")
@click.option("--interval", default=15.0, show_default=True, type=click.FloatRange(min=0.01), help="Seconds between checks.")
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
        if time.monotonic() > deadline:
            raise UserError(f"{manifest}" + (f" of build {build_id}" if build_id else "")
                            + f" did not appear within {format_duration(timeout_s)}")
        time.sleep(interval)
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


@cli.command()
@click.option("--variant", type=click.Choice([*VARIANTS, "all"]), help="Variant to train; default: the values' `variants`.")
@_namespace
@click.option("--values", "values_file", type=click.Path(dir_okay=False), help="A Helm values file for the chart.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a chart value (Helm syntax); repeatable.")
@click.option("--source", help="Corpus the data Job builds (hf://, s3://, https://, 'sample'); default: the "
              "values' data.source, the real corpus m-a-p/neo_sft_phase2.")
@click.option("--data", "data_uri", help="Train on this existing dataset folder (s3://...) instead of building one.")
@click.option("--data-only", is_flag=True, help="Only build the datasets.")
@click.option("--queue", help="Kueue LocalQueue for every Job and training object of the run.")
@click.option("--backend", type=click.Choice(["pytorchjob", "trainjob", "auto"]),
              help="Training objects: PyTorchJob (Kubeflow training operator v1.9) or TrainJob (Kubeflow Trainer v2). "
              "[default: the values' train.backend, else auto: what the cluster serves, TrainJob first; "
              "pytorchjob with --dry-run]")
@click.option("--run-id", help="Name of the run; default: the values' runId, else a new time-stamped id.")
@click.option("--dry-run", is_flag=True, help="Print the validated YAML instead of applying it.")
@click.option("--wait", is_flag=True, help="Wait until every Job and training object has finished.")
@click.option("--timeout", default="7d", show_default=True, help="With --wait: give up waiting after this long "
              "(seconds, or 30m, 12h, 7d); the run goes on.")
def submit(variant, namespace, values_file, sets, source, data_uri, data_only, queue, backend, run_id, dry_run, wait,
           timeout) -> None:
    """Render the chart for one run, validate it, and create it on the cluster.

    The data Job builds the run's own dataset; the training objects are created suspended and
    start only when it is published, so no GPU is held while it builds, or after it failed.

    \b
    Example:
      neosft submit --variant single --set s3.bucket=my-bucket --dry-run
      neosft submit --variant all --values my-values.yaml --wait
    """
    from neosft.k8s import runs
    from neosft.k8s.render import load_values, to_yaml
    from neosft.progress import format_duration, parse_duration

    if data_only and data_uri:
        raise UserError("--data-only and --data exclude each other")
    if source and data_uri:
        raise UserError("--source and --data exclude each other: --data trains on a dataset already built")
    timeout_s = parse_duration(timeout)
    overrides: dict = {}
    if variant:
        overrides["variants"] = list(VARIANTS) if variant == "all" else [variant]
    if data_only:
        overrides["train"] = {"enabled": False}
    if source:
        overrides["data"] = {"source": source}
    if data_uri:
        overrides["data"] = {"enabled": False, "uri": data_uri}
    if queue is not None:
        overrides["queue"] = queue
    values = load_values(values_file, sets, overrides)
    run_id = runs.check_run_id(run_id or values.get("runId") or runs.new_run_id())
    if dry_run:
        values = runs.with_backend(values, backend, None, click.echo)
        click.echo(to_yaml(runs.manifests(values, run_id, namespace or "default")), nl=False)
        return
    from neosft.backends.kubeflow import Kubeflow

    cluster = Kubeflow(namespace)
    objects = cluster.render(values, run_id, backend, click.echo)
    _print_plan(objects, data_built_first=any(o["kind"] == "Job" for o in objects))
    created = cluster.submit(objects)
    click.echo(f"run {run_id} submitted to namespace {cluster.namespace}: {', '.join(created)}")
    for what, uri in runs.outputs(objects):
        click.echo(f"  {what:<13} -> {uri}")
    runs.keep_manifests(objects, click.echo, lambda line: click.secho(line, err=True, fg="yellow"))
    click.echo(f"watch it: neosft status {run_id} -n {cluster.namespace}")
    if wait:
        click.echo(f"waiting up to {format_duration(timeout_s)} for the run's Jobs and training objects to finish")
        cluster.wait(run_id, click.echo, timeout_s)
        click.echo(f"run {run_id} succeeded")


def _print_plan(objects: list[dict], data_built_first: bool) -> None:
    """`neosft plan` for what is about to train, when its dataset is already in storage."""
    from neosft.k8s.runs import training_data
    from neosft.plan import DEFAULT_TOKENS_PER_GPU_S, plan, render

    target = training_data(objects)
    if target is None:
        return
    data, variants = target
    if data_built_first:
        click.echo(f"plan: `neosft plan --data {data}` once the data Job has built the datasets")
        return
    try:
        click.echo(render(plan(data, variants), DEFAULT_TOKENS_PER_GPU_S))
    except UserError as e:
        click.secho(f"warning: no plan: {e}", err=True, fg="yellow")


@cli.command()
@click.argument("run", required=False)
@_namespace
@click.option("--store", help="Read the run's progress from this store (a folder or s3://bucket/prefix), "
              "with no cluster.")
def status(run, namespace, store) -> None:
    """Show a run's Jobs and training objects, their pods and latest loss; without RUN, list the runs.

    \b
    Example:
      neosft status 20261128-120501-k3x9 -n ml
      neosft status local-20261128-120501 --store .neosft/store
    """
    from neosft.k8s import runs

    if store:
        from neosft.runfolder import STORE_HEADERS, store_rows

        if run is None:
            raise UserError("--store reads one run: neosft status RUN --store STORE")
        click.echo(runs.table(STORE_HEADERS, store_rows(store, run)))
        return
    from neosft.backends.kubeflow import Kubeflow

    cluster = Kubeflow(namespace)
    if run is None:
        listing = cluster.list()
        click.echo(runs.table(listing.headers, listing.rows) if listing.rows
                   else f"no neosft runs in namespace {cluster.namespace}")
        return
    report = cluster.status(run)
    click.echo(runs.table(report.headers, report.rows))
    if report.problems:
        click.secho(f"latest loss unavailable: {report.problems[0]}", err=True, fg="yellow")


@cli.command()
@click.argument("run")
@click.option("--variant", type=click.Choice([*VARIANTS, "data"]), help="Only this variant's pods ('data': the data Job).")
@click.option("--follow", "-f", is_flag=True, help="Stream the logs of one pod (the master) as they grow.")
@_namespace
def logs(run, variant, follow, namespace) -> None:
    """Print the logs of a run's pods (rank 0 first); with --follow, one pod's as they grow."""
    from neosft.backends.kubeflow import Kubeflow

    sources = Kubeflow(namespace).logs(run, variant, follow)
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
    from neosft.backends.kubeflow import Kubeflow

    for name in Kubeflow(namespace).delete(run):
        click.echo(f"deleted {name}")


@cli.command(hidden=True)
@click.argument("names", nargs=-1, required=True)
@click.option("--kind", type=click.Choice(["PyTorchJob", "TrainJob"]), default="PyTorchJob", show_default=True)
@click.option("--timeout", default="5m", show_default=True, help="How long to wait for an object not created yet.")
@_namespace
def release(names, kind, timeout, namespace) -> None:
    """Start this run's held training objects: the data Job's last step, once the dataset is published."""
    from neosft.k8s.cluster import Cluster
    from neosft.progress import parse_duration

    for name in Cluster(namespace).release(kind, list(names), parse_duration(timeout)):
        click.echo(f"released {name}")


@cli.command()
@click.option("--variant", required=True, type=click.Choice(list(VARIANTS)), help="Which dataset and hyper-parameters.")
@click.option("--data", "data_uri", required=True, help="The built dataset folder: a local path or s3://bucket/prefix.")
@click.option("--output", "output_uri", required=True, help="Where this run writes: a local path or s3://bucket/prefix.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model ID or local folder.")
@click.option("--deepspeed", default="zero3", show_default=True, help="zero3, zero2, none (plain DDP) or a JSON config.")
@click.option("--packing", is_flag=True, help="Pack several samples per sequence, without attention across them.")
@click.option("--max-steps", default=-1, show_default=True, type=int, help="Stop after N optimizer steps (-1: all epochs).")
@click.option("--save-steps", default=100, show_default=True, type=click.IntRange(min=1), help="Checkpoint every N steps.")
@click.option("--val-size", default=0.0, show_default=True, type=float, help="Fraction of rows held out for eval loss.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a table hyper-parameter or any TrainingArguments field (recorded in run.json).")
@click.option("--work-dir", envvar="NEOSFT_WORK_DIR", help="Local scratch folder for checkpoints and tokens.")
@click.option("--default-system", default=DEFAULT_SYSTEM, show_default=True,
              help="System prompt of rows without one (or with an empty one); recorded in run.json.")
@click.option("--chat-format", default="auto", show_default=True, type=click.Choice(["auto", "chatml"]),
              help="auto: the tokenizer's chat template when it has one, else ChatML (Qwen2's format).")
@click.option("--report-to", default="none", show_default=True, type=click.Choice(["tensorboard", "wandb", "mlflow", "none"]),
              help="Experiment tracker; tensorboard writes event files to OUTPUT/tensorboard.")
@click.option("--liger", is_flag=True, help="Liger kernels (fused linear cross-entropy, RMSNorm, RoPE, SwiGLU) on GPU.")
@click.option("--upload-every", "upload_every_s", default=60.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between uploads of loss.jsonl, loss.png and events to OUTPUT.")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Then score the model on the dataset's held-out records into OUTPUT/eval.json (if it has any).")
@click.option("--eval-samples", default=SAMPLES, show_default=True, type=click.IntRange(min=0),
              help="Greedy answers to the first N held-out prompts.")
@click.option("--eval-base", is_flag=True, help="Also score MODEL itself into the run's base/ (RUN: OUTPUT's folder).")
def train(variant, data_uri, output_uri, model, deepspeed, packing, max_steps, save_steps, val_size, overrides,
          work_dir, default_system, chat_format, report_to, liger, upload_every_s, evaluate, eval_samples,
          eval_base) -> None:
    """Fully fine-tune MODEL on one variant's dataset; resumes from OUTPUT's newest complete checkpoint.

    Run it under torchrun (one process per GPU) or as a single process. Gradient accumulation keeps the
    total batch at 64 for any world size that divides it. OUTPUT receives loss.jsonl, loss.png (every
    --upload-every seconds), checkpoints/checkpoint-N/ and final/ (model, tokenizer, run.json last).
    An OUTPUT whose run finished is left as it is.

    \b
    Example:
      torchrun --nproc-per-node=8 -m neosft train --variant single \\
        --data s3://my-bucket/neosft/data --output s3://my-bucket/neosft/runs/r1/single
    """
    from neosft.train.recipe import Options, fine_tune

    fine_tune(Options(variant, data_uri, output_uri, model, deepspeed, packing, max_steps, save_steps, val_size,
                      list(overrides), work_dir, default_system, chat_format, report_to, liger, upload_every_s,
                      eval=evaluate, eval_samples=eval_samples, eval_base=eval_base))


@cli.command()
@click.argument("outputs", nargs=-1, required=True)
@click.option("--out", "dest", default="loss.png", show_default=True, help="The figure: a local path or s3:// URI.")
def plot(outputs, dest) -> None:
    """Compare the loss curves of several runs (their OUTPUT folders) in one figure.

    \b
    Example:
      neosft plot s3://my-bucket/neosft/runs/r1/{conversations,multi,single,all_pair} --out compare.png
    """
    from neosft.artifacts import read_losses
    from neosft.storage import location
    from neosft.train.lossplot import compare_plot

    runs = {}
    for output in outputs:
        where = location(output.rstrip("/")) / "loss.jsonl"
        runs[output.rstrip("/")] = read_losses(where.read_bytes(), str(where))
    location(dest).write_bytes(compare_plot(runs))
    click.echo(f"wrote {dest}")


def main() -> None:
    cli(prog_name="neosft")

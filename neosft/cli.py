"""The `neosft` command: a thin Click layer over the package; heavy imports happen inside commands."""

from __future__ import annotations

import sys

import click

from neosft import __version__
from neosft.errors import UserError
from neosft.train import DEFAULT_MODEL
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
      neosft variants
      neosft data build corpus.json --out s3://my-bucket/neosft/data
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
@click.argument("source", required=False)
@click.option("--out", "dest", required=True, help="Output folder: a local path or s3://bucket/prefix.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="Comma-separated variants to build.")
@click.option("--joiner", default="\n\n", show_default=repr("\n\n"), help="Joins turns inside one field.")
@click.option("--input-prompt", default="", help="Value of every row's `input` field.")
@click.option("--shard-rows", default=100_000, show_default=True, type=int, help="Rows per part file.")
@click.option("--tokenizer", type=click.Path(), help="tokenizer.json (or its folder) for token-length stats.")
def data_build(source, dest, variants, joiner, input_prompt, shard_rows, tokenizer) -> None:
    """Build the datasets from SOURCE into --out, in one streaming pass.

    SOURCE is a local path or s3://bucket/key holding a JSON array, JSON lines (either may be
    gzipped) or Parquet. Without SOURCE, the small sample corpus shipped with neosft is used.

    \b
    Example:
      neosft data build neo_sft_phase2.json --out s3://my-bucket/neosft/data
    """
    from neosft.data.build import build
    from neosft.sample import SAMPLE_CORPUS

    if source is None:
        source = str(SAMPLE_CORPUS)
        click.echo(f"no SOURCE given: using the sample corpus {source}", err=True)
    names = [n.strip() for n in variants.split(",") if n.strip()]
    manifest = build(source, dest, names, joiner, input_prompt, shard_rows, tokenizer)
    click.echo(f"{manifest['source']['records']:,} records read, {manifest['kept']:,} kept; skipped: "
               + ", ".join(f"{k} {v:,}" for k, v in manifest["skipped"].items()))
    for name, v in manifest["variants"].items():
        click.echo(f"  {name:<13} {v['rows']:>10,} rows  in {len(v['files'])} part(s)")
    click.echo(f"wrote {dest.rstrip('/')}/manifest.json")


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
def train(variant, data_uri, output_uri, model, deepspeed, packing, max_steps, save_steps, val_size, overrides,
          work_dir) -> None:
    """Fully fine-tune MODEL on one variant's dataset; resumes from OUTPUT's newest complete checkpoint.

    Run it under torchrun (one process per GPU) or as a single process. OUTPUT receives
    loss.jsonl, loss.png, checkpoints/checkpoint-N/ and final/ (model, tokenizer, run.json).

    \b
    Example:
      torchrun --nproc-per-node=8 -m neosft train --variant single \\
        --data s3://my-bucket/neosft/data --output s3://my-bucket/neosft/runs/r1/single
    """
    from neosft.train.recipe import Options, run

    run(Options(variant, data_uri, output_uri, model, deepspeed, packing, max_steps, save_steps, val_size,
                list(overrides), work_dir))


@cli.command()
@click.argument("outputs", nargs=-1, required=True)
@click.option("--out", "dest", default="loss.png", show_default=True, help="The figure: a local path or s3:// URI.")
def plot(outputs, dest) -> None:
    """Compare the loss curves of several runs (their OUTPUT folders) in one figure.

    \b
    Example:
      neosft plot s3://my-bucket/neosft/runs/r1/{conversations,multi,single,all_pair} --out compare.png
    """
    from neosft.storage import location
    from neosft.train.losslog import from_jsonl
    from neosft.train.lossplot import compare_plot

    runs = {output.rstrip("/"): from_jsonl(location(output.rstrip("/") + "/loss.jsonl").read_bytes()) for output in outputs}
    location(dest).write_bytes(compare_plot(runs))
    click.echo(f"wrote {dest}")


def main() -> None:
    cli(prog_name="neosft")

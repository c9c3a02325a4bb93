"""The `neosft` command: a thin Click layer over the package; heavy imports happen inside commands."""

from __future__ import annotations

import sys

import click

from neosft import __version__
from neosft.errors import UserError
from neosft.storage import EMBEDDED_DATA
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
@click.option("--variant", default="all", show_default=True, type=click.Choice([*VARIANTS, "all"]), help="Variant to plan.")
@click.option("--data", "data_uri", default=EMBEDDED_DATA, show_default=True, help="Dataset folder (local or s3://).")
@click.option("--tokens-per-gpu-s", default=None, type=click.FloatRange(min=1), help="Training throughput per GPU [default: 3000].")
def plan(variant: str, data_uri: str, tokens_per_gpu_s: float | None) -> None:
    """Estimate steps, tokens, GPU-hours and checkpoint size before spending GPU money.

    \b
    Example:
      neosft plan --variant all --data s3://my-bucket/neosft/data
    """
    from neosft.plan import DEFAULT_TOKENS_PER_GPU_S, plan as make_plan, render

    speed = tokens_per_gpu_s or DEFAULT_TOKENS_PER_GPU_S
    click.echo(render(make_plan(data_uri, list(VARIANTS) if variant == "all" else [variant], speed), speed))


def main() -> None:
    cli(prog_name="neosft")

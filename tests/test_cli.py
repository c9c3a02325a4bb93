"""The command line stays instant and explains itself."""

import subprocess
import sys

import click
from click.testing import CliRunner
from conftest import neosft

from neosft.cli import cli

HEAVY = ("torch", "transformers", "deepspeed", "accelerate", "datasets", "boto3", "pyarrow", "kubernetes", "matplotlib")


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from neosft.cli import cli; cli(['--help'], standalone_mode=False); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout


def commands(group: click.Group, path: tuple[str, ...] = ()):
    """Every visible command of the CLI, groups included, with its path."""
    for name, command in group.commands.items():
        if not command.hidden:
            yield (*path, name), command
            if isinstance(command, click.Group):
                yield from commands(command, (*path, name))


def test_help_shows_an_example_and_every_command_has_help():
    out = neosft("--help")
    assert out.returncode == 0 and "Example" in out.stdout
    found = dict(commands(cli))
    assert {("run",), ("submit",), ("status",), ("logs",), ("delete",), ("data", "build"), ("train",)} <= set(found)
    for path, command in found.items():
        shown = CliRunner().invoke(cli, [*path, "--help"], prog_name="neosft")
        assert shown.exit_code == 0, shown.output
        flat = " ".join(shown.output.split())  # as written, whatever the terminal's wrapping
        summary = " ".join((command.help or "").split())[:60]
        assert summary and summary in flat, f"neosft {' '.join(path)} has no help of its own"
        for param in command.params:
            if isinstance(param, click.Option) and "--help" not in param.opts:
                assert param.help and " ".join(param.help.split())[:40] in flat, (
                    f"neosft {' '.join(path)} {param.opts[0]} has no help"
                )


def test_usage_errors_exit_2_without_traceback(tmp_path):
    out = neosft("data", "build", "--shard-rows", "many", "--out", tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--shard-rows" in out.stderr

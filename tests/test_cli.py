"""The command line stays instant and explains itself."""

import subprocess
import sys

from conftest import neosft

HEAVY = ("torch", "transformers", "deepspeed", "accelerate", "datasets", "boto3", "pyarrow", "kubernetes", "matplotlib")


def test_help_imports_no_heavy_library():
    code = "import sys; from neosft.cli import cli; cli(['--help'], standalone_mode=False); print(sorted(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_help_shows_an_example_and_every_command_has_help():
    out = neosft("--help")
    assert out.returncode == 0 and "Example" in out.stdout
    for command in (["variants"], ["data", "build"], ["data", "wait"], ["run"], ["plan"], ["train"], ["plot"], ["submit"], ["status"], ["logs"], ["delete"]):
        sub = neosft(*command, "--help")
        assert sub.returncode == 0 and "Usage:" in sub.stdout


def test_usage_errors_exit_2_without_traceback(tmp_path):
    out = neosft("data", "build", "--shard-rows", "many", "--out", tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--shard-rows" in out.stderr

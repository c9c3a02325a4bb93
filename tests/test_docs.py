"""The README stays true: its commands are the ones CI runs, its table is the variant table."""

import re
from pathlib import Path

from neosft.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def setup_commands() -> list[str]:
    section = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_gives_exactly_two_setup_commands_into_dot_venv():
    commands = setup_commands()
    assert len(commands) == 2
    assert all(c.startswith("python3 -m venv .venv && ") and "torch==2.13.0" in c for c in commands)


def test_ci_runs_the_readme_test_command_as_written():
    assert setup_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_variant_table_is_the_variant_table():
    rows = re.findall(r"^\| (\w+) \| .+? \| ([0-9.e+-]+) \| (\d+) \|$", README, re.M)
    assert {name: (float(lr), int(cutoff)) for name, lr, cutoff in rows} == {
        name: (v.learning_rate, v.cutoff_len) for name, v in VARIANTS.items()
    }


def test_readme_layout_names_the_modules_that_exist():
    layout = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name in re.findall(r"`(neosft/[\w/]+\.py)`", layout):
        assert (ROOT / name).exists(), f"the README's layout names {name}, which does not exist"
    for package in ("backends", "k8s"):  # the picture names every module of the seams
        for module in (ROOT / "neosft" / package).glob("*.py"):
            assert module.stem == "__init__" or module.stem in layout, (
                f"neosft/{package}/{module.name} is not in the layout"
            )


def test_readme_rules_table_rows_are_what_each_rule_builds(tmp_path):
    from neosft.data.build import build

    section = README.split("### REILX's conversion", 1)[1].split("\n### ", 1)[0]
    (tmp_path / "c.jsonl").write_text(section.split("```json\n", 1)[1].split("```", 1)[0], encoding="utf-8")
    table = re.findall(r"^\| (\w+) \| (.+) \| (.+) \|$", section, re.M)[1:]  # below the header
    assert [name for name, _, _ in table] == list(VARIANTS)
    for column, rules in ((1, "seed"), (2, "reilx")):
        manifest = build(str(tmp_path / "c.jsonl"), str(tmp_path / rules), rules=rules)
        for row in table:
            written = b"".join((tmp_path / rules / f).read_bytes() for f in manifest.variants[row[0]].files)
            example = re.findall(r"`(\{\"[^`]+\})`", row[column])[-1]  # the cell's last code: its example row
            assert example.encode() in written.splitlines(), (rules, row[0])

"""Runs one job of a GitHub Actions workflow here, step by step as a runner would, so that tests execute the
workflows' real shell steps (and the `neosft` command lines in them) against local test servers.

Supported: `${{ }}` expressions over the contexts given (inputs, vars, secrets, github, steps), `if:` with
the status functions, job/step `env`, `$GITHUB_OUTPUT` and `$GITHUB_STEP_SUMMARY`, local composite actions
(`uses: ./path`), and cancelling the run after a named step. Other `uses:` steps are recorded, not run.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.S)
TOKEN = re.compile(r"'(?:[^']|'')*'|==|!=|&&|\|\||!|[(),]|[A-Za-z_][\w.-]*|\d+|\s+")
STATUS_FUNCTIONS = ("success(", "failure(", "cancelled(", "always(")


@dataclass
class Result:
    work: Path = Path()  # the job's workspace
    status: str = "success"  # success, failure or cancelled
    ran: list[str] = field(default_factory=list)  # names of the steps that ran, in order
    uses: list[dict] = field(default_factory=list)  # the action steps that would have run: {uses, with}
    summary: str = ""
    output: str = ""  # stdout and stderr of every step


class Runner:
    def __init__(self, workdir: Path, contexts: dict, env: dict, skip=lambda script: False, cancel_after: str = ""):
        self.workdir, self.contexts, self.env = workdir, contexts, env
        self.skip, self.cancel_after = skip, cancel_after
        self.result = Result(work=workdir)
        self.steps: dict[str, dict] = {}

    def run_job(self, workflow: Path, job: str) -> Result:
        flow = yaml.safe_load(workflow.read_text())
        spec = flow["jobs"][job]
        env = {**self.interpolate_all(flow.get("env") or {}), **self.interpolate_all(spec.get("env") or {})}
        self.run_steps(spec["steps"], env, self.contexts)
        self.result.summary = (self.workdir / ".summary").read_text() if (self.workdir / ".summary").exists() else ""
        return self.result

    def run_steps(self, steps: list[dict], env: dict, contexts: dict) -> None:
        for step in steps:
            name = step.get("name") or step.get("id") or step.get("uses") or step["run"].split("\n")[0]
            condition = str(step.get("if", "success()"))
            if not any(f in condition for f in STATUS_FUNCTIONS):
                condition = f"success() && ({condition})"
            if not self.evaluate(condition, contexts):
                continue
            self.result.ran.append(name)
            step_env = {**env, **self.interpolate_all(step.get("env") or {}, contexts)}
            outputs: dict[str, str] = {}
            if "run" in step:
                outputs = self.shell(step["run"], step_env)
            elif step["uses"].startswith("./"):
                action = yaml.safe_load((ROOT / step["uses"] / "action.yml").read_text())
                given = self.interpolate_all(step.get("with") or {}, contexts)
                inputs = {k: given.get(k, str(v.get("default", ""))) for k, v in action.get("inputs", {}).items()}
                self.run_steps(action["runs"]["steps"], step_env, {**contexts, "inputs": inputs})
            else:
                self.result.uses.append(
                    {"uses": step["uses"], "with": self.interpolate_all(step.get("with") or {}, contexts)}
                )
            if "id" in step:
                self.steps[step["id"]] = {"outputs": outputs}
            if name == self.cancel_after:
                self.result.status = "cancelled"

    def shell(self, script: str, env: dict) -> dict[str, str]:
        """The script as the runner's default shell runs it; returns the step's outputs."""
        if self.skip(script):
            return {}
        assert "${{" not in script, f"an expression inside a run step (script injection): {script}"
        output = self.workdir / ".output"
        output.write_text("")
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=self.workdir,
            env={
                **self.env,
                **env,
                "GITHUB_OUTPUT": str(output),
                "GITHUB_STEP_SUMMARY": str(self.workdir / ".summary"),
            },
            capture_output=True,
            text=True,
            check=False,
        )
        self.result.output += done.stdout + done.stderr
        if done.returncode != 0 and self.result.status == "success":
            self.result.status = "failure"
        return dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)

    def interpolate_all(self, values: dict, contexts: dict | None = None) -> dict[str, str]:
        return {k: self.interpolate(text_of(v), contexts or self.contexts) for k, v in values.items()}

    def interpolate(self, text: str, contexts: dict) -> str:
        return EXPRESSION.sub(lambda m: text_of(self.evaluate(m.group(1), contexts)), text)

    def evaluate(self, expression: str, contexts: dict):
        """A GitHub expression, translated token by token into Python."""
        tokens = [t for t in TOKEN.findall(expression) if not t.isspace()]
        assert "".join(tokens) == re.sub(r"\s+", "", expression), f"unsupported expression: {expression}"
        words = {"&&": " and ", "||": " or ", "!": " not ", "true": "True", "false": "False", "null": "None"}
        python = []
        for i, token in enumerate(tokens):
            if token.startswith("'"):
                python.append(repr(token[1:-1].replace("''", "'")))
            elif token in words or token in ("==", "!=", "(", ")", ",") or token.isdigit():
                python.append(words.get(token, token))
            elif i + 1 < len(tokens) and tokens[i + 1] == "(":
                python.append(f"_functions[{token!r}]")
            else:
                python.append(f"_lookup({token!r})")
        status = self.result.status
        functions = {
            "success": lambda: status == "success",
            "failure": lambda: status == "failure",
            "cancelled": lambda: status == "cancelled",
            "always": lambda: True,
            "format": lambda f, *args: re.sub(r"\{(\d+)\}", lambda m: text_of(args[int(m.group(1))]), f),
        }

        def lookup(path: str):
            value = {**contexts, "steps": self.steps}
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            return "" if value is None else value  # GitHub compares a missing value (null) equal to ''

        return eval(" ".join(python), {"_functions": functions, "_lookup": lookup})  # noqa: S307 (tokens checked)


def text_of(value) -> str:
    return "true" if value is True else "false" if value is False else "" if value is None else str(value)

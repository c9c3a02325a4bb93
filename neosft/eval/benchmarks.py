"""Benchmarks through lm-evaluation-harness (`lm_eval`, the `[eval]` extra): a model's scores on named harness tasks
(`ifeval`, `cmmlu`, `ceval-valid`, `mmlu`, `gsm8k`, ...) or task YAMLs, each metric with the harness's standard error.

Task names are checked offline against the harness's own index of the task YAMLs it ships (`TaskManager`, no
network); a YAML path must exist where it is checked. The harness loads each task's data when it runs: a task whose
data cannot be fetched fails the stage in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from neosft.errors import UserError
from neosft.progress import log

TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
YAML = (".yaml", ".yml")
METRIC_SUFFIX = ",none"  # the harness's key for a metric under no filter: "acc,none", "acc_stderr,none"


def parse(spec: str) -> list[str]:
    """TASK[,TASK...] -> the tasks; a `UserError` for an empty list or a task that is neither a harness task name
    nor the path of a task YAML."""
    tasks = [t.strip() for t in spec.split(",")]
    if not spec.strip() or not all(tasks):
        raise UserError(f"--benchmarks {spec!r}: name tasks as TASK[,TASK...]")
    for task in tasks:
        _well_formed(task)
    return tasks


def _well_formed(task: str) -> None:
    if not (task.endswith(YAML) or TASK_NAME.fullmatch(task)):
        raise UserError(
            f"benchmarks: {task[:80]!r} is neither an lm-evaluation-harness task name (letters, digits, '_', '-', "
            "'.') nor a task YAML (*.yaml)"
        )


def _task_manager(tasks: list[str]):
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(
            "--benchmarks needs lm-evaluation-harness here (to know its tasks offline): pip install 'neosft[eval]'"
        ) from None
    folders = sorted({str(Path(t).resolve().parent) for t in tasks if t.endswith(YAML)})
    return TaskManager(include_path=folders or None, verbosity="ERROR")


def check(tasks: list[str], yamls: bool = True) -> None:
    """A `UserError` naming the first task the harness does not know, or (with `yamls`) a task YAML that is not
    there; `yamls=False` where the YAMLs are paths in the pods, not here."""
    names = [t for t in tasks if not t.endswith(YAML)]
    for task in tasks:
        _well_formed(task)
        if task.endswith(YAML) and yamls and not Path(task).is_file():
            raise UserError(f"benchmarks: no task YAML at {task}")
    if names:
        known = set(_task_manager([]).all_tasks)
        unknown = [t for t in names if t not in known]
        if unknown:
            raise UserError(
                f"benchmarks: lm-evaluation-harness knows no task {unknown[0]!r} (its {len(known):,} tasks, "
                "groups and tags are listed by `lm-eval ls tasks`)"
            )


def _task_of(task: str) -> str:
    """The harness's name of a task: a YAML's `task:` (its file name when it names none)."""
    if not task.endswith(YAML):
        return task
    import yaml

    config = yaml.safe_load(Path(task).read_text()) or {}
    return str(config.get("task") or Path(task).stem) if isinstance(config, dict) else Path(task).stem


def score(model: str, tasks: list[str], adapter: str | None = None, limit: int | None = None) -> dict[str, dict]:
    """{task: {metric: {"value", "stderr"}}} of the model at `model` (with the PEFT adapter at `adapter` over it) on
    `tasks`, through `lm_eval.simple_evaluate` (every rank of a process group takes a share, as the harness does
    under `accelerate launch`); `limit`: at most that many documents per task. A `UserError` in one line when the
    harness or a task's data fails."""
    manager = _task_manager(tasks)
    import torch
    from lm_eval import simple_evaluate

    gpu = torch.cuda.is_available()
    args = {"pretrained": model, "dtype": "bfloat16" if gpu else "float32", **({"peft": adapter} if adapter else {})}
    names = [_task_of(t) for t in tasks]
    log(f"benchmarks: {', '.join(names)} on {adapter or model} (lm-evaluation-harness)")
    try:
        results = simple_evaluate(
            model="hf",
            model_args=args,
            tasks=names,
            task_manager=manager,
            limit=limit,
            device="cuda" if gpu else "cpu",  # under a process group the harness puts each rank on its own GPU
            batch_size="auto" if gpu else 8,
            log_samples=False,
            bootstrap_iters=1000,  # the harness's standard errors of non-mean metrics
        )
    except Exception as e:  # the harness's and datasets' errors are many types: one line, the stage fails
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise UserError(f"benchmarks {', '.join(names)} failed: {type(e).__name__}: {first}") from None
    if results is None:  # a rank other than the harness's first: rank 0 holds the scores
        return {}
    return {task: _metrics(values) for task, values in results["results"].items()}


def _metrics(values: dict) -> dict[str, dict]:
    """{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...} -> {"acc": {"value": 0.5, "stderr": 0.1}}."""
    out = {}
    for key, value in values.items():
        if not key.endswith(METRIC_SUFFIX) or "_stderr," in key or not isinstance(value, (int, float)):
            continue
        metric = key[: -len(METRIC_SUFFIX)]
        stderr = values.get(f"{metric}_stderr{METRIC_SUFFIX}")
        out[metric] = {"value": float(value), "stderr": float(stderr) if isinstance(stderr, (int, float)) else None}
    return out

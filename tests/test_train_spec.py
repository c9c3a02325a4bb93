"""One declaration per `neosft train` option (`TrainSpec`): the chart's rendered arguments, parsed by the real
Click parser of `neosft train`, give back the spec the chart's values ask for, for both training kinds."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from neosft.cli import train as train_command
from neosft.k8s.render import CHART, merge, render
from neosft.train.spec import TrainSpec, from_params

VALUES = [
    {},
    {"train": {"method": "full", "deepspeed": "zero3", "reportTo": "none", "maxSteps": 10, "saveSteps": 5}},
    {
        "train": {
            "model": "Qwen/Qwen2-0.5B",
            "lora": {"rank": 8, "alpha": 16, "dropout": 0.05, "target": "q_proj,v_proj"},
            "merge": True,
            "packing": True,
            "valSize": 0.05,
            "set": {"logging_steps": 1},
            "variantSet": {"multi": {"learning_rate": 1e-5}},
        },
        "eval": {"samples": 3},
    },
    {"eval": {"enabled": False, "samples": 3}},
]
KINDS = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}


def rendered_args(job: dict) -> list[str]:
    """The `neosft train` arguments of one training object (after `-m neosft train` for a PyTorchJob)."""
    if job["kind"] == "TrainJob":
        return job["spec"]["trainer"]["args"]
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    return command[command.index("train") + 1 :]


def lookup(values: dict, key: str):
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def expected(values: dict, variant: str, first: bool) -> TrainSpec:
    """The spec `values` ask for: each field from its chart key (unset, empty or zero: the spec's default)."""
    merged = merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    asked = {}
    for spec in dataclasses.fields(TrainSpec):
        key = spec.metadata["chart"]
        if key is None or (key.startswith("train.lora.") and merged["train"]["method"] != "lora"):
            continue
        if key == "eval.samples" and not merged["eval"]["enabled"]:
            continue
        value = lookup(merged, key)
        if value not in (None, "", 0) or isinstance(value, bool):
            asked[spec.name] = value
    sets = {**merged["train"]["set"], **merged["train"]["variantSet"].get(variant, {})}
    return TrainSpec(
        variant=variant,
        data="s3://neosft/neosft/data/r1",
        output=f"s3://neosft/neosft/runs/r1/{variant}",
        overrides=[f"{k}={v}" for k, v in sorted(sets.items())],
        eval_base=first and merged["eval"]["enabled"],
        **asked,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values", VALUES, ids=range(len(VALUES)))
def test_the_rendered_arguments_parse_back_into_the_spec_of_the_values(kind, values, monkeypatch):
    monkeypatch.delenv("NEOSFT_WORK_DIR", raising=False)
    variants = ["single", "multi"]
    objects = render(merge(values, {"train": {"backend": kind}, "variants": variants}), "r1", "ml")
    jobs = [o for o in objects if o["kind"] == KINDS[kind]]
    assert len(jobs) == len(variants)
    for n, (variant, job) in enumerate(zip(variants, jobs)):
        parsed = from_params(train_command.make_context("train", list(rendered_args(job))).params)
        assert parsed == expected(values, variant, first=n == 0)


def test_every_option_is_declared_once_with_its_default():
    """The Click command is generated from the spec: one option per field, its default the field's."""
    options = {p.name: p for p in train_command.params if p.name != "help"}
    fields = dataclasses.fields(TrainSpec)
    assert list(options) == [f.name for f in fields]
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert options[f.name].default == f.default, f.name
    assert TrainSpec("single", "d", "o").eval is True and options["eval"].default is True  # one default for --eval

"""What a run is on the cluster: its id, and the validated objects the chart renders for it."""

from __future__ import annotations

import dataclasses
import itertools
import re
import secrets
from datetime import datetime, timezone

from neosft.errors import UserError
from neosft.k8s.cluster import MANAGED_BY
from neosft.k8s.kinds import TRAINING_KINDS, TRAINJOB
from neosft.k8s.names import check_derived_names
from neosft.k8s.render import is_helm_only, is_test, render, with_defaults, without_hook
from neosft.k8s.validate import validate
from neosft.train.args import checked_overrides
from neosft.variants import LORA, TOTAL_TRAIN_BATCH, gradient_accumulation, qwen2_linear

RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,28}[a-z0-9])?$")


def new_run_id() -> str:
    """A sortable, unique run id such as 20261126-120501-k3x9."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise UserError(
            f"run id {run_id!r}: use 1-30 lower-case letters, digits and '-', starting and ending "
            "with a letter or digit"
        )
    return run_id


def manifests(values: dict, run_id: str, namespace: str) -> list[dict]:
    """The validated objects `neosft submit` creates for a run (the chart's test hook is left to `helm test`).

    They are labelled managed-by neosft, not Helm: no Helm release holds them, `neosft delete` removes
    them. The chart's install hooks become plain objects (`neosft.k8s.cluster.KINDS` orders creation), but for
    the Helm-only runtime check: submit retries a TrainJob refused for its runtime itself.
    """
    objects = render({**values, "runId": run_id}, run_id, namespace)
    validate(objects)
    check_derived_names(objects, run_id)
    _check_world_size(values)
    _check_trainer_settings(objects)
    return [_managed_by_neosft(without_hook(obj)) for obj in objects if not is_test(obj) and not is_helm_only(obj)]


def _check_trainer_settings(objects: list[dict]) -> None:
    """Each training object's `--set` settings (train.set and train.variantSet, as rendered) checked now, exactly as
    `neosft train` checks them, not in the pods after the data build, with GPUs allocated."""
    for obj in objects:
        if obj["kind"] not in TRAINING_KINDS:
            continue
        args = _train_arguments(obj)
        variant = next(a.split("=", 1)[1] for a in args if a.startswith("--variant="))
        _check_lora(args, variant)
        pairs = [value for flag, value in itertools.pairwise(args) if flag == "--set"]
        if not pairs:
            continue
        try:
            checked_overrides(variant, pairs)
        except UserError as e:
            raise UserError(f"train.set / train.variantSet.{variant}: {e}") from None


def _check_lora(args: list[str], variant: str) -> None:
    """train.lora's rank and target, rendered as `--lora-*`, checked against the architecture of the default
    model (Qwen2-7B, from its table in `neosft.plan`); another model's are checked by `neosft train`."""
    from neosft.train import DEFAULT_MODEL

    given = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    if given.get("method") != "lora" or given.get("model", DEFAULT_MODEL) != DEFAULT_MODEL:
        return
    lora = dataclasses.replace(
        LORA, rank=int(given.get("lora-rank", LORA.rank)), target=given.get("lora-target", LORA.target)
    )
    try:
        lora.check().fits(qwen2_linear(), DEFAULT_MODEL)
    except UserError as e:
        raise UserError(f"train.lora ({variant}): {e}") from None


def _train_arguments(obj: dict) -> list[str]:
    """What a training object's rank-0 container runs: `neosft train` and its arguments, after any launcher."""
    if obj["kind"] == TRAINJOB.kind:
        return obj["spec"]["trainer"]["args"]
    [container] = obj["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    return container["command"]


def _check_world_size(values: dict) -> None:
    """The seed's total batch must divide over the run's GPUs, unless the values set the accumulation themselves."""
    train = with_defaults(values)["train"]
    if train["enabled"] and "gradient_accumulation_steps" not in train["set"]:
        gpus = train["nodes"] * train["gpusPerNode"]
        try:
            gradient_accumulation(gpus)
        except UserError:
            raise UserError(
                f"{gpus} GPUs (train.nodes x train.gpusPerNode) do not divide the total train batch "
                f"{TOTAL_TRAIN_BATCH}: pick a count that does, or set train.set.gradient_accumulation_steps "
                "(run.json records it)"
            ) from None


def _managed_by_neosft(node):
    if isinstance(node, dict):
        return {k: ("neosft" if k == MANAGED_BY else _managed_by_neosft(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_managed_by_neosft(v) for v in node]
    return node

"""What `neosft submit` asks of a backend: the chart values of one run, from its flags, checked before any
cluster is asked."""

from __future__ import annotations

from neosft.backends.base import with_store_default
from neosft.errors import UserError
from neosft.k8s.render import load_values
from neosft.variants import VARIANTS, reilx_run


def _refuse_pairs(data_uri, data_only, source, rules, reilx) -> None:
    """Flags that exclude each other, refused in one line."""
    if data_only and data_uri:
        raise UserError("--data-only and --data exclude each other")
    if source and data_uri:
        raise UserError("--source and --data exclude each other: --data trains on a dataset already built")
    if rules and data_uri:
        raise UserError("--rules and --data exclude each other: --data trains on a dataset already built")
    if reilx and data_uri:
        raise UserError("--reilx and --data exclude each other: REILX's run builds its dataset with REILX's scripts")


def submit_values(
    *,
    variant: str | None,
    values_file: str | None,
    sets: tuple[str, ...],
    source: str | None,
    data_uri: str | None,
    data_only: bool,
    rules: str | None,
    queue: str | None,
    method: str | None,
    reilx: bool,
    environ: dict[str, str],
) -> dict:
    """The run's values: the values file, then --set, then the flags (each flag a value), then --reilx (which
    refuses a value that contradicts it), then this machine's store endpoint when the values name none."""
    _refuse_pairs(data_uri, data_only, source, rules, reilx)
    overrides: dict = {}
    if variant:
        overrides["variants"] = list(VARIANTS) if variant == "all" else [variant]
    if data_only:
        overrides["train"] = {"enabled": False}
    if source or rules:
        overrides["data"] = {k: v for k, v in (("source", source), ("rules", rules)) if v}
    if data_uri:
        overrides["data"] = {"enabled": False, "uri": data_uri}
    if queue is not None:
        overrides["queue"] = queue
    if method:
        overrides.setdefault("train", {})["method"] = method
    values = load_values(values_file, sets, overrides)
    if reilx:
        values = reilx_run(values)
    return with_store_default(values, environ)

"""Render the neosft chart with the real Helm engine (Helm v4, embedded by helm-python-sdk: no binary needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from neosft.errors import UserError

CHART = Path(__file__).with_name("chart")
HOOK = "helm.sh/hook"


def load_values(values_file: str | None, sets: tuple[str, ...], overrides: dict) -> dict:
    """User values: a values file, then `--set k=v` (Helm syntax), then the CLI's own `overrides`."""
    values: dict = {}
    if values_file:
        try:
            loaded = yaml.safe_load(Path(values_file).read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise UserError(f"cannot read values file {values_file}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise UserError(f"{values_file} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise UserError(f"{values_file} must hold a YAML mapping of values")
        values = loaded
    for expression in sets:
        values = merge(values, _parse_set(expression))
    return merge(values, overrides)


def render(values: dict, release: str, namespace: str) -> list[dict]:
    """Every object the chart renders for `values` (hooks included), in a stable order."""
    helm = _helm()
    try:
        manifests = helm.Chart.load(CHART).render(values, name=release, namespace=namespace, is_install=True)
    except helm.HelmError as e:
        raise UserError(f"chart values: {_one_line(e)}") from None
    objects = []
    for name in sorted(manifests):
        if name.endswith(".yaml"):
            objects += [doc for doc in yaml.safe_load_all(manifests[name]) if doc]
    return objects


def is_hook(obj: dict) -> bool:
    return HOOK in (obj.get("metadata", {}).get("annotations") or {})


def is_test(obj: dict) -> bool:
    """A `helm test` hook (the chart's S3 check)."""
    return "test" in (obj.get("metadata", {}).get("annotations") or {}).get(HOOK, "").split(",")


def without_hook(obj: dict) -> dict:
    """`obj` without Helm's hook annotations: what a hook is when no Helm installs it."""
    annotations = {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if not k.startswith(HOOK)}
    metadata = {k: v for k, v in obj["metadata"].items() if k != "annotations"}
    return {**obj, "metadata": {**metadata, **({"annotations": annotations} if annotations else {})}}


def to_yaml(objects: list[dict]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def with_defaults(values: dict) -> dict:
    """`values` over the chart's own values.yaml, merged as Helm merges them."""
    return merge(yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8")), values)


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, recursively for mappings (as Helm merges values)."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _parse_set(expression: str) -> dict:
    helm = _helm()
    try:
        return helm.parse_set_string(expression)
    except helm.HelmError as e:
        raise UserError(f"--set {expression}: {_one_line(e)}") from None


def _helm():
    import helm_python  # the embedded Helm (a Go runtime): only when a chart renders

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the Go runtime takes SIGINT over
    return helm_python


def _one_line(error: object) -> str:
    """Helm's multi-line schema report as one line, e.g. "at '/train': additional properties 'nodez' not allowed"."""
    lines = [line.strip(" -") for line in str(error).strip().splitlines()]
    details = [line for line in lines if line.startswith("at '")]
    return "; ".join(details) if details else " ".join(filter(None, lines))

"""Render the neosft chart with the real Helm engine (Helm v4, embedded by helm-python-sdk: no binary needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from neosft.errors import UserError, redact

CHART = Path(__file__).with_name("chart")
HOOK = "helm.sh/hook"


def load_values(values_file: str | None, sets: tuple[str, ...], overrides: dict) -> dict:
    """User values: a values file, then `--set k=v` (Helm syntax), then the CLI's own `overrides`."""
    values: dict = {}
    if values_file:
        values = _values_file(values_file)
    if sets:
        values = merge(values, _parse_sets(sets))
    return merge(values, overrides)


def _values_file(path: str) -> dict:
    """A values file read as Helm reads it (Go's YAML, which refuses excessive aliasing: a 1 KB alias bomb
    would otherwise expand to gigabytes when the values are handed to Helm)."""
    helm = _helm()
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read values file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"values file {path} is not valid UTF-8 (at byte {e.start})") from None
    try:
        loaded = helm.values_from_yaml(text) if text.strip() else {}
    except helm.HelmError as e:
        problem = _one_line(e)
        if "cannot unmarshal" in problem:  # YAML, but a list or a scalar where the values' mapping should be
            raise UserError(f"{path} must hold a YAML mapping of values") from None
        problem = problem.removeprefix("error converting YAML to JSON: ")
        raise UserError(f"{path} is not valid YAML: {problem}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a YAML mapping of values")
    return loaded


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


def is_helm_only(obj: dict) -> bool:
    """What only `helm install` needs (the TrainJob runtime check): `neosft submit` does it itself."""
    return (obj.get("metadata", {}).get("annotations") or {}).get("neosft.io/helm-only") == "true"


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
        merged[key] = (
            merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def _parse_sets(expressions: tuple[str, ...]) -> dict:
    """Every `--set` parsed into one base, as Helm's strvals does: `a[0].x=1` then `a[0].y=2` merge into one element.
    Each is parsed alone first, so an error names its flag."""
    helm = _helm()
    for expression in expressions:
        try:
            helm.parse_set_string(expression)
        except helm.HelmError as e:
            raise UserError(f"--set {expression}: {_one_line(e)}") from None
        if expression.endswith("\\"):  # it would escape the comma that joins it to the next
            raise UserError(f"--set {expression}: ends with a backslash that escapes nothing")
    return helm.parse_set_string(",".join(expressions))


def _helm():
    import helm_python  # the embedded Helm (a Go runtime): only when a chart renders

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the Go runtime takes SIGINT over
    return helm_python


def _one_line(error: object) -> str:
    """Helm's multi-line schema report as one line, e.g. "at '/train': additional properties 'nodez' not allowed"."""
    lines = [line.strip(" -") for line in redact(str(error)).strip().splitlines()]
    details = [line for line in lines if line.startswith("at '")]
    return "; ".join(details) if details else " ".join(filter(None, lines))

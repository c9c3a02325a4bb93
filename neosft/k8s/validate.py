"""Check every rendered object before anything reaches a cluster.

Built-in kinds: `kubernetes-validate` in strict mode (unknown fields are errors) at KUBERNETES_VERSION.
Custom resources: the openAPIV3Schema of their CRD, shipped in `schemas/` (Apache-2.0, licences beside
them), made strict the same way: PyTorchJob from the Kubeflow training-operator v1.9.0, TrainJob and
TrainingRuntime from Kubeflow Trainer v2.3.0.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from neosft.errors import UserError

KUBERNETES_VERSION = "1.31.0"
SCHEMAS = Path(__file__).with_name("schemas")
CRD_SCHEMAS = {
    ("kubeflow.org/v1", "PyTorchJob"): SCHEMAS / "pytorchjob-v1.json",
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): SCHEMAS / "trainjob-v1alpha1.json",
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"): SCHEMAS / "trainingruntime-v1alpha1.json",
}
PYTORCHJOB_SCHEMA = CRD_SCHEMAS[("kubeflow.org/v1", "PyTorchJob")]


def validate(objects: list[dict]) -> None:
    """Raise a `UserError` naming the object and the field of the first invalid one."""
    for obj in objects:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        schema = CRD_SCHEMAS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        error = _custom_error(obj, schema) if schema else _builtin_error(obj)
        if error:
            raise UserError(f"{kind}/{name} is invalid: {error}")


def _builtin_error(obj: dict) -> str | None:
    import kubernetes_validate  # its schemas load slowly: only when a built-in object is validated

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return _describe(e)
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {KUBERNETES_VERSION}"
    return None


def _custom_error(obj: dict, schema: Path) -> str | None:
    error = next(iter(sorted(_validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))), None)
    return _describe(error) if error else None


@functools.cache
def _validator(schema: Path):
    import jsonschema  # only when a custom resource is validated

    return jsonschema.Draft7Validator(strict(json.loads(schema.read_text())))


def strict(schema):
    """The schema with `additionalProperties: false` wherever it lists properties and allows no extras.

    The API server silently prunes unknown fields of a custom resource; here they are errors instead.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"{path or '(top)'}: {error.message}"

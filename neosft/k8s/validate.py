"""Check every rendered object before anything reaches a cluster.

Built-in kinds: `kubernetes-validate` in strict mode (unknown fields are errors) at KUBERNETES_VERSION.
PyTorchJob: the openAPIV3Schema of the Kubeflow training-operator v1.9.0 CRD, shipped in
`schemas/pytorchjob-v1.json` (Apache-2.0, licence beside it), made strict the same way.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from neosft.errors import UserError

KUBERNETES_VERSION = "1.31.0"
PYTORCHJOB_SCHEMA = Path(__file__).with_name("schemas") / "pytorchjob-v1.json"


def validate(objects: list[dict]) -> None:
    """Raise a `UserError` naming the object and the field of the first invalid one."""
    for obj in objects:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if (obj.get("apiVersion"), kind) == ("kubeflow.org/v1", "PyTorchJob"):
            error = _pytorchjob_error(obj)
        else:
            error = _builtin_error(obj)
        if error:
            raise UserError(f"{kind}/{name} is invalid: {error}")


def _builtin_error(obj: dict) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return _describe(e)
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {obj.get('apiVersion')} {obj.get('kind')} in Kubernetes {KUBERNETES_VERSION}"
    return None


def _pytorchjob_error(obj: dict) -> str | None:
    error = next(iter(sorted(_pytorchjob_validator().iter_errors(obj), key=lambda e: list(e.absolute_path))), None)
    return _describe(error) if error else None


@functools.lru_cache(maxsize=1)
def _pytorchjob_validator():
    import jsonschema

    schema = strict(json.loads(PYTORCHJOB_SCHEMA.read_text()))
    return jsonschema.Draft7Validator(schema)


def strict(schema):
    """The schema with `additionalProperties: false` wherever it lists properties and allows no extras.

    The API server silently prunes unknown fields of a custom resource; here they are errors instead.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return f"{path or '(top)'}: {error.message}"

"""A small HTTP server that answers like the Kubernetes API for the paths neosft uses, and records requests.

Objects live in memory per collection path; POST creates (409 when the name exists, 404 for an unknown
namespace), GET lists with `labelSelector` or reads one object, PATCH applies a JSON merge patch
(RFC 7386, as `application/merge-patch+json` asks), DELETE removes. `fail` forces an answer for a
(method, path) pair. `served` names the custom API group versions installed (CRDs): discovery
(GET /apis/GROUP/VERSION) lists their resources, and an API not served answers 404 for every path
under it, as the real server does for a CRD nobody installed.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GROUPS = {"serviceaccounts": "api/v1", "pods": "api/v1", "jobs": "apis/batch/v1",
          "roles": "apis/rbac.authorization.k8s.io/v1", "rolebindings": "apis/rbac.authorization.k8s.io/v1",
          "pytorchjobs": "apis/kubeflow.org/v1", "trainjobs": "apis/trainer.kubeflow.org/v1alpha1",
          "trainingruntimes": "apis/trainer.kubeflow.org/v1alpha1"}
COLLECTION = re.compile(r"^/(api/v1|apis/[a-z0-9.]+/v1(?:alpha1)?)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(/log)?$")
KINDS = {"serviceaccounts": "ServiceAccount", "pods": "Pod", "jobs": "Job", "pytorchjobs": "PyTorchJob",
         "roles": "Role", "rolebindings": "RoleBinding", "trainjobs": "TrainJob", "trainingruntimes": "TrainingRuntime"}
CUSTOM = {"kubeflow.org/v1": ["pytorchjobs"], "trainer.kubeflow.org/v1alpha1": ["trainjobs", "trainingruntimes"]}


@dataclass
class Request:
    method: str
    path: str
    query: dict
    body: dict | None
    content_type: str = ""


@dataclass
class KubeAPI:
    namespaces: set = field(default_factory=lambda: {"default", "ml"})
    served: set = field(default_factory=lambda: {"kubeflow.org/v1"})  # custom APIs installed: see CUSTOM
    objects: dict = field(default_factory=dict)  # collection path -> {name: object}
    logs: dict = field(default_factory=dict)  # pod name -> text
    fail: dict = field(default_factory=dict)  # (method, path) -> (status, Status dict or text)
    on_create: dict = field(default_factory=dict)  # kind -> status set on creation
    requests: list = field(default_factory=list)

    def add(self, namespace: str, plural: str, obj: dict) -> None:
        self.objects.setdefault(f"/{GROUPS[plural]}/namespaces/{namespace}/{plural}", {})[obj["metadata"]["name"]] = obj

    def get(self, namespace: str, plural: str, name: str) -> dict | None:
        return self.objects.get(f"/{GROUPS[plural]}/namespaces/{namespace}/{plural}", {}).get(name)

    def sent(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def answer(self, method: str, path: str, query: dict, body: dict | None, content_type: str = "") -> tuple[int, object]:
        self.requests.append(Request(method, path, query, body, content_type))
        if (method, path) in self.fail:
            return self.fail[(method, path)]
        group_version = path.removeprefix("/apis/").split("/namespaces/")[0]
        if group_version in CUSTOM and group_version not in self.served:
            return 404, "404 page not found"
        if group_version in CUSTOM and path == f"/apis/{group_version}":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                         "resources": [{"name": plural, "singularName": plural[:-1], "namespaced": True,
                                        "kind": KINDS[plural], "verbs": ["create", "delete", "deletecollection", "get",
                                                                          "list", "patch", "update", "watch"]}
                                       for plural in CUSTOM[group_version]]}
        match = COLLECTION.match(path)
        if not match:
            return 404, "404 page not found"
        group, namespace, plural, name, log = match.groups()
        if GROUPS.get(plural) != group:
            return 404, "404 page not found"
        collection = self.objects.setdefault(f"/{group}/namespaces/{namespace}/{plural}", {})
        if method == "POST":
            if namespace not in self.namespaces:  # reads in a missing namespace find nothing, as on a real server
                return 404, status(404, "NotFound", f'namespaces "{namespace}" not found', kind="namespaces",
                                   name=namespace)
            obj = dict(body, metadata={**body["metadata"], "namespace": namespace, "uid": f"uid-{len(self.requests)}",
                                       "creationTimestamp": "2026-11-26T12:00:00Z"})
            if obj["metadata"]["name"] in collection:
                return 409, status(409, "AlreadyExists", f'{plural} "{obj["metadata"]["name"]}" already exists')
            if obj["kind"] in self.on_create:
                obj["status"] = self.on_create[obj["kind"]]
            collection[obj["metadata"]["name"]] = obj
            return 201, obj
        if name is None:
            items = [o for o in collection.values() if selects(query.get("labelSelector", [""])[0], o)]
            return 200, {"kind": f"{KINDS[plural]}List", "apiVersion": group.split("/", 1)[-1], "metadata": {}, "items": items}
        if name not in collection:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found', kind=plural, name=name)
        if log:
            return 200, self.logs.get(name, "")
        if method == "PATCH":
            if content_type != "application/merge-patch+json":  # the only patch type this server speaks
                return 415, status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
            collection[name] = merge_patch(collection[name], body)
            return 200, collection[name]
        if method == "DELETE":
            del collection[name]
            return 200, status(200, "", "", kind=plural, name=name) | {"status": "Success"}
        return 200, collection[name]


def status(code: int, reason: str, message: str, **details) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}


def merge_patch(target, patch):
    """RFC 7386: mappings merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def selects(selector: str, obj: dict) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def serve(api: KubeAPI) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, payload = api.answer(self.command, url.path, parse_qs(url.query), body,
                                       (self.headers.get("Content-Type") or "").split(";")[0])
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _handle

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

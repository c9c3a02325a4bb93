"""A small HTTP server that answers like the Kubernetes API for the paths neosft uses, and records requests.

Objects live in memory per collection path; POST creates (409 when the name exists, 404 for an unknown
namespace), GET lists with `labelSelector` or reads one object, PATCH applies a JSON merge patch
(RFC 7386, as `application/merge-patch+json` asks), DELETE removes. `fail` forces an answer for a
(method, path) pair. `served` names the custom API group versions installed (CRDs): discovery
(GET /apis/GROUP/VERSION) lists their resources, and an API not served answers 404 for every path
under it, as the real server does for a CRD nobody installed.

The controllers' own rules that decide whether a run can start are emulated beside it, each citing the
upstream file (repo@tag:path) it follows: Kueue's webhooks and admission (`Kueue`), Trainer's runtime lookup
(`runtime_lag`), JobSet's pod name rule (`jobset_pod_name_error`), the training operator's pod creation under
Pod Security (`run_training_operator`), and the Events they record.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

GROUPS = {
    "serviceaccounts": "api/v1",
    "pods": "api/v1",
    "jobs": "apis/batch/v1",
    "configmaps": "api/v1",
    "events": "api/v1",
    "workloads": "apis/kueue.x-k8s.io/v1beta1",
    "localqueues": "apis/kueue.x-k8s.io/v1beta1",
    "roles": "apis/rbac.authorization.k8s.io/v1",
    "rolebindings": "apis/rbac.authorization.k8s.io/v1",
    "pytorchjobs": "apis/kubeflow.org/v1",
    "trainjobs": "apis/trainer.kubeflow.org/v1alpha1",
    "trainingruntimes": "apis/trainer.kubeflow.org/v1alpha1",
}
COLLECTION = re.compile(
    r"^/(api/v1|apis/[-a-z0-9.]+/v1(?:alpha1|beta1)?)/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(/log)?$"
)
NAMESPACE = re.compile(r"^/api/v1/namespaces/([^/]+)$")
KINDS = {
    "serviceaccounts": "ServiceAccount",
    "pods": "Pod",
    "jobs": "Job",
    "pytorchjobs": "PyTorchJob",
    "configmaps": "ConfigMap",
    "events": "Event",
    "workloads": "Workload",
    "localqueues": "LocalQueue",
    "roles": "Role",
    "rolebindings": "RoleBinding",
    "trainjobs": "TrainJob",
    "trainingruntimes": "TrainingRuntime",
}
CUSTOM = {
    "kubeflow.org/v1": ["pytorchjobs"],
    "trainer.kubeflow.org/v1alpha1": ["trainjobs", "trainingruntimes"],
    "kueue.x-k8s.io/v1beta1": ["workloads", "localqueues"],
}
KUEUE_API = "kueue.x-k8s.io/v1beta1"
# What each kind's Kueue integration is called, and where the kind keeps `suspend`.
FRAMEWORK = {"Job": "batch/job", "PyTorchJob": "kubeflow.org/pytorchjob", "TrainJob": "trainer.kubeflow.org/trainjob"}
SUSPEND = {"Job": ("spec", "suspend"), "PyTorchJob": ("spec", "runPolicy", "suspend"), "TrainJob": ("spec", "suspend")}
# kubernetes-sigs/kueue@v0.19.2:config/components/manager/controller_manager_config.yaml (and charts/kueue/values.yaml):
# integrations.frameworks as shipped; kubeflow.org/pytorchjob is commented out (deprecated, CHANGELOG-0.19).
KUEUE_0_19_FRAMEWORKS = [
    "batch/job",
    "kubeflow.org/mpijob",
    "ray.io/rayjob",
    "ray.io/raycluster",
    "ray.io/rayservice",
    "jobset.x-k8s.io/jobset",
    "workload.codeflare.dev/appwrapper",
    "trainer.kubeflow.org/trainjob",
    "pod",
    "deployment",
    "statefulset",
    "leaderworkerset.x-k8s.io/leaderworkerset",
]
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GATE = "kueue.x-k8s.io/admission-gated-by"  # kubernetes-sigs/kueue@v0.19.2:pkg/constants/constants.go
# kubeflow/training-operator@v1.9.0:pkg/controller.v1/pytorch/initcontainer.go (initContainerTemplate), used when
# the operator finds no file at --pytorch-init-container-template-file (pkg/config/config.go: /etc/config/initContainer.yaml)
OPERATOR_INIT_TEMPLATE = """
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  resources:
    limits:
      cpu: 100m
      memory: 20Mi
    requests:
      cpu: 50m
      memory: 10Mi
  command: ['sh', '-c', 'err=1;for i in $(seq {{.MaxTries}}); do if nslookup {{.MasterAddr}}; then err=0 && break; fi;echo waiting for master; sleep 2; done; exit $err']"""


@dataclass
class Kueue:
    """Kueue v0.19 as installed: its configured integrations, and the AdmissionGatedBy feature
    (kubernetes-sigs/kueue@v0.19.2:pkg/features/kube_features.go: alpha, off, in 0.17; beta, on, from 0.19)."""

    frameworks: list = field(default_factory=lambda: list(KUEUE_0_19_FRAMEWORKS))
    gate: bool = True

    def manages(self, kind: str) -> bool:
        return FRAMEWORK.get(kind) in self.frameworks


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
    flaky: dict = field(default_factory=dict)  # (method, path) -> how many more times it answers 503
    on_create: dict = field(default_factory=dict)  # kind -> status set on creation
    requests: list = field(default_factory=list)
    namespace_labels: dict = field(default_factory=dict)  # namespace -> its labels (Pod Security)
    kueue: Kueue | None = None  # Kueue installed (its API served, its webhooks on)
    runtime_lag: int = 0  # TrainJob creations Trainer's webhook refuses after each TrainingRuntime is created
    unseen: dict = field(default_factory=dict)  # TrainingRuntime name -> refusals left (the informer lags)

    def add(self, namespace: str, plural: str, obj: dict) -> None:
        self.objects.setdefault(f"/{GROUPS[plural]}/namespaces/{namespace}/{plural}", {})[obj["metadata"]["name"]] = obj

    def get(self, namespace: str, plural: str, name: str) -> dict | None:
        return self.objects.get(f"/{GROUPS[plural]}/namespaces/{namespace}/{plural}", {}).get(name)

    def sent(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def answer(
        self, method: str, path: str, query: dict, body: dict | None, content_type: str = ""
    ) -> tuple[int, object]:
        self.requests.append(Request(method, path, query, body, content_type))
        if (method, path) in self.fail:
            return self.fail[(method, path)]
        if self.flaky.get((method, path), 0) > 0:
            self.flaky[(method, path)] -= 1
            return 503, status(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        if (namespace_match := NAMESPACE.match(path)) and method == "GET":
            name = namespace_match[1]
            if name not in self.namespaces:
                return 404, status(404, "NotFound", f'namespaces "{name}" not found', kind="namespaces", name=name)
            return 200, {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": self.namespace_labels.get(name, {})},
            }
        if self.kueue and path == "/api/v1/namespaces/kueue-system/configmaps/kueue-manager-config":
            config = {
                "apiVersion": "config.kueue.x-k8s.io/v1beta2",
                "kind": "Configuration",
                "integrations": {"frameworks": self.kueue.frameworks},
            }
            return 200, {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kueue-manager-config", "namespace": "kueue-system"},
                "data": {"controller_manager_config.yaml": yaml.safe_dump(config)},
            }
        group_version = path.removeprefix("/apis/").split("/namespaces/")[0]
        served = self.served | ({KUEUE_API} if self.kueue else set())
        if group_version in CUSTOM and group_version not in served:
            return 404, "404 page not found"
        if group_version in CUSTOM and path == f"/apis/{group_version}":
            return 200, {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": [
                    {
                        "name": plural,
                        "singularName": plural[:-1],
                        "namespaced": True,
                        "kind": KINDS[plural],
                        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    }
                    for plural in CUSTOM[group_version]
                ],
            }
        match = COLLECTION.match(path)
        if not match:
            return 404, "404 page not found"
        group, namespace, plural, name, log = match.groups()
        if GROUPS.get(plural) != group:
            return 404, "404 page not found"
        collection = self.objects.setdefault(f"/{group}/namespaces/{namespace}/{plural}", {})
        if method == "POST":
            if namespace not in self.namespaces:  # reads in a missing namespace find nothing, as on a real server
                return 404, status(
                    404, "NotFound", f'namespaces "{namespace}" not found', kind="namespaces", name=namespace
                )
            created = json.loads(json.dumps(body))  # what the webhooks change is not what was sent
            obj = dict(
                created,
                metadata={
                    **created["metadata"],
                    "namespace": namespace,
                    "uid": f"uid-{len(self.requests)}",
                    "creationTimestamp": "2026-11-26T12:00:00Z",
                },
            )
            if obj["metadata"]["name"] in collection:
                return 409, status(409, "AlreadyExists", f'{plural} "{obj["metadata"]["name"]}" already exists')
            refused = self._admit_create(namespace, obj)
            if refused:
                return refused
            if query.get("dryRun") == ["All"]:  # admitted, not stored
                return 201, obj
            if obj["kind"] in self.on_create:
                obj["status"] = self.on_create[obj["kind"]]
            collection[obj["metadata"]["name"]] = obj
            return 201, obj
        if name is None:
            items = [
                o
                for o in collection.values()
                if selects(query.get("labelSelector", [""])[0], o)
                and selects_fields(query.get("fieldSelector", [""])[0], o)
            ]
            return 200, {
                "kind": f"{KINDS[plural]}List",
                "apiVersion": group.split("/", 1)[-1],
                "metadata": {},
                "items": items,
            }
        if name not in collection:
            return 404, status(404, "NotFound", f'{plural} "{name}" not found', kind=plural, name=name)
        if log:
            return 200, self.logs.get(name, "")
        if method == "PATCH":
            if content_type != "application/merge-patch+json":  # the only patch type this server speaks
                return 415, status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
            patched = merge_patch(collection[name], body)
            refused = self._admit_update(namespace, collection[name], patched)
            if refused:
                return refused
            collection[name] = patched
            return 200, collection[name]
        if method == "DELETE":
            del collection[name]
            return 200, status(200, "", "", kind=plural, name=name) | {"status": "Success"}
        return 200, collection[name]

    # --- the controllers' webhooks ----------------------------------------------------------------

    def _kueue_manages(self, obj: dict) -> bool:
        return self.kueue is not None and self.kueue.manages(obj["kind"])

    def _admit_create(self, namespace: str, obj: dict) -> tuple[int, dict] | None:
        """What the webhooks do to, or say about, an object being created (None: admitted, perhaps mutated)."""
        if obj["kind"] == "TrainingRuntime":
            self.unseen[obj["metadata"]["name"]] = self.runtime_lag
        if obj["kind"] == "TrainJob":
            # kubeflow/trainer@v2.3.0:pkg/runtime/core/trainingruntime.go (ValidateObjects): the runtime is read from
            # the informer cache, which may not hold a TrainingRuntime created just before (kubeflow/trainer#2807).
            runtime = obj["spec"]["runtimeRef"]["name"]
            known = runtime in self.objects.get(
                f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{namespace}/trainingruntimes", {}
            )
            if not known or self.unseen.get(runtime, 0) > 0:
                self.unseen[runtime] = self.unseen.get(runtime, 0) - 1
                return 422, status(
                    422,
                    "Invalid",
                    'admission webhook "validator.trainjob.trainer.kubeflow.org" denied '
                    f'the request: spec.runtimeRef: Invalid value: "{runtime}": trainingruntimes.'
                    f'trainer.kubeflow.org "{runtime}" not found: specified trainingRuntime must be '
                    "created before the TrainJob is created",
                )
        if not self._kueue_manages(obj):
            return None
        labels = obj["metadata"].setdefault("labels", {})
        # kubernetes-sigs/kueue@v0.19.2:pkg/controller/jobframework/defaults.go (ApplyDefaultLocalQueue): an
        # unlabelled job gets queue `default` where that LocalQueue exists (on since 0.12, locked on since 0.17).
        if QUEUE_LABEL not in labels and self.get(namespace, "localqueues", "default"):
            labels[QUEUE_LABEL] = "default"
        if QUEUE_LABEL in labels:  # jobframework's defaulting: a queued job starts suspended
            _set(obj, SUSPEND[obj["kind"]], True)
        return _gate_error((obj["metadata"].get("annotations") or {}).get(GATE))

    def _admit_update(self, namespace: str, old: dict, new: dict) -> tuple[int, dict] | None:
        if not self._kueue_manages(new):
            return None
        # kubernetes-sigs/kueue@v0.19.2:pkg/controller/jobframework/validation.go (validateUpdateForQueueName)
        old_queue = (old["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        new_queue = (new["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        if not _get(new, SUSPEND[new["kind"]]) and old_queue != new_queue:
            return 422, status(
                422, "Invalid", f'metadata.labels[{QUEUE_LABEL}]: Invalid value: "{new_queue}": field is immutable'
            )
        return _gate_error(
            (new["metadata"].get("annotations") or {}).get(GATE),
            (old["metadata"].get("annotations") or {}).get(GATE),
            update=True,
        )

    # --- the controllers ----------------------------------------------------------------------------

    def run_kueue(self, namespace: str = "ml") -> list[str]:
        """One pass of Kueue's job reconciler: a Workload for each queued job, and the jobs of an existing
        LocalQueue admitted (unsuspended) unless an admission gate holds them; returns 'Kind/name' admitted.

        kubernetes-sigs/kueue@v0.19.2:pkg/controller/jobframework/reconciler.go; the gate:
        pkg/util/webhook/validation_admissiongatedby.go and pkg/features/kube_features.go (AdmissionGatedBy).
        """
        admitted = []
        for plural in ("jobs", "pytorchjobs", "trainjobs"):
            for obj in list(self.objects.get(f"/{GROUPS[plural]}/namespaces/{namespace}/{plural}", {}).values()):
                queue = (obj["metadata"].get("labels") or {}).get(QUEUE_LABEL)
                if not queue or not self._kueue_manages(obj):
                    continue
                workload = f"{obj['kind'].lower()}-{obj['metadata']['name']}"
                if not self.get(namespace, "workloads", workload):
                    self.add(
                        namespace,
                        "workloads",
                        {
                            "apiVersion": KUEUE_API,
                            "kind": "Workload",
                            "metadata": {
                                "name": workload,
                                "namespace": namespace,
                                "ownerReferences": [
                                    {
                                        "apiVersion": obj["apiVersion"],
                                        "kind": obj["kind"],
                                        "name": obj["metadata"]["name"],
                                        "uid": obj["metadata"]["uid"],
                                    }
                                ],
                            },
                            "spec": {"queueName": queue},
                        },
                    )
                gated = (
                    self.kueue is not None and self.kueue.gate and (obj["metadata"].get("annotations") or {}).get(GATE)
                )
                if _get(obj, SUSPEND[obj["kind"]]) and not gated and self.get(namespace, "localqueues", queue):
                    _set(obj, SUSPEND[obj["kind"]], False)
                    admitted.append(f"{obj['kind']}/{obj['metadata']['name']}")
        return admitted

    def run_training_operator(self, namespace: str = "ml", template: str = OPERATOR_INIT_TEMPLATE) -> list[str]:
        """One pass of the training operator over unsuspended PyTorchJobs: their pods, created as the operator
        creates them, or refused by Pod Security with the Event the operator records; returns the pods made.

        kubeflow/training-operator@v1.9.0: pkg/controller.v1/pytorch/initcontainer.go (setInitContainer: every
        Worker gets the template's init containers), pkg/controller.v1/control/pod_control.go (FailedCreatePod).
        """
        made = []
        level = self.namespace_labels.get(namespace, {}).get("pod-security.kubernetes.io/enforce")
        for job in list(self.objects.get(f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs", {}).values()):
            if job["spec"]["runPolicy"].get("suspend"):
                continue
            name = job["metadata"]["name"]
            for role, replica in job["spec"]["pytorchReplicaSpecs"].items():
                for index in range(replica.get("replicas", 1)):
                    pod_name = f"{name}-{role.lower()}-{index}"
                    spec = json.loads(json.dumps(replica["template"]["spec"]))
                    if role == "Worker":
                        text = (
                            template.replace("{{.InitContainerImage}}", "alpine:3.10")
                            .replace("{{.MaxTries}}", "100")
                            .replace("{{.MasterAddr}}", f"{name}-master-0")
                        )
                        spec["initContainers"] = spec.get("initContainers", []) + yaml.safe_load(text)
                    for container in spec.get("initContainers", []) + spec["containers"]:
                        for part in (container.get("resources") or {}).values():  # quantities come back as strings
                            part.update({k: str(v) for k, v in part.items()})
                    problems = restricted_violations(spec) if level == "restricted" else []
                    if problems:
                        self.add(
                            namespace,
                            "events",
                            event(
                                job,
                                "FailedCreatePod",
                                (
                                    f'Error creating: pods "{pod_name}" is forbidden: violates PodSecurity '
                                    f'"restricted:latest": {", ".join(problems)}'
                                ),
                                len(self.requests),
                            ),
                        )
                        continue
                    labels = {
                        **replica["template"]["metadata"].get("labels", {}),
                        "training.kubeflow.org/replica-type": role.lower(),
                    }
                    self.add(
                        namespace,
                        "pods",
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {"name": pod_name, "labels": labels},
                            "spec": spec,
                            "status": {"phase": "Pending"},
                        },
                    )
                    made.append(pod_name)
        return made


def _get(obj: dict, path: tuple[str, ...]):
    for key in path:
        obj = (obj or {}).get(key) or {}
    return obj is True


def _set(obj: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


def _gate_error(new: str | None, old: str | None = None, update: bool = False) -> tuple[int, dict] | None:
    """kubernetes-sigs/kueue@v0.19.2:pkg/util/webhook/validation_admissiongatedby.go: set at creation, then only
    removable; each gate a domain-prefixed path of at most 63 characters."""
    path = f"metadata.annotations[{GATE}]"
    gates = (new or "").split(",") if new else []
    if update and not old and gates:
        return 422, status(422, "Invalid", f"{path}: Forbidden: cannot add admission gate after creation")
    if update and old and not set(gates) <= set(old.split(",")):
        return 422, status(422, "Invalid", f"{path}: Forbidden: can only remove gates, not add new ones")
    for gate in gates:
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[^/\s]+$", gate) or len(gate) > 63:
            return 422, status(422, "Invalid", f'{path}: Invalid value: "{new}"')
    return None


def jobset_pod_name_error(jobset: str, replicated_job: str, max_job_index: int, max_pod_index: int) -> str | None:
    """kubernetes-sigs/jobset@v0.12.0:pkg/webhooks/jobset_webhook.go: the longest pod name,
    placement.GenPodName(js, rjob, maxJobIndex, maxPodIndex) + "-abcde", must be a DNS-1035 label."""
    longest = f"{jobset}-{replicated_job}-{max_job_index}-{max_pod_index}-abcde"
    if len(longest) > 63 or not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", longest):
        return "JobSet name is too long, pod names generated for this JobSet will exceed 63 characters"
    return None


def restricted_violations(spec: dict) -> list[str]:
    """The Pod Security `restricted` checks a pod fails, worded as the admission message words them
    (kubernetes/pod-security-admission policy/check_{allowPrivilegeEscalation,capabilities_restricted,
    runAsNonRoot,runAsUser,seccompProfile_restricted,restrictedVolumes,privileged}.go)."""
    pod = spec.get("securityContext") or {}
    containers = spec.get("initContainers", []) + spec["containers"]
    found = []

    def offenders(test) -> list[str]:
        return [c["name"] for c in containers if test(c.get("securityContext") or {})]

    checks = [
        (
            "allowPrivilegeEscalation != false",
            "must set securityContext.allowPrivilegeEscalation=false",
            lambda c: c.get("allowPrivilegeEscalation") is not False,
        ),
        (
            "unrestricted capabilities",
            'must set securityContext.capabilities.drop=["ALL"]',
            lambda c: (
                "ALL" not in ((c.get("capabilities") or {}).get("drop") or [])
                or set((c.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
            ),
        ),
        (
            "runAsNonRoot != true",
            "must set securityContext.runAsNonRoot=true",
            lambda c: (
                c.get("runAsNonRoot") is False
                or (c.get("runAsNonRoot") is None and pod.get("runAsNonRoot") is not True)
            ),
        ),
        ("runAsUser=0", "must not set runAsUser=0", lambda c: c.get("runAsUser", pod.get("runAsUser")) == 0),
        (
            "seccompProfile",
            'must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
            lambda c: (
                (c.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
                not in ("RuntimeDefault", "Localhost")
            ),
        ),
        ("privileged", "must not set securityContext.privileged=true", lambda c: c.get("privileged") is True),
    ]
    for what, fix, test in checks:
        names = offenders(test)
        if names:
            subject = (
                f'container "{names[0]}"' if len(names) == 1 else "containers " + ", ".join(f'"{n}"' for n in names)
            )
            found.append(f"{what} ({subject} {fix})")
    allowed = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    bad = [v["name"] for v in spec.get("volumes", []) if not set(v) - {"name"} <= allowed]
    if bad:
        found.append(f"restricted volume types (volumes {', '.join(bad)})")
    return found


def event(obj: dict, reason: str, message: str, serial: int) -> dict:
    """A Warning Event about `obj`, as a controller's recorder writes it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "type": "Warning",
        "reason": reason,
        "message": message,
        "metadata": {"name": f"{obj['metadata']['name']}.{serial:016x}"},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": obj["metadata"]["name"],
            "uid": obj["metadata"].get("uid"),
        },
        "lastTimestamp": f"2026-11-26T12:{serial % 60:02d}:00Z",
    }


def status(code: int, reason: str, message: str, **details) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


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


def selects_fields(selector: str, obj: dict) -> bool:
    """A field selector of `a.b=value` terms (what the API server supports for Events)."""
    for term in filter(None, selector.split(",")):
        path, _, value = term.partition("=")
        node: object = obj
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node != value:
            return False
    return True


def serve(api: KubeAPI) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, payload = api.answer(
                self.command,
                url.path,
                parse_qs(url.query),
                body,
                (self.headers.get("Content-Type") or "").split(";")[0],
            )
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

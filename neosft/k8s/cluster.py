"""A run on the cluster, through the official `kubernetes` client: apply, list, logs, delete.

Every object of a run carries the label `neosft.io/run-id`; PyTorchJobs, TrainJobs and TrainingRuntimes go
through CustomObjectsApi.
Each API failure the user can fix becomes one `UserError` line that never holds a credential.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

import yaml

from neosft.errors import UserError, redact
from neosft.k8s.kinds import (
    BY_KIND,
    CUSTOM,
    LOCAL_QUEUE,
    TRAINER_KINDS,
    TRAINING_RUNTIME,
    TRAINJOB,
    WORKLOAD,
    Resource,
    TrainerKind,
    not_installed,
)
from neosft.k8s.render import is_hook

RUN_LABEL = "neosft.io/run-id"
VARIANT_LABEL = "neosft.io/variant"
COMPONENT_LABEL = "neosft.io/component"
OUTPUT_ANNOTATION = "neosft.io/output"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Kueue's admission gate (beta, on by default in Kueue 0.19): a comma-separated list, set at creation and only
# removable (kueue pkg/util/webhook/validation_admissiongatedby.go). The chart sets GATE on held training objects.
GATE_ANNOTATION = "kueue.x-k8s.io/admission-gated-by"
GATE = "neosft.io/dataset"
# Kueue's configuration (kustomize and Helm installs alike), where integrations.frameworks lists what it manages.
KUEUE_CONFIG = ("kueue-system", "kueue-manager-config", "controller_manager_config.yaml")
# The training operator reads its init container template from /etc/config/initContainer.yaml, which
# k8s/training-operator fills from this ConfigMap.
OPERATOR_TEMPLATE = ("kubeflow", "training-operator-init-container")
MANAGED_BY = "app.kubernetes.io/managed-by"
# A TrainJob's JobSet has its name and labels its pods with it (jobset-name); trainjob-name is read too,
# for Trainer releases that set it.
TRAINJOB_POD_LABELS = ("trainer.kubeflow.org/trainjob-name", "jobset.sigs.k8s.io/jobset-name")
TIMEOUT_S = 30
RETRY_S = 60  # how long a TrainJob refused for its just-created runtime, or a failing release call, is retried
RETRY_FIRST_S = 0.25  # the first pause between tries; each next one doubles, up to RETRY_MAX_INTERVAL_S
RETRY_MAX_INTERVAL_S = 5.0
TRANSIENT = (429, 500, 502, 503, 504)
# The order objects are created in: a TrainJob's runtime before it, the training objects (held) before
# the data Job that releases them.
KINDS = ("ServiceAccount", "Role", "RoleBinding", "TrainingRuntime", "PyTorchJob", "TrainJob", "Job")


class Cluster:
    """One namespace of the cluster named by the kubeconfig (or the pod's service account)."""

    def __init__(self, namespace: str | None = None):
        from kubernetes import client, config  # the client loads for a cluster, not for rendering or --help

        configuration = client.Configuration()
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and not _kubeconfig_exists():
                config.load_incluster_config(client_configuration=configuration)
                default_namespace = _incluster_namespace()
            else:
                config.load_kube_config(client_configuration=configuration)
                default_namespace = config.list_kube_config_contexts()[1].get("context", {}).get("namespace")
        except (config.ConfigException, OSError, ValueError, TypeError, AttributeError) as e:
            if not _kubeconfig_exists():
                raise UserError("no Kubernetes configuration: set KUBECONFIG or create ~/.kube/config") from None
            raise UserError(f"unusable kubeconfig: {_first_line(e)}") from None
        except yaml.YAMLError as e:
            raise UserError(f"unusable kubeconfig: not valid YAML ({_first_line(e)})") from None
        configuration.retries = 1
        self.host = redact(configuration.host)
        self.namespace = namespace or default_namespace or "default"
        api = client.ApiClient(configuration)
        self.serialize = api.sanitize_for_serialization
        self.core, self.batch, self.custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
        self.rbac = client.RbacAuthorizationV1Api(api)

    # --- submit ---------------------------------------------------------------------------------

    def served(self) -> list[TrainerKind]:
        """The trainer kinds whose CRD the API server serves (discovery), in the order `auto` prefers."""
        return [trainer for trainer in TRAINER_KINDS.values() if self._serves(trainer.resource)]

    def require(self, trainer: TrainerKind) -> None:
        if not self._serves(trainer.resource):
            raise UserError(not_installed(trainer))

    def _serves(self, resource: Resource) -> bool:
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        with self.errors(f"the {resource.api_version} API"):
            try:
                found = self.custom.get_api_resources(resource.group, resource.version, _request_timeout=TIMEOUT_S)
            except ApiException as e:
                if e.status != 404:
                    raise
                return False
        return resource.plural in {r.name for r in found.resources}

    def create(self, objects: list[dict]) -> list[str]:
        """Create `objects` in order; when one fails, remove those already created and raise."""
        created: list[dict] = []
        try:
            for obj in sorted(objects, key=lambda o: KINDS.index(o["kind"])):
                with self.errors(f"{obj['kind']}/{obj['metadata']['name']}"):
                    self._create_retrying(obj)
                created.append(obj)
        except UserError as e:
            for obj in reversed(created):
                with contextlib.suppress(UserError):
                    self._delete(obj["kind"], obj["metadata"]["name"])
            note = "; nothing was left behind" if created else ""
            raise UserError(f"{e}{note}") from None
        return [f"{o['kind']}/{o['metadata']['name']}" for o in created]

    def await_runtime(self, runtime: str) -> None:
        """Return once the TrainJob webhooks see TrainingRuntime `runtime` (the Helm path's pre-install check):
        a dry-run TrainJob naming it is refused for the unseen runtime for at most RETRY_S."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        probe = {
            "apiVersion": TRAINJOB.resource.api_version,
            "kind": TRAINJOB.kind,
            "metadata": {"name": f"{runtime}-check"},
            "spec": {
                "runtimeRef": {"apiGroup": TRAINING_RUNTIME.group, "kind": TRAINING_RUNTIME.kind, "name": runtime}
            },
        }
        with self.errors(f"TrainingRuntime/{runtime}"):
            try:
                self._create_retrying(probe, dry_run=True)
            except ApiException as e:
                if _runtime_unseen(probe, e) or e.status in (401, 403):
                    raise
                # any other refusal of the probe comes after the runtime lookup: the webhooks see the runtime

    def _create_retrying(self, obj: dict, dry_run: bool = False) -> None:
        """Create `obj`; a TrainJob refused because its TrainingRuntime is not seen yet is tried again for RETRY_S.

        Trainer's TrainJob webhook (kubeflow/trainer pkg/runtime/core/trainingruntime.go, ValidateObjects) and
        Kueue's (pkg/controller/jobs/trainjob) read the runtime from an informer cache that lags its creation.
        """
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        deadline = time.monotonic() + RETRY_S
        for pause in _pauses():
            try:
                return self._create(obj, dry_run)
            except ApiException as e:
                if not _runtime_unseen(obj, e) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)

    def _create(self, obj: dict, dry_run: bool = False) -> None:
        ns, kw = self.namespace, {"_request_timeout": TIMEOUT_S, **({"dry_run": "All"} if dry_run else {})}
        match obj["kind"]:
            case "ServiceAccount":
                self.core.create_namespaced_service_account(ns, obj, **kw)
            case "Role":
                self.rbac.create_namespaced_role(ns, obj, **kw)
            case "RoleBinding":
                self.rbac.create_namespaced_role_binding(ns, obj, **kw)
            case "Job":
                self.batch.create_namespaced_job(ns, obj, **kw)
            case kind if kind in CUSTOM:
                r = CUSTOM[kind]
                self.custom.create_namespaced_custom_object(r.group, r.version, ns, r.plural, obj, **kw)
            case kind:
                raise UserError(f"neosft does not create {kind} objects")

    def release(self, kind: str, names: list[str], wait_s: float) -> list[str]:
        """Let this run's held training objects start: lift Kueue's admission gate, and unsuspend those no
        Kueue queue holds (Kueue admits and unsuspends the others when their queue has room).

        Waits up to `wait_s` for an object not created yet (Helm creates Jobs before custom resources);
        a failing API call (throttled, server error, unreachable) is retried for RETRY_S.
        """
        trainer = BY_KIND[kind]
        r, ns, kw = trainer.resource, self.namespace, {"_request_timeout": TIMEOUT_S}
        released = []
        for name in names:
            with self.errors(f"{kind}/{name}"):
                obj = self._retrying(
                    lambda n=name: self.custom.get_namespaced_custom_object(r.group, r.version, ns, r.plural, n, **kw),
                    wait_s,
                )
                metadata = obj["metadata"]
                queue = (metadata.get("labels") or {}).get(QUEUE_LABEL)
                patch: dict = {} if queue else trainer.suspend_patch(False)
                gates = [g.strip() for g in (metadata.get("annotations") or {}).get(GATE_ANNOTATION, "").split(",")]
                if GATE in gates:
                    rest = ",".join(g for g in gates if g and g != GATE)
                    patch["metadata"] = {"annotations": {GATE_ANNOTATION: rest or None}}
                if patch:
                    self._retrying(
                        lambda n=name, p=patch: self.custom.patch_namespaced_custom_object(
                            r.group, r.version, ns, r.plural, n, p, _content_type="application/merge-patch+json", **kw
                        )
                    )
            released.append(f"{kind}/{name}" + (f" (handed to Kueue queue {queue})" if queue else ""))
        return released

    @staticmethod
    def _retrying(call, missing_s: float = 0.0):
        """`call()`, again while it fails for a while: 404 for `missing_s`, a transient failure for RETRY_S."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked
        from urllib3.exceptions import HTTPError  # the client's transport, loaded with it

        start = time.monotonic()
        for pause in _pauses():
            try:
                return call()
            except ApiException as e:
                waited = time.monotonic() - start
                if not ((e.status == 404 and waited < missing_s) or (e.status in TRANSIENT and waited < RETRY_S)):
                    raise
            except HTTPError:
                if time.monotonic() - start > RETRY_S:
                    raise
            time.sleep(pause)

    # --- what the cluster is set up to do ---------------------------------------------------------

    def local_queue_exists(self, name: str) -> bool | None:
        """Whether Kueue's LocalQueue `name` exists in the namespace (None: it cannot be read)."""
        return self._readable(
            lambda: self.custom.get_namespaced_custom_object(
                LOCAL_QUEUE.group,
                LOCAL_QUEUE.version,
                self.namespace,
                LOCAL_QUEUE.plural,
                name,
                _request_timeout=TIMEOUT_S,
            )
        )

    def kueue_frameworks(self) -> list[str] | None:
        """The integrations Kueue's configuration enables (None: it cannot be read here)."""
        namespace, name, key = KUEUE_CONFIG
        config = self._config_map(namespace, name)
        if not isinstance(config, dict) or key not in config:
            return None
        try:
            frameworks = ((yaml.safe_load(config[key]) or {}).get("integrations") or {}).get("frameworks")
        except (yaml.YAMLError, AttributeError):
            return None
        return [str(f) for f in frameworks] if isinstance(frameworks, list) else None

    def operator_template(self) -> bool | None:
        """Whether the training operator's init container template ConfigMap (k8s/training-operator) exists."""
        found = self._config_map(*OPERATOR_TEMPLATE)
        return None if found is None else found is not False

    def pod_security(self) -> str | None:
        """The Pod Security level the namespace enforces (None: none, or the namespace cannot be read)."""
        found = self._readable(lambda: self.core.read_namespace(self.namespace, _request_timeout=TIMEOUT_S))
        if not found:
            return None
        namespace = self.serialize(found)
        return (namespace["metadata"].get("labels") or {}).get("pod-security.kubernetes.io/enforce")

    def _config_map(self, namespace: str, name: str) -> dict | bool | None:
        """Its data; False when it does not exist, None when it may not be read."""
        found = self._readable(
            lambda: self.core.read_namespaced_config_map(name, namespace, _request_timeout=TIMEOUT_S)
        )
        return (self.serialize(found).get("data") or {}) if found else found

    def _readable(self, call):
        """`call()`'s answer, False when it is not found, None when it may not be read (403, or unreachable)."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked
        from urllib3.exceptions import HTTPError  # the client's transport, loaded with it

        try:
            return call() or False
        except ApiException as e:
            return False if e.status == 404 else None
        except HTTPError:
            return None

    # --- read -----------------------------------------------------------------------------------

    def objects(self, run_id: str | None = None) -> dict[str, list[dict]]:
        """The run's objects as plain dicts by kind (every run's without `run_id`).

        A custom kind the API server does not serve lists as empty. Pods of a TrainJob get the
        variant label of their TrainJob (the runtime that makes them is shared by the variants).
        """
        selector = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
        ns, kw = self.namespace, {"label_selector": selector, "_request_timeout": TIMEOUT_S}
        found: dict[str, list[dict]] = {}
        for kind, api_version, list_call in (
            ("Job", "batch/v1", self.batch.list_namespaced_job),
            ("Pod", "v1", self.core.list_namespaced_pod),
            ("ServiceAccount", "v1", self.core.list_namespaced_service_account),
            ("Role", "rbac.authorization.k8s.io/v1", self.rbac.list_namespaced_role),
            ("RoleBinding", "rbac.authorization.k8s.io/v1", self.rbac.list_namespaced_role_binding),
        ):
            with self.errors(f"{kind}s"):
                found[kind] = _typed(self.serialize(list_call(ns, **kw))["items"], kind, api_version)
        for kind, r in CUSTOM.items():
            found[kind] = _typed(self._list_custom(r, kw), kind, f"{r.group}/{r.version}")
        _label_trainjob_pods(found["TrainJob"], found["Pod"])
        found["Workload"] = self._workloads(found)
        return found

    def _workloads(self, found: dict[str, list[dict]]) -> list[dict]:
        """The Kueue Workloads that own (stand for) the listed training objects; none where Kueue is absent."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        owners = {o["metadata"].get("uid") for kind in BY_KIND for o in found[kind]}
        if not owners - {None}:
            return []
        with self.errors("Kueue Workloads"):
            try:
                items = self.custom.list_namespaced_custom_object(
                    WORKLOAD.group, WORKLOAD.version, self.namespace, WORKLOAD.plural, _request_timeout=TIMEOUT_S
                )["items"]
            except ApiException as e:
                if e.status in (403, 404):  # Kueue not installed, or not readable: no object is known to be queued
                    return []
                raise
        return [w for w in items if {o.get("uid") for o in w["metadata"].get("ownerReferences") or []} & owners]

    def warning(self, kind: str, name: str) -> str | None:
        """The latest Warning event about the object, as 'Reason: message' (None: none, or events not readable)."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        selector = f"involvedObject.kind={kind},involvedObject.name={name},type=Warning"
        with self.errors(f"events of {kind}/{name}"):
            try:
                events = self.serialize(
                    self.core.list_namespaced_event(self.namespace, field_selector=selector, _request_timeout=TIMEOUT_S)
                )["items"]
            except ApiException as e:
                if e.status == 403:
                    return None
                raise
        if not events:
            return None
        latest = max(
            events,
            key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or e["metadata"].get("creationTimestamp") or "",
        )
        return f"{printable(str(latest.get('reason') or 'Warning'))}: {printable(str(latest.get('message') or ''))}"

    def _list_custom(self, r: Resource, kw: dict) -> list[dict]:
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        with self.errors(f"{r.kind}s"):
            try:
                return self.custom.list_namespaced_custom_object(r.group, r.version, self.namespace, r.plural, **kw)[
                    "items"
                ]
            except ApiException as e:
                if e.status == 404 and (_status_body(e).get("details") or {}).get("kind") != "namespaces":
                    return []  # its CRD is not installed
                raise

    def logs(self, pod: dict, follow: bool) -> Iterator[str]:
        """Lines of the pod's main container (its init container while that one still runs)."""
        name = pod["metadata"]["name"]
        container = _running_container(pod)
        with self.errors(f"logs of pod {name}"):
            response = self.core.read_namespaced_pod_log(
                name,
                self.namespace,
                container=container,
                follow=follow,
                _preload_content=False,
                _request_timeout=None if follow else TIMEOUT_S,
            )
            pending = b""
            for chunk in response.stream(1 << 16):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                yield from (line.decode("utf-8", "replace") for line in lines)
            if pending:
                yield pending.decode("utf-8", "replace")

    # --- delete ---------------------------------------------------------------------------------

    def delete(self, run_id: str) -> list[str]:
        """Delete every object of the run (pods go with their Jobs); returns 'Kind/name' of each.

        A run installed by `helm install` is Helm's to remove: deleting its objects here would leave
        the release behind, so this refuses and names the `helm uninstall` to run (and removes what
        that leaves behind).
        """
        found = self.objects(run_id)
        helm = {
            (o["metadata"].get("labels") or {}).get("app.kubernetes.io/instance")
            for kind in KINDS
            for o in found[kind]
            if (o["metadata"].get("labels") or {}).get(MANAGED_BY) == "Helm" and not is_hook(o)
        }  # Helm leaves its hooks behind (a TrainJob run's runtime): those go here
        if helm:
            raise UserError(
                f"run {run_id} was installed by Helm: helm uninstall {' '.join(sorted(map(str, helm)))} "
                f"-n {self.namespace}"
            )
        deleted = []
        for kind in reversed(KINDS):
            for obj in found[kind]:
                name = obj["metadata"]["name"]
                with self.errors(f"{kind}/{name}"):
                    self._delete(kind, name)
                deleted.append(f"{kind}/{name}")
        return deleted

    def _delete(self, kind: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked

        ns, kw = self.namespace, {"_request_timeout": TIMEOUT_S}
        try:
            match kind:
                case "ServiceAccount":
                    self.core.delete_namespaced_service_account(name, ns, **kw)
                case "Role":
                    self.rbac.delete_namespaced_role(name, ns, **kw)
                case "RoleBinding":
                    self.rbac.delete_namespaced_role_binding(name, ns, **kw)
                case "Job":
                    self.batch.delete_namespaced_job(name, ns, propagation_policy="Background", **kw)
                case kind if kind in CUSTOM:
                    r = CUSTOM[kind]
                    self.custom.delete_namespaced_custom_object(
                        r.group, r.version, ns, r.plural, name, propagation_policy="Background", **kw
                    )
        except ApiException as e:
            if e.status != 404:  # already gone is what we wanted
                raise

    # --- errors ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn client failures about `what` into one `UserError` line."""
        from kubernetes.client.exceptions import ApiException  # the client: only once a cluster is asked
        from urllib3.exceptions import HTTPError  # the client's transport, loaded with it

        try:
            yield
        except ApiException as e:
            raise UserError(self._explain(e, what)) from None
        except HTTPError:
            raise UserError(
                f"cannot reach the Kubernetes API at {self.host}: is the cluster up and the kubeconfig context right?"
            ) from None

    def _explain(self, e, what: str) -> str:
        status = _status_body(e)
        message = status.get("message") or e.reason or ""
        details = status.get("details") or {}
        if e.status == 401:
            return "the cluster rejected the credentials of your kubeconfig (401 Unauthorized)"
        if e.status == 403:
            return f"forbidden: {message} (grant the submitter the Role in k8s/rbac.yaml)"
        if e.status == 404 and details.get("kind") == "namespaces":
            return f"namespace {self.namespace!r} does not exist: kubectl create namespace {self.namespace}"
        if e.status == 409:
            return f"{what} already exists in namespace {self.namespace!r}: pick another --run-id or neosft delete it"
        return f"{what}: {message or e.status}"


def _status_body(e) -> dict:
    """The Kubernetes Status of an ApiException ({} when the body is not one, e.g. '404 page not found')."""
    try:
        status = json.loads(e.body or "{}")
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _label_trainjob_pods(trainjobs: list[dict], pods: list[dict]) -> None:
    variants = {job["metadata"]["name"]: (job["metadata"].get("labels") or {}).get(VARIANT_LABEL) for job in trainjobs}
    for pod in pods:
        labels = pod["metadata"]["labels"] = pod["metadata"].get("labels") or {}
        owner = next((labels[key] for key in TRAINJOB_POD_LABELS if key in labels), None)
        if VARIANT_LABEL not in labels and variants.get(owner):
            labels[VARIANT_LABEL] = variants[owner]


def _pauses() -> Iterator[float]:
    pause = RETRY_FIRST_S
    while True:
        yield pause
        pause = min(2 * pause, RETRY_MAX_INTERVAL_S)


def _runtime_unseen(obj: dict, e) -> bool:
    """Whether `e` refuses the TrainJob `obj` because its TrainingRuntime is not found (yet)."""
    if obj["kind"] != TRAINJOB.kind or e.status not in (400, 403, 422, 500):
        return False
    runtime = obj["spec"]["runtimeRef"]["name"]
    message = _status_body(e).get("message") or ""
    return f'{TRAINING_RUNTIME.plural}.{TRAINING_RUNTIME.group} "{runtime}" not found' in message


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _running_container(pod: dict) -> str:
    for status in pod.get("status", {}).get("initContainerStatuses") or []:
        if "running" in (status.get("state") or {}):
            return status["name"]
    return pod["spec"]["containers"][0]["name"]


def _kubeconfig_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)
    return any(os.path.isfile(os.path.expanduser(p)) for p in paths if p)


def _incluster_namespace() -> str | None:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    return open(path).read().strip() if os.path.exists(path) else None


def _typed(items: list[dict], kind: str, api_version: str) -> list[dict]:
    """A list's items with their kind and apiVersion: a real API server leaves both out of each item of a list
    (kubernetes/kubernetes: staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go, List)."""
    return [{**item, "kind": kind, "apiVersion": api_version} for item in items]


def printable(text: str) -> str:
    """`text` as one line safe for a terminal: whitespace runs as one space, every other character that is not
    printable (ESC, BEL, a bidirectional override, ...) as its Python escape: what the cluster says is shown,
    never obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))

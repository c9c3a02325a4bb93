"""`neosft submit|status|logs|delete` against a local server that answers like the Kubernetes API."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import KUBE_TOKEN, assert_user_error, neosft, write_loss_log

from neosft.data.build import build
from neosft.variants import VARIANTS

GOLDEN = Path(__file__).with_name("golden")
SECRET = "aws-secret-that-must-never-be-printed"


def golden_pytorchjob() -> dict:
    """The golden PyTorchJob as `neosft submit` sends it: labelled managed-by neosft (no Helm release holds it)."""
    text = (GOLDEN / "default.yaml").read_text().replace("managed-by: Helm", "managed-by: neosft")
    return next(d for d in yaml.safe_load_all(text) if d["kind"] == "PyTorchJob")


def assert_no_secret(result) -> None:
    for text in (result.stdout, result.stderr):
        assert KUBE_TOKEN not in text and SECRET not in text


def pod(name: str, variant: str, phase="Running", restarts=0, waiting=None, master=True) -> dict:
    labels = {"neosft.io/run-id": "r1", "neosft.io/variant" if variant != "data" else "neosft.io/component": variant}
    if master and variant != "data":
        labels["training.kubeflow.org/replica-type"] = "master"
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": "2026-11-26T12:00:00Z"},
        "spec": {"containers": [{"name": "pytorch" if variant != "data" else "build", "image": "i"}]},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "main", "image": "i", "imageID": "", "ready": True, "restartCount": restarts, "state": state}
            ],
        },
    }


# --- submit ------------------------------------------------------------------------------------


def test_dry_run_prints_validated_yaml_without_a_cluster(monkeypatch):  # its speed: bench/submit.py
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = neosft("submit", "--variant", "all", "--run-id", "golden", "--dry-run")
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    assert [o["kind"] for o in objects] == [
        "Job",
        *["PyTorchJob"] * len(VARIANTS),
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    [single] = [o for o in objects if o["metadata"]["name"] == "neosft-golden-single"]
    golden = golden_pytorchjob()  # a run of single alone; in a run of all, the first variant scores the base model
    golden["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"].remove(
        "--eval-base"
    )
    assert single == golden
    [first] = [o for o in objects if o["metadata"]["name"] == f"neosft-golden-{next(iter(VARIANTS))}"]
    assert (
        "--eval-base" in first["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    )
    assert_no_secret(result)


def test_submit_rules_reach_the_data_job_beside_the_source(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = neosft(
        "submit", "--variant", "single", "--run-id", "r1", "--rules", "reilx", "--source", "sample", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    [job] = [o for o in yaml.safe_load_all(result.stdout) if o["kind"] == "Job"]
    [build] = job["spec"]["template"]["spec"]["initContainers"]
    assert build["args"][2] == "sample" and build["args"][-2:] == ["--rules", "reilx"]


def test_submit_creates_the_run_and_sends_exactly_the_rendered_pytorchjob(kube, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    result = neosft("submit", "--variant", "single", "--run-id", "golden")
    assert result.returncode == 0, result.stderr
    posts = kube.sent("POST")
    assert [p.path for p in posts] == [
        "/api/v1/namespaces/ml/serviceaccounts",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings",
        "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs",  # held, before the data Job
        "/apis/batch/v1/namespaces/ml/jobs",
    ]
    assert posts[3].body == golden_pytorchjob()
    assert posts[4].body["metadata"]["labels"]["neosft.io/run-id"] == "golden"
    assert "run golden submitted to namespace ml" in result.stdout
    assert "single        -> s3://neosft/neosft/runs/golden/single" in result.stdout
    assert_no_secret(result)
    assert all(KUBE_TOKEN not in json.dumps(r.body) for r in kube.requests)


def test_submit_flags_choose_what_runs(kube):
    result = neosft(
        "submit", "--variant", "multi", "--data", "s3://bkt/data/r0", "--namespace", "default", "--set", "train.nodes=2"
    )
    assert result.returncode == 0, result.stderr
    [job] = [p.body for p in kube.sent("POST") if p.body["kind"] == "PyTorchJob"]
    assert kube.sent("POST")[0].path.startswith("/api/v1/namespaces/default/")
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert not [p for p in kube.sent("POST") if p.body["kind"] in ("Job", "Role")]
    assert "suspend" not in job["spec"]["runPolicy"]  # its dataset exists: nothing to wait for
    assert (
        "--data=s3://bkt/data/r0"
        in job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    )
    run_id = job["metadata"]["labels"]["neosft.io/run-id"]
    assert job["metadata"]["annotations"]["neosft.io/output"] == f"s3://neosft/neosft/runs/{run_id}/multi"

    kube.requests.clear()
    result = neosft("submit", "--data-only")
    assert result.returncode == 0, result.stderr
    assert [p.body["kind"] for p in kube.sent("POST")] == ["ServiceAccount", "Job"]
    assert not kube.sent("GET")  # no PyTorchJob: no need for the CRD


@pytest.mark.parametrize(
    "args, message",
    [
        (("--data-only", "--data", "s3://bkt/d"), "--data-only and --data exclude each other"),
        (("--source", "sample", "--data", "s3://bkt/d"), "--source and --data exclude each other"),
        (("--rules", "reilx", "--data", "s3://bkt/d"), "--rules and --data exclude each other"),
        (("--set", "data.rules=card"), "at '/data/rules'"),
        (("--data", "s3://bkt/d\nhostPID: true"), "at '/data/uri'"),
        (("--source", "corpus.json"), "at '/data/source'"),
        (("--wait", "--timeout", "soon"), "--timeout 'soon': give seconds or a duration"),
        (("--run-id", "Bad_Id"), "run id 'Bad_Id'"),
        (("--set", "train.nodez=2"), "chart values: at '/train': additional properties 'nodez' not allowed"),
        (("--values", "/nonexistent.yaml"), "cannot read values file /nonexistent.yaml"),
    ],
)
def test_submit_mistakes_get_one_line(kube, args, message):
    assert_user_error(neosft("submit", "--dry-run", *args), message)
    assert not kube.requests


def test_forbidden_is_reported_and_nothing_is_left_behind(kube):
    kube.fail[("POST", "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs")] = (
        403,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'pytorchjobs.kubeflow.org is forbidden: User "ci" cannot create resource "pytorchjobs"',
        },
    )
    result = neosft("submit", "--run-id", "r1")
    assert_user_error(result, 'forbidden: pytorchjobs.kubeflow.org is forbidden: User "ci" cannot create')
    assert "k8s/rbac.yaml" in result.stderr and "nothing was left behind" in result.stderr
    assert [r.path for r in kube.sent("DELETE")] == [
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings/neosft-r1-release",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/roles/neosft-r1-release",
        "/api/v1/namespaces/ml/serviceaccounts/neosft-r1",
    ]
    assert not any(kube.objects.values())
    assert_no_secret(result)


def test_existing_run_is_a_conflict(kube):
    assert neosft("submit", "--run-id", "r1").returncode == 0
    assert_user_error(neosft("submit", "--run-id", "r1"), "ServiceAccount/neosft-r1 already exists in namespace 'ml'")


V1, V2 = "kubeflow.org/v1", "trainer.kubeflow.org/v1alpha1"


@pytest.mark.parametrize("served, chosen", [({V1}, "PyTorchJob"), ({V2}, "TrainJob"), ({V1, V2}, "TrainJob")])
def test_auto_backend_asks_the_cluster_which_crds_it_serves(kube, served, chosen):
    kube.served = served
    result = neosft("submit", "--run-id", "r1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"backend: {chosen} (the cluster serves ")
    assert [p.body["kind"] for p in kube.sent("POST") if p.body["kind"] in ("PyTorchJob", "TrainJob")] == [chosen]
    assert {r.path for r in kube.sent("GET")} >= {"/apis/kubeflow.org/v1", "/apis/trainer.kubeflow.org/v1alpha1"}


def test_neither_crd_served_names_both_install_commands(kube):
    kube.served = set()
    result = neosft("submit", "--run-id", "r1")
    assert_user_error(
        result,
        "neither the TrainJob nor the PyTorchJob CRD is installed",
        "kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0",
        "training-operator.git/manifests/overlays/standalone?ref=v1.9.0",
    )
    assert not kube.sent("POST")
    assert_user_error(neosft("status", "r1"), "neither the TrainJob nor the PyTorchJob CRD is installed")


@pytest.mark.parametrize(
    "served, backend, missing",
    [
        ({V2}, "pytorchjob", "the PyTorchJob CRD is not installed"),
        ({V1}, "trainjob", "the TrainJob CRD is not installed"),
    ],
)
def test_a_chosen_backend_the_cluster_lacks_says_how_to_install_it(kube, served, backend, missing):
    kube.served = served
    result = neosft("submit", "--run-id", "r1", "--backend", backend)
    assert_user_error(result, missing, "v1.9.0" if backend == "pytorchjob" else "v2.3.0")
    assert not kube.sent("POST")
    kube.requests.clear()
    assert_user_error(neosft("submit", "--run-id", "r1", "--set", f"train.backend={backend}"), missing)


def test_dry_run_renders_pytorchjobs_unless_told(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    for args, kind in [
        ((), "PyTorchJob"),
        (("--backend", "auto"), "PyTorchJob"),
        (("--backend", "trainjob"), "TrainJob"),
        (("--set", "train.backend=trainjob"), "TrainJob"),
    ]:
        result = neosft("submit", "--run-id", "r1", "--dry-run", *args)
        assert result.returncode == 0, result.stderr
        training = {o["kind"] for o in yaml.safe_load_all(result.stdout)} & {"PyTorchJob", "TrainJob"}
        assert training == {kind}


def test_submit_reilx_is_reilx_run_and_refuses_what_contradicts_it(monkeypatch):
    """--reilx: REILX's scripts, every record, LoRA r 16 / alpha 32 / dropout 0 on every projection, the card's
    hyper-parameters; a value of the user's that says otherwise is refused, not overridden."""
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = neosft(
        "submit", "--variant", "single", "--run-id", "r1", "--reilx", "--backend", "pytorchjob", "--dry-run"
    )
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    [job] = [o for o in objects if o["kind"] == "Job"]
    [build] = job["spec"]["template"]["spec"]["initContainers"]
    assert build["args"][-3:] == ["--rules", "reilx", "--holdout=0"]
    [train] = [o for o in objects if o["kind"] == "PyTorchJob"]
    command = train["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--method=lora") :][:5] == [
        "--method=lora",
        "--lora-rank=16",
        "--lora-alpha=32",
        "--lora-dropout=0",
        "--lora-target=all",
    ]
    assert "--set" not in command  # the table's hyper-parameters, untouched
    for args, message in [
        (("--method", "full"), "drop train.method=full"),
        (("--set", "data.holdout=1%"), "drop data.holdout=1%"),
        (("--set", "train.lora.rank=8"), "drop train.lora.rank=8"),
        (("--set", "train.variantSet.single.learning_rate=1e-4"), "drop train.variantSet.single.learning_rate"),
        (("--data", "s3://b/d"), "--reilx and --data exclude each other"),
    ]:
        assert_user_error(neosft("submit", "--run-id", "r1", "--reilx", "--dry-run", *args), message)


def test_submit_method_sets_the_training_method(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    for args, expected in [
        ((), "--method=lora"),
        (("--method", "full"), "--method=full"),
        (("--method", "full", "--data-only"), None),
    ]:
        result = neosft("submit", "--run-id", "r1", "--dry-run", *args)
        assert result.returncode == 0, result.stderr
        jobs = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "PyTorchJob"]
        commands = [
            job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"] for job in jobs
        ]
        assert [expected in c for c in commands] == ([True] if expected else [])


def test_trainjob_dry_run_renders_the_runtime_and_four_trainjobs(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")
    result = neosft("submit", "--backend", "trainjob", "--variant", "all", "--run-id", "r1", "--dry-run")
    assert result.returncode == 0, result.stderr  # its speed: bench/submit.py
    objects = list(yaml.safe_load_all(result.stdout))
    assert [o["kind"] for o in objects] == [
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "TrainingRuntime",
        *["TrainJob"] * len(VARIANTS),
    ]
    from neosft.k8s.validate import validate

    validate(objects)  # strictly, against the Trainer v2.3.0 CRDs (the command did too)
    [runtime] = [o for o in objects if o["kind"] == "TrainingRuntime"]
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    for job in objects[-len(VARIANTS) :]:
        assert job["spec"]["trainer"]["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
        assert job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"] and job["spec"]["suspend"] is True
    assert "AWS_SECRET_ACCESS_KEY\n    value" not in result.stdout and "kind: Secret" not in result.stdout
    assert_no_secret(result)


def test_missing_namespace(kube):
    assert_user_error(neosft("submit", "-n", "nope"), "namespace 'nope' does not exist: kubectl create namespace nope")


def test_unauthorized(kube):
    kube.fail[("GET", "/apis/kubeflow.org/v1")] = (401, {"kind": "Status", "code": 401, "message": "Unauthorized"})
    result = neosft("submit")
    assert_user_error(result, "rejected the credentials of your kubeconfig (401 Unauthorized)")
    assert_no_secret(result)


def test_no_kubeconfig_and_unreachable_cluster(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert_user_error(neosft("status"), "no Kubernetes configuration: set KUBECONFIG or create ~/.kube/config")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": KUBE_TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    (tmp_path / "missing").write_text(json.dumps(config))
    result = neosft("status")
    assert_user_error(result, "cannot reach the Kubernetes API at http://127.0.0.1:9")
    assert_no_secret(result)


def test_submit_wait_reports_the_outcome(kube):
    kube.on_create = {
        "Job": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
        "PyTorchJob": {"conditions": [{"type": "Succeeded", "status": "True"}]},
    }
    result = neosft("submit", "--run-id", "r1", "--wait")
    assert result.returncode == 0, result.stderr
    assert "PyTorchJob/neosft-r1-single: Succeeded" in result.stdout and "run r1 succeeded" in result.stdout
    kube.on_create["PyTorchJob"] = {
        "conditions": [{"type": "Running", "status": "False"}, {"type": "Failed", "status": "True"}]
    }
    assert_user_error(neosft("submit", "--run-id", "r2", "--wait"), "run r2 failed: PyTorchJob/neosft-r2-single")


def test_a_failed_data_job_ends_the_wait_at_once_and_holds_no_gpu(kube):
    kube.on_create = {"Job": {"conditions": [{"type": "Failed", "status": "True"}], "failed": 4}}
    result = neosft("submit", "--run-id", "r1", "--wait")
    assert_user_error(result, "run r1 failed: Job/neosft-r1-data did not build the dataset", "holds no GPU")
    polls = [r for r in kube.sent("GET") if r.path == "/apis/batch/v1/namespaces/ml/jobs"]
    assert len(polls) == 1  # the first poll that saw the failure ended the wait
    [job] = kube.objects["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"].values()
    assert job["spec"]["runPolicy"]["suspend"] is True  # never released: no pod, no GPU
    status = neosft("status", "r1")
    assert "Suspended (data Job failed: no GPU held)" in status.stdout


def test_wait_gives_up_after_its_timeout_and_says_what_it_waited_for(kube):
    result = neosft("submit", "--run-id", "r1", "--wait", "--timeout", "0")
    assert "waiting up to 0s for the run's Jobs and training objects to finish" in result.stdout
    assert_user_error(
        result,
        "run r1 did not finish within 0s: still waiting for Job/neosft-r1-data (Pending), "
        "PyTorchJob/neosft-r1-single (Suspended)",
    )


# --- status, logs, delete ------------------------------------------------------------------------


def test_status_shows_pods_restarts_and_the_latest_loss_from_s3(kube, s3, s3_server, monkeypatch):
    bucket = s3[5:]
    assert neosft("submit", "--variant", "all", "--run-id", "r1", "--set", f"s3.bucket={bucket}").returncode == 0
    kube.add("ml", "pods", pod("neosft-r1-single-master-0", "single", restarts=2))
    kube.add(
        "ml", "pods", pod("neosft-r1-multi-master-0", "multi", phase="Pending", waiting="CreateContainerConfigError")
    )
    write_loss_log(f"{s3}/neosft/runs/r1/single", [2.5, 1.23456], total_steps=40)
    result = neosft("status", "r1")
    assert result.returncode == 0, result.stderr
    header, *lines = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()]
    assert header == ["KIND", "NAME", "VARIANT", "STATE", "PODS", "RESTARTS", "LATEST LOSS"]
    rows = {row[1]: row for row in lines}
    assert rows["neosft-r1-single"] == [
        "PyTorchJob",
        "neosft-r1-single",
        "single",
        "Suspended (waiting for its dataset)",
        "1 Running",
        "2",
        "1.2346 @ step 2/40",
    ]
    assert rows["neosft-r1-multi"][4:] == ["1 Pending (CreateContainerConfigError)", "0", "-"]
    assert rows["neosft-r1-data"] == ["Job", "neosft-r1-data", "data", "Pending", "-", "0", "-"]
    assert s3_server.secret_key not in result.stdout + result.stderr

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # a wrong key: the loss cannot be read
    refused = neosft("status", "r1")
    assert refused.returncode == 0
    assert "latest loss unavailable: S3 refused access" in refused.stderr
    assert_no_secret(refused)

    listing = neosft("status")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[1].split()[:6] == [
        "r1",
        "data,conversations,multi,single,all_pair",
        "1",
        "Pending,",
        "4",
        "Suspended",
    ]


def test_the_pods_and_the_cli_talk_to_the_one_store_the_values_name(kube, s3, s3_server, tmp_path, monkeypatch):
    """NEOSFT_S3_ENDPOINT here names one S3 server, `--set s3.endpoint` another: the pods, the kept manifests
    and the loss column all use the one the values name; without the value, the environment's goes into them."""
    from neosft.local_s3 import LocalS3
    from neosft.storage import location

    bucket = s3[5:]  # on the environment's server
    with LocalS3(tmp_path / "other", access_key=s3_server.access_key, secret_key=s3_server.secret_key) as other:
        (tmp_path / "other" / bucket).mkdir(parents=True)
        result = neosft(
            "submit",
            "--variant",
            "single",
            "--run-id",
            "r1",
            "--set",
            f"s3.bucket={bucket}",
            "--set",
            f"s3.endpoint={other.endpoint}",
        )
        assert result.returncode == 0, result.stderr
        [job] = [p.body for p in kube.sent("POST") if p.body["kind"] == "PyTorchJob"]
        [container] = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
        assert {e["name"]: e.get("value") for e in container["env"]}["NEOSFT_S3_ENDPOINT"] == other.endpoint
        assert (tmp_path / "other" / bucket / "neosft" / "runs" / "r1" / "manifests.yaml").exists()
        assert not location(f"{s3}/neosft/runs/r1/manifests.yaml").exists()  # nothing on the environment's server
        monkeypatch.setenv("NEOSFT_S3_ENDPOINT", other.endpoint)  # the trainer's upload, as the pod makes it
        write_loss_log(f"{s3}/neosft/runs/r1/single", [2.5, 1.5], 40)
        monkeypatch.setenv("NEOSFT_S3_ENDPOINT", s3_server.endpoint)
        status = neosft("status", "r1")
        assert status.returncode == 0 and "1.5000 @ step 2/40" in status.stdout, status.stdout + status.stderr

    kube.requests.clear()
    assert neosft("submit", "--variant", "single", "--run-id", "r2", "--set", f"s3.bucket={bucket}").returncode == 0
    [job] = [p.body for p in kube.sent("POST") if p.body["kind"] == "PyTorchJob"]
    [container] = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert {e["name"]: e.get("value") for e in container["env"]}["NEOSFT_S3_ENDPOINT"] == s3_server.endpoint
    assert location(f"{s3}/neosft/runs/r2/manifests.yaml").exists()


def test_status_of_an_unknown_run(kube):
    assert_user_error(neosft("status", "nope"), "no run nope in namespace 'ml'")
    assert neosft("status").stdout == "no neosft runs in namespace ml\n"


def test_logs(kube):
    kube.add("ml", "pods", pod("neosft-r1-single-master-0", "single"))
    kube.add("ml", "pods", pod("neosft-r1-data-abcde", "data"))
    kube.logs = {"neosft-r1-single-master-0": "step 1 loss 2.0\nstep 2 loss 1.9\n", "neosft-r1-data-abcde": "built\n"}
    result = neosft("logs", "r1", "--variant", "single", "--follow")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "step 1 loss 2.0\nstep 2 loss 1.9\n"
    [request] = [r for r in kube.requests if r.path.endswith("/log")]
    assert request.query == {"container": ["pytorch"], "follow": ["true"]}
    both = neosft("logs", "r1")
    assert "==> neosft-r1-data-abcde <==\nbuilt\n" in both.stdout and "==> neosft-r1-single-master-0 <==" in both.stdout
    assert_user_error(neosft("logs", "r1", "-f"), "--follow streams one pod: pick it with --variant data|")
    assert_user_error(neosft("logs", "r1", "--variant", "multi"), "run r1 has no multi pods in namespace 'ml' yet")


def test_delete_removes_every_object_of_the_run(kube):
    assert neosft("submit", "--variant", "all", "--run-id", "r1").returncode == 0
    assert neosft("submit", "--run-id", "r2").returncode == 0
    kube.requests.clear()
    result = neosft("delete", "r1")
    assert result.returncode == 0, result.stderr
    deleted = [r.path.rsplit("/", 2)[-2:] for r in kube.sent("DELETE")]
    assert deleted == [["jobs", "neosft-r1-data"]] + [
        ["pytorchjobs", f"neosft-r1-{v.replace('_', '-')}"] for v in VARIANTS
    ] + [["rolebindings", "neosft-r1-release"], ["roles", "neosft-r1-release"], ["serviceaccounts", "neosft-r1"]]
    assert all(r.body is None or r.body.get("propagationPolicy") in (None, "Background") for r in kube.sent("DELETE"))
    assert result.stdout.count("deleted ") == len(VARIANTS) + 4
    assert_user_error(neosft("delete", "r1"), "no run r1 in namespace 'ml'")
    assert len(kube.objects["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"]) == 1  # r2 stays


def test_delete_leaves_a_helm_release_to_helm(kube):
    from neosft.k8s.render import render

    for obj in render({}, "rel1", "ml"):  # what `helm install rel1` creates: labelled managed-by Helm
        if obj["kind"] == "PyTorchJob":
            kube.add("ml", "pytorchjobs", obj)
    assert_user_error(neosft("delete", "rel1"), "run rel1 was installed by Helm: helm uninstall rel1 -n ml")
    assert not kube.sent("DELETE")


def test_delete_removes_what_helm_uninstall_leaves_of_a_trainjob_run(kube):
    from neosft.k8s.render import render

    kube.served = {V2}
    for obj in render({"train": {"backend": "trainjob"}}, "rel1", "ml"):
        if obj["kind"] in ("TrainingRuntime", "TrainJob"):
            kube.add("ml", obj["kind"].lower() + "s", obj)
    assert_user_error(neosft("delete", "rel1"), "run rel1 was installed by Helm: helm uninstall rel1 -n ml")
    kube.objects["/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"].clear()  # helm uninstall
    result = neosft("delete", "rel1")
    assert result.stdout == "deleted TrainingRuntime/neosft-rel1\n", result.stderr  # the hook Helm leaves


# --- commands the pods run -------------------------------------------------------------------------


def test_data_wait_and_check_storage(tmp_path, s3):
    folder = tmp_path / "data"
    result = neosft("data", "wait", folder, "--timeout", "0.2", "--interval", "0.1")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"waiting for {folder}/manifest.json",
        f"error: {folder}/manifest.json did not appear within 0.2s",
    ]
    build("sample", str(folder), ["single"])  # manifests from the real writer
    assert neosft("data", "wait", folder, "--variant", "single").returncode == 0
    assert_user_error(neosft("data", "wait", folder, "--variant", "multi"), "holds no multi dataset")
    stale = neosft("data", "wait", folder, "--build-id", "r2", "--timeout", "0.2", "--interval", "0.1")
    assert stale.returncode == 2  # an older build's manifest is not this run's data
    build("sample", str(folder), ["single"], build_id="r2")
    assert neosft("data", "wait", folder, "--build-id", "r2").returncode == 0
    checked = neosft("check-storage", s3)
    assert checked.stdout == f"{s3} is reachable\n", checked.stderr
    assert_user_error(neosft("check-storage", "s3://no-such-bucket-here"), "does not exist")


@pytest.mark.parametrize(
    "kind, status, expected",
    [
        ("PyTorchJob", {}, "Pending"),
        (
            "PyTorchJob",
            {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "True"}]},
            "Running",
        ),
        (
            "PyTorchJob",
            {"conditions": [{"type": "Running", "status": "False"}, {"type": "Restarting", "status": "True"}]},
            "Restarting",
        ),
        (
            "PyTorchJob",
            {"conditions": [{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}]},
            "Succeeded",
        ),
        ("Job", {"active": 1}, "Running"),
        ("Job", {"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded"),
        ("Job", {"conditions": [{"type": "Failed", "status": "True"}]}, "Failed"),
    ],
)
def test_state_of_jobs_and_pytorchjobs(kind, status, expected):
    from neosft.backends.state import state

    assert state({"kind": kind, "status": status}) == expected


def test_logs_of_the_data_pod_while_it_builds(kube):
    building = pod("neosft-r1-data-abcde", "data", phase="Pending")
    building["status"]["initContainerStatuses"] = [
        {"name": "build", "image": "i", "imageID": "", "ready": False, "restartCount": 0, "state": {"running": {}}}
    ]
    kube.add("ml", "pods", building)
    kube.logs = {"neosft-r1-data-abcde": "reading hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json\n"}
    result = neosft("logs", "r1", "--variant", "data")
    assert result.stdout == "reading hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json\n"
    [request] = [r for r in kube.requests if r.path.endswith("/log")]
    assert request.query["container"] == ["build"]


def test_submit_prints_the_plan_of_what_it_trains_on_existing_data(kube, s3):
    from neosft.sample import SAMPLE_CORPUS

    bucket = s3[5:]
    build(str(SAMPLE_CORPUS), f"{s3}/neosft/data/p0", ["single", "multi"])
    result = neosft("submit", "--variant", "single", "--data", f"{s3}/neosft/data/p0", "--run-id", "p1")
    assert result.returncode == 0, result.stderr
    header, single = result.stdout.splitlines()[1:3]  # after the backend it chose
    assert header.split()[:4] == ["variant", "lr", "cutoff", "rows"] and single.split()[:3] == [
        "single",
        "5e-05",
        "4096",
    ]
    missing = neosft("submit", "--variant", "all_pair", "--data", f"{s3}/neosft/data/p0", "--run-id", "p2")
    assert (
        missing.returncode == 0
        and "warning: no plan: " in missing.stderr
        and "has no 'all_pair' dataset" in missing.stderr
    )
    built_first = neosft("submit", "--variant", "single", "--set", f"s3.bucket={bucket}", "--run-id", "p3")
    assert f"plan: `neosft plan --data s3://{bucket}/neosft/data/p3` once the data Job" in built_first.stdout


# --- the data Job releases its run's training objects ---------------------------------------------


def run_container(container: dict, env: dict) -> subprocess.CompletedProcess:
    """Run a rendered container's `neosft` args here, as its image's entrypoint would."""
    return neosft(*container["args"], env=env)


def test_the_rendered_data_job_builds_then_releases_training(kube, s3, tmp_path):
    """The data Job's containers as rendered, run in order: the build, then the release of held training."""
    from neosft.storage import location

    bucket = s3[5:]
    result = neosft(
        "submit", "--variant", "all", "--run-id", "r1", "--source", "sample", "--set", f"s3.bucket={bucket}"
    )
    assert result.returncode == 0, result.stderr
    kept = list(yaml.safe_load_all(location(f"{s3}/neosft/runs/r1/manifests.yaml").read_bytes()))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(kept, key=key) == sorted(
        (p.body for p in kube.sent("POST")), key=key
    )  # the run folder: what was created
    held = kube.objects["/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"]
    assert all(job["spec"]["runPolicy"]["suspend"] for job in held.values())
    [data] = kube.objects["/apis/batch/v1/namespaces/ml/jobs"].values()
    spec = data["spec"]["template"]["spec"]
    [build], [release] = spec["initContainers"], spec["containers"]
    assert run_container(build, {}).returncode == 0
    assert location(f"{s3}/neosft/data/r1/manifest.json").exists()
    released = run_container(release, {})
    assert released.returncode == 0, released.stderr
    assert released.stdout.count("released PyTorchJob/") == len(VARIANTS)
    assert all(job["spec"]["runPolicy"]["suspend"] is False for job in held.values())
    patches = kube.sent("PATCH")
    assert {p.content_type for p in patches} == {"application/merge-patch+json"}
    assert {p.path.rsplit("/", 1)[1] for p in patches} == set(held)


def test_release_hands_queued_training_to_kueue_and_fails_clearly(kube):
    assert neosft("submit", "--run-id", "r1", "--queue", "gpu").returncode == 0
    result = neosft("release", "neosft-r1-single")
    assert result.stdout == "released PyTorchJob/neosft-r1-single (handed to Kueue queue gpu)\n", result.stderr
    job = kube.get("ml", "pytorchjobs", "neosft-r1-single")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert "kueue.x-k8s.io/admission-gated-by" not in job["metadata"]["annotations"]  # the gate is lifted
    assert job["spec"]["runPolicy"]["suspend"] is True  # Kueue unsuspends it on admission, not neosft
    assert_user_error(
        neosft("release", "neosft-r9-single", "--timeout", "0.5"), 'pytorchjobs "neosft-r9-single" not found'
    )


def test_release_retries_an_api_that_fails_for_a_while(kube):
    assert neosft("submit", "--run-id", "r1").returncode == 0
    path = "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/neosft-r1-single"
    kube.flaky = {("GET", path): 2, ("PATCH", path): 2}
    result = neosft("release", "neosft-r1-single")
    assert result.stdout == "released PyTorchJob/neosft-r1-single\n", result.stderr
    assert kube.get("ml", "pytorchjobs", "neosft-r1-single")["spec"]["runPolicy"]["suspend"] is False
    assert [r.method for r in kube.requests if r.path == path] == ["GET"] * 3 + ["PATCH"] * 3


def test_a_malformed_kubeconfig_and_credentials_in_the_server_url(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "config"))
    (tmp_path / "config").write_text("clusters: [\n  - {name: c\n")
    result = neosft("status")
    assert_user_error(result, "unusable kubeconfig")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://admin:{SECRET}@127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": KUBE_TOKEN}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    (tmp_path / "config").write_text(json.dumps(config))
    result = neosft("status")
    assert_user_error(result, "cannot reach the Kubernetes API at http://127.0.0.1:9")
    assert_no_secret(result)


# --- TrainJob runs (Kubeflow Trainer v2) -------------------------------------------------------------


def jobset_pod(kube, trainjob: str, index: int, restarts=0) -> dict:
    """A pod of a TrainJob's JobSet as the Trainer and JobSet controllers make it: the pod template of the
    TrainJob's runtime, plus the labels JobSet and the Job controller add."""
    job = kube.get("ml", "trainjobs", trainjob)
    runtime = kube.get("ml", "trainingruntimes", job["spec"]["runtimeRef"]["name"])
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    template = node["template"]["spec"]["template"]
    spec = json.loads(json.dumps(template["spec"]))
    for container in spec["containers"]:  # the API server answers quantities as strings
        for part in container["resources"].values():
            part.update({k: str(v) for k, v in part.items()})
    labels = {
        **template["metadata"]["labels"],
        "jobset.sigs.k8s.io/jobset-name": trainjob,
        "jobset.sigs.k8s.io/replicatedjob-name": "node",
        "jobset.sigs.k8s.io/job-index": "0",
    }
    # the Job controller's completion index: an annotation on every supported Kubernetes (the label only from 1.28)
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{trainjob}-node-0-{index}-x7k2p",
            "labels": labels,
            "annotations": annotations,
            "creationTimestamp": f"2026-11-26T12:0{index}:00Z",
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "node",
                    "image": "i",
                    "imageID": "",
                    "ready": True,
                    "restartCount": restarts,
                    "state": {"running": {}},
                }
            ],
        },
    }


def test_trainjob_run_is_created_followed_and_deleted(kube):
    kube.served = {V2}
    result = neosft("submit", "--variant", "all", "--run-id", "r1")
    assert result.returncode == 0, result.stderr
    posts = kube.sent("POST")
    assert [p.path.rsplit("/", 1)[1] for p in posts] == [
        "serviceaccounts",
        "roles",
        "rolebindings",
        "trainingruntimes",
        *["trainjobs"] * len(VARIANTS),
        "jobs",
    ]
    dry = neosft(
        "submit",
        "--variant",
        "all",
        "--run-id",
        "r1",
        "--backend",
        "trainjob",
        "--dry-run",
        "-n",
        "ml",
        env={"KUBECONFIG": "/nonexistent"},
    )
    rendered = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(dry.stdout)}
    assert all(p.body == rendered[(p.body["kind"], p.body["metadata"]["name"])] for p in posts)  # exactly as rendered

    # the data Job's release step, then the controllers: single runs on two nodes, multi is complete
    assert neosft("release", "--kind", "TrainJob", "neosft-r1-single", "neosft-r1-multi").returncode == 0
    assert kube.get("ml", "trainjobs", "neosft-r1-single")["spec"]["suspend"] is False
    kube.get("ml", "trainjobs", "neosft-r1-single")["status"] = {
        "jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0, "suspended": 0}]
    }
    kube.get("ml", "trainjobs", "neosft-r1-multi")["status"] = {
        "conditions": [
            {
                "type": "Complete",
                "status": "True",
                "reason": "AllJobsCompleted",
                "message": "jobset completed",
                "lastTransitionTime": "2026-11-26T13:00:00Z",
            }
        ]
    }
    kube.add("ml", "pods", jobset_pod(kube, "neosft-r1-single", 1, restarts=1))
    kube.add("ml", "pods", jobset_pod(kube, "neosft-r1-single", 0))
    status = neosft("status", "r1")
    assert status.returncode == 0, status.stderr
    rows = {row[1]: row for row in (re.split(r"\s{2,}", line) for line in status.stdout.splitlines()[1:])}
    assert rows["neosft-r1-single"][:6] == ["TrainJob", "neosft-r1-single", "single", "Running", "2 Running", "1"]
    assert rows["neosft-r1-multi"][3:5] == ["Succeeded", "-"]
    assert rows["neosft-r1-conversations"][3] == "Suspended (waiting for its dataset)"
    assert rows["neosft-r1-data"][:4] == ["Job", "neosft-r1-data", "data", "Pending"]

    kube.logs = {
        "neosft-r1-single-node-0-0-x7k2p": "rank 0: step 1 loss 2.0\n",
        "neosft-r1-single-node-0-1-x7k2p": "rank 1\n",
    }
    followed = neosft("logs", "r1", "--variant", "single", "-f")
    assert followed.stdout == "rank 0: step 1 loss 2.0\n", followed.stderr
    [request] = [r for r in kube.requests if r.path.endswith("/log")]
    assert request.path.endswith("/pods/neosft-r1-single-node-0-0-x7k2p/log") and request.query["container"] == ["node"]
    both = neosft("logs", "r1", "--variant", "single").stdout
    assert both.index("==> neosft-r1-single-node-0-0-x7k2p <==") < both.index("==> neosft-r1-single-node-0-1-x7k2p <==")

    kube.served = {V1, V2}  # a namespace with runs of both kinds lists them all
    assert neosft("submit", "--run-id", "r0", "--backend", "pytorchjob").returncode == 0
    listing = [line.split()[:2] for line in neosft("status").stdout.splitlines()[1:]]
    assert listing == [["r0", "data,single"], ["r1", "data,conversations,multi,single,all_pair"]]
    assert neosft("delete", "r0").returncode == 0

    kube.requests.clear()
    deleted = neosft("delete", "r1")
    assert deleted.returncode == 0, deleted.stderr
    assert [r.path.rsplit("/", 2)[-2] for r in kube.sent("DELETE")] == [
        "jobs",
        *["trainjobs"] * len(VARIANTS),
        "trainingruntimes",
        "rolebindings",
        "roles",
        "serviceaccounts",
    ]
    assert not any(v for path, v in kube.objects.items() if "pods" not in path)


def test_the_rendered_release_step_hands_trainjobs_to_kueue(kube):
    from kube_api import Kueue

    kube.served, kube.kueue = {V1, V2}, Kueue()
    kube.add("ml", "localqueues", {"metadata": {"name": "gpu"}})
    assert neosft("submit", "--variant", "all", "--run-id", "r1", "--queue", "gpu").returncode == 0
    [data] = kube.objects["/apis/batch/v1/namespaces/ml/jobs"].values()
    assert data["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    jobs = kube.objects["/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"]
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu" for j in jobs.values())
    assert kube.run_kueue() == ["Job/neosft-r1-data"]  # the gate holds the training objects: not before their data
    assert "Suspended (waiting for its dataset)" in neosft("status", "r1").stdout
    [release] = data["spec"]["template"]["spec"]["containers"]
    released = run_container(release, {})
    assert released.returncode == 0, released.stderr
    assert released.stdout.count("(handed to Kueue queue gpu)") == len(VARIANTS)
    assert all(j["spec"]["suspend"] is True for j in jobs.values())  # Kueue admits and unsuspends them, not neosft
    kube.get("ml", "jobs", "neosft-r1-data")["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert "Suspended (queued in Kueue queue gpu)" in neosft("status", "r1").stdout  # a Workload stands for each
    assert sorted(kube.run_kueue()) == sorted(f"TrainJob/{name}" for name in jobs)

    kube.requests.clear()
    assert neosft("submit", "--run-id", "r2", "--queue", "gpu", "--data", "s3://bkt/data/r0").returncode == 0
    [job] = [p.body for p in kube.sent("POST") if p.body["kind"] == "TrainJob"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu" and "suspend" not in job["spec"]
    assert "kueue.x-k8s.io/admission-gated-by" not in job["metadata"].get("annotations", {})  # nothing to wait for


def test_a_default_local_queue_admits_no_training_before_its_data(kube):
    """Kueue writes queue `default` onto unlabelled jobs; the admission gate still holds training for its data."""
    from kube_api import Kueue

    kube.served, kube.kueue = {V1, V2}, Kueue()
    kube.add("ml", "localqueues", {"metadata": {"name": "default"}})
    result = neosft("submit", "--variant", "all", "--run-id", "r1")
    assert result.returncode == 0, result.stderr
    assert "LocalQueue 'default'" in result.stderr and "older Kueue admits them at once" in result.stderr
    jobs = kube.objects["/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"]
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "default" for j in jobs.values())
    assert kube.run_kueue() == ["Job/neosft-r1-data"] and all(j["spec"]["suspend"] for j in jobs.values())
    # release cannot move the label of an unsuspended job, and need not: it lifts the gate only
    [release] = kube.get("ml", "jobs", "neosft-r1-data")["spec"]["template"]["spec"]["containers"]
    released = run_container(release, {})
    assert released.returncode == 0, released.stderr
    assert released.stdout.count("(handed to Kueue queue default)") == len(VARIANTS)
    assert sorted(kube.run_kueue()) == sorted(f"TrainJob/{name}" for name in jobs)

    kube.kueue = Kueue(gate=False)  # Kueue before 0.19 (or 0.17-0.18 without AdmissionGatedBy): what the warning says
    assert neosft("submit", "--run-id", "r2").returncode == 0
    assert "TrainJob/neosft-r2-single" in kube.run_kueue()


def test_queued_pytorchjobs_need_kueues_pytorchjob_integration(kube):
    from kube_api import Kueue

    kube.kueue = Kueue()  # Kueue 0.19's shipped configuration: kubeflow.org/pytorchjob off
    kube.add("ml", "localqueues", {"metadata": {"name": "gpu"}})
    for data in ([], ["--data", "s3://bkt/data/r0"]):  # (the plan of existing data warns first: no S3 here)
        result = neosft("submit", "--run-id", "r1", "--queue", "gpu", "--backend", "pytorchjob", *data)
        assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith(
            "error: Kueue does not manage PyTorchJobs here: kubeflow.org/pytorchjob is not in integrations.frameworks "
            "of kueue-system/kueue-manager-config"
        ), result.stderr
    assert not kube.sent("POST")  # refused before anything is created, so no GPU is held
    kube.kueue.frameworks.append("kubeflow.org/pytorchjob")
    assert neosft("submit", "--run-id", "r1", "--queue", "gpu", "--backend", "pytorchjob").returncode == 0
    kube.kueue = None  # Kueue's configuration not readable here: a warning, and status tells what happened
    kube.get("ml", "jobs", "neosft-r1-data")["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert "no Kueue Workload stands for it" in neosft("status", "r1").stdout
    result = neosft("submit", "--run-id", "r2", "--queue", "gpu", "--backend", "pytorchjob")
    assert result.returncode == 0 and "cannot read Kueue's configuration" in result.stderr


def test_a_trainjob_refused_while_its_runtime_is_unseen_is_created_without_a_rollback(kube):
    kube.served, kube.runtime_lag = {V2}, 3  # Trainer's webhook refuses the first 3 TrainJobs (kubeflow/trainer#2807)
    result = neosft("submit", "--variant", "all", "--run-id", "r1")
    assert result.returncode == 0, result.stderr
    assert not kube.sent("DELETE")
    refused = [p for p in kube.sent("POST") if p.path.endswith("/trainjobs")]
    assert len(refused) == len(VARIANTS) + 3
    assert len(kube.objects["/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"]) == len(VARIANTS)


def test_a_worker_refused_by_pod_security_shows_in_status(kube):
    kube.namespace_labels["ml"] = {"pod-security.kubernetes.io/enforce": "restricted"}
    result = neosft("submit", "--run-id", "r1", "--set", "train.nodes=2", "--set", "train.gpusPerNode=4")
    assert result.returncode == 0, result.stderr
    assert "enforces Pod Security 'restricted'" in result.stderr and "k8s/training-operator" in result.stderr
    assert neosft("release", "neosft-r1-single").returncode == 0
    assert kube.run_training_operator() == ["neosft-r1-single-master-0"]  # the upstream init container is refused
    status = neosft("status", "r1")
    assert status.returncode == 0, status.stderr
    assert (
        'PyTorchJob/neosft-r1-single: FailedCreatePod: Error creating: pods "neosft-r1-single-worker-0" is '
        'forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container '
        '"init-pytorch"'
    ) in status.stdout


def test_the_training_operator_k8s_installs_makes_worker_pods_restricted_admits(kube):
    operator = Path(__file__).resolve().parent.parent / "k8s" / "training-operator"
    kustomization = yaml.safe_load((operator / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    [source] = generator["files"]
    key, file = source.split("=")
    assert (
        key == "initContainer.yaml"
    )  # what the operator reads at /etc/config (training-operator pkg/config/config.go)
    [patch] = kustomization["patches"]
    assert "/etc/config" in patch["patch"] and generator["name"] in patch["patch"]
    kube.namespace_labels["ml"] = {"pod-security.kubernetes.io/enforce": "restricted"}
    kube.add("kubeflow", "configmaps", {"metadata": {"name": generator["name"]}, "data": {key: "..."}})
    result = neosft(
        "submit",
        "--run-id",
        "r1",
        "--set",
        "train.nodes=3",
        "--set",
        "train.gpusPerNode=4",
        "--set",
        "train.set.gradient_accumulation_steps=1",
    )
    assert result.returncode == 0 and "Pod Security" not in result.stderr, result.stderr
    assert neosft("release", "neosft-r1-single").returncode == 0
    made = kube.run_training_operator(template=(operator / file).read_text())
    assert made == ["neosft-r1-single-master-0", "neosft-r1-single-worker-0", "neosft-r1-single-worker-1"]
    assert not kube.objects.get("/api/v1/namespaces/ml/events")


def test_submit_names_what_the_controllers_accept_or_refuses_in_one_line():
    """For every run id length, the names JobSet derives from each TrainJob pass its webhook, or submit refuses."""
    from kube_api import jobset_pod_name_error

    for length in range(1, 31):
        run_id = "r" * length
        result = neosft(
            "submit",
            "--variant",
            "all",
            "--backend",
            "trainjob",
            "--queue",
            "q",
            "--run-id",
            run_id,
            "--dry-run",
            env={"KUBECONFIG": "/nonexistent"},
        )
        if result.returncode:
            assert_user_error(result, f"run id '{run_id}' is too long for TrainJob/neosft-{run_id}-conversations")
            assert length > 27
            continue
        for job in (o for o in yaml.safe_load_all(result.stdout) if o["kind"] == "TrainJob"):
            assert (
                jobset_pod_name_error(job["metadata"]["name"], "node", 0, job["spec"]["trainer"]["numNodes"] - 1)
                is None
            )


@pytest.mark.parametrize(
    "spec, status, expected",
    [
        (
            {"suspend": True},
            {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended"}]},
            "Suspended",
        ),
        (
            {"suspend": False},
            {"conditions": [{"type": "Suspended", "status": "False", "reason": "Resumed"}]},
            "Pending",
        ),
        (
            {},
            {"jobsStatus": [{"name": "node", "active": 1, "ready": 0, "succeeded": 0, "failed": 0, "suspended": 0}]},
            "Running",
        ),
        ({}, {"conditions": [{"type": "Complete", "status": "True"}]}, "Succeeded"),
        (
            {"suspend": True},
            {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
            "Failed",
        ),
    ],
)
def test_state_of_trainjobs(spec, status, expected):
    from neosft.backends.state import state

    assert state({"kind": "TrainJob", "spec": spec, "status": status}) == expected


def test_the_helm_hook_holds_the_install_until_the_trainjob_webhooks_see_the_runtime(kube):
    from neosft.k8s.render import render

    kube.served, kube.runtime_lag = {V2}, 2
    objects = {(o["kind"], o["metadata"]["name"]): o for o in render({"train": {"backend": "trainjob"}}, "r1", "ml")}
    runtime, check = objects[("TrainingRuntime", "neosft-r1")], objects[("Job", "neosft-r1-runtime-check")]
    hook = lambda o, key: o["metadata"]["annotations"][f"helm.sh/{key}"]  # noqa: E731
    assert int(hook(check, "hook-weight")) > int(runtime["metadata"]["annotations"].get("helm.sh/hook-weight", 0))
    assert "pre-install" in hook(check, "hook") and "pre-install" in hook(runtime, "hook")
    trainjobs = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
    assert kube.answer("POST", trainjobs.replace("trainjobs", "trainingruntimes"), {}, runtime)[0] == 201  # Helm
    [container] = check["spec"]["template"]["spec"]["containers"]
    result = run_container(container, {})
    assert result.returncode == 0, result.stderr
    probes = [r for r in kube.sent("POST") if r.path == trainjobs]
    assert len(probes) == 3 and all(r.query["dryRun"] == ["All"] for r in probes)  # two refused, then seen
    assert not kube.objects.get(trainjobs)  # a dry run creates nothing
    assert kube.answer("POST", trainjobs, {}, objects[("TrainJob", "neosft-r1-single")])[0] == 201  # then Helm's

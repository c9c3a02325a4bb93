"""The chart, rendered by the real Helm engine and checked against the real Kubernetes and PyTorchJob schemas."""

from __future__ import annotations

import itertools
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from neosft.errors import UserError
from neosft.k8s.manifests import manifests
from neosft.k8s.render import CHART, is_helm_only, is_hook, load_values, merge, render, to_yaml
from neosft.k8s.validate import CRD_SCHEMAS, KUBERNETES_VERSION, PYTORCHJOB_SCHEMA, strict, validate
from neosft.variants import DEFAULT_METHOD, METHODS, NUM_DEVICES, RULES, VARIANTS

GOLDEN = Path(__file__).with_name("golden")
SHARED_CRD = Path(__file__).resolve().parents[1].parent / "shared" / "crds" / "kubeflow.org_pytorchjobs.yaml"
SHARED_TRAINER = SHARED_CRD.parent / "trainer-v2.3.0"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())


def kinds(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def pod_specs(obj):
    if obj["kind"] == "Pod":
        yield obj["spec"]
    elif obj["kind"] == "Job":
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "PyTorchJob":
        for replica in obj["spec"]["pytorchReplicaSpecs"].values():
            yield replica["template"]["spec"]
    elif obj["kind"] == "TrainingRuntime":
        for replicated in obj["spec"]["template"]["spec"]["replicatedJobs"]:
            yield replicated["template"]["spec"]["template"]["spec"]


def containers(obj):
    for spec in pod_specs(obj):
        yield from spec.get("initContainers", []) + spec["containers"]


def command(job):
    return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]


def trainjob_run(values=None, variants=("single",)):
    return render(merge({"train": {"backend": "trainjob"}, "variants": list(variants)}, values or {}), "r1", "ml")


# --- one table --------------------------------------------------------------------------------


def test_variant_names_and_gpu_count_come_from_the_variant_table():
    assert SCHEMA["definitions"]["variant"]["enum"] == list(VARIANTS)
    assert set(DEFAULTS["variants"]) <= set(VARIANTS)
    assert DEFAULTS["train"]["gpusPerNode"] * DEFAULTS["train"]["nodes"] == NUM_DEVICES


def test_no_hyperparameter_is_repeated_in_the_chart():
    text = "\n".join(p.read_text() for p in CHART.rglob("*") if p.is_file())
    for name in ("learning_rate", "cutoff_len", "gradient_accumulation", "warmup", "num_train_epochs"):
        assert name not in text


# --- every combination, rendered and validated ---------------------------------------------------

OPTIONS = [
    {},
    {
        "train": {
            "model": "Qwen/Qwen2-0.5B",
            "deepspeed": "zero2",
            "packing": True,
            "maxSteps": 10,
            "saveSteps": 5,
            "valSize": 0.1,
            "set": {"logging_steps": 1, "bf16": True},
            "modelCacheClaim": "cache",
            "priorityClassName": "high",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}
                        ]
                    }
                }
            },
        },
        "huggingface": {"tokenSecret": {"name": "hf"}, "endpoint": "https://hub.example.com"},
        "queue": "gpu-queue",
        "s3": {"endpoint": "http://minio:9000", "prefix": ""},
        "image": {"pullSecrets": ["regcred"]},
        "serviceAccount": {"create": False, "name": "runner"},
    },
]
SELECTIONS = [[v] for v in VARIANTS] + [list(VARIANTS)]
STAGES = [{}, {"data": {"enabled": False, "uri": "s3://corpora/built"}}, {"train": {"enabled": False}}]


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
@pytest.mark.parametrize("options", OPTIONS, ids=["defaults", "every-option"])
def test_every_variant_and_option_combination_renders_valid_objects(options, backend):
    kind = {"pytorchjob": "PyTorchJob", "trainjob": "TrainJob"}[backend]
    for variants, nodes, stage in itertools.product(SELECTIONS, (1, 2, 4), STAGES):
        values = merge(merge(options, {"variants": variants, "train": {"nodes": nodes, "backend": backend}}), stage)
        objects = render(values, "combo", "ml")
        validate(objects)
        jobs = kinds(objects, kind)
        assert len(jobs) == (0 if stage.get("train") else len(variants))
        assert not kinds(objects, {"PyTorchJob": "TrainJob", "TrainJob": "PyTorchJob"}[kind])
        assert len([j for j in kinds(objects, "Job") if not is_helm_only(j)]) == (0 if stage.get("data") else 1)
        for job in jobs:
            if kind == "TrainJob":
                assert job["spec"]["trainer"]["numNodes"] == nodes
                continue
            workers = job["spec"]["pytorchReplicaSpecs"].get("Worker", {}).get("replicas", 0)
            assert (job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"], workers) == (1, nodes - 1)


def test_pytorchjob_trains_one_variant_on_eight_gpus_and_resumes_after_preemption():
    objects = render({"variants": ["all_pair"], "train": {"nodes": 2}}, "r1", "ml")
    [job] = kinds(objects, "PyTorchJob")
    assert job["metadata"]["name"] == "neosft-r1-all-pair"
    assert job["metadata"]["labels"]["neosft.io/variant"] == "all_pair"
    assert job["spec"]["nprocPerNode"] == str(NUM_DEVICES)
    assert job["spec"]["runPolicy"]["backoffLimit"] > 0
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        assert replica["restartPolicy"] == "OnFailure"
        spec = replica["template"]["spec"]
        [main] = spec["containers"]
        assert main["name"] == "pytorch"  # the operator injects its environment into this container
        assert main["resources"]["limits"]["nvidia.com/gpu"] == NUM_DEVICES
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in spec["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]
        assert {e["name"] for e in main["env"]} >= {"NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}
        assert "initContainers" not in spec  # nothing in a GPU pod waits: the pod exists only once data does
    assert command(job) == [
        "torchrun",
        "--nnodes=2",
        f"--nproc-per-node={NUM_DEVICES}",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m",
        "neosft",
        "train",
        "--variant=all_pair",
        "--data=s3://neosft/neosft/data/r1",
        "--output=s3://neosft/neosft/runs/r1/all_pair",
        "--method=lora",
        "--deepspeed=zero2",
        "--report-to=tensorboard",
        "--eval-base",
    ]  # the first variant also scores the base


def test_training_waits_suspended_until_the_data_job_releases_it():
    objects = render({"variants": ["single", "multi"]}, "r1", "ml")
    jobs = kinds(objects, "PyTorchJob")
    assert [j["spec"]["runPolicy"]["suspend"] for j in jobs] == [True, True]  # no pod, so no GPU, until released
    [data] = kinds(objects, "Job")
    spec = data["spec"]["template"]["spec"]
    [build] = spec["initContainers"]  # the release runs only after the build succeeded
    [release] = spec["containers"]
    assert release["args"] == ["release", "--kind", "PyTorchJob", "neosft-r1-single", "neosft-r1-multi"]
    assert spec["automountServiceAccountToken"] is True
    assert all(s["automountServiceAccountToken"] is False for j in jobs for s in pod_specs(j))
    [role] = kinds(objects, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["kubeflow.org"],
            "resources": ["pytorchjobs"],
            "verbs": ["get", "patch"],
            "resourceNames": ["neosft-r1-single", "neosft-r1-multi"],
        }
    ]
    [binding] = kinds(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"], "namespace": "ml"}]
    # on an existing dataset nothing is held, and no Role is made
    objects = render({"data": {"enabled": False, "uri": "s3://bkt/built"}}, "r1", "ml")
    assert "suspend" not in kinds(objects, "PyTorchJob")[0]["spec"]["runPolicy"]
    assert not kinds(objects, "Role") and not kinds(objects, "Job")
    with pytest.raises(UserError, match="set data.uri to the dataset to train on"):
        render({"data": {"enabled": False}}, "r1", "ml")


def test_trainjob_backend_renders_this_runs_runtime_and_one_trainjob_per_variant():
    objects = trainjob_run(variants=VARIANTS)
    validate(objects)
    [runtime] = kinds(objects, "TrainingRuntime")
    jobs = kinds(objects, "TrainJob")
    assert runtime["metadata"]["name"] == "neosft-r1"
    assert [j["metadata"]["name"] for j in jobs] == [f"neosft-r1-{v.replace('_', '-')}" for v in VARIANTS]
    assert all(
        re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", j["metadata"]["name"]) and len(j["metadata"]["name"]) <= 63
        for j in jobs
    )  # the TrainJob CRD's own rule (CEL) on names
    assert runtime["spec"]["mlPolicy"] == {"numNodes": 1, "torch": {}}
    assert runtime["spec"]["template"]["spec"]["failurePolicy"] == {"maxRestarts": DEFAULTS["train"]["backoffLimit"]}
    [node] = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"] == {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
    [spec] = pod_specs(runtime)
    [main] = spec["containers"]
    assert main["name"] == "node"  # the torch plugin injects PET_* into this container and sets its args
    assert main["command"] == [
        "torchrun",
        "--nnodes=1",
        f"--nproc-per-node={NUM_DEVICES}",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(PET_MASTER_ADDR)",
        "--master-port=$(PET_MASTER_PORT)",
        "-m",
        "neosft",
        "train",
    ]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in spec["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in main["volumeMounts"]
    assert {e["name"] for e in main["env"]} >= {"NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING", "NEOSFT_WORK_DIR"}
    assert spec["tolerations"] == DEFAULTS["train"]["tolerations"] and spec["restartPolicy"] == "Never"
    pytorchjobs = kinds(render({"variants": list(VARIANTS)}, "r1", "ml"), "PyTorchJob")
    for variant, job, ptj in zip(VARIANTS, jobs, pytorchjobs):
        assert job["metadata"]["labels"]["neosft.io/variant"] == variant
        assert job["spec"]["runtimeRef"] == {
            "apiGroup": "trainer.kubeflow.org",
            "kind": "TrainingRuntime",
            "name": "neosft-r1",
        }
        trainer = job["spec"]["trainer"]
        assert (trainer["numNodes"], trainer["numProcPerNode"]) == (1, NUM_DEVICES)
        assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == NUM_DEVICES  # 8 GPUs per variant
        assert trainer["resourcesPerNode"] == main["resources"]
        assert command(ptj)[:9] == [
            "torchrun",
            "--nnodes=1",
            f"--nproc-per-node={NUM_DEVICES}",
            "--node-rank=$(PET_NODE_RANK)",
            "--master-addr=$(MASTER_ADDR)",
            "--master-port=$(MASTER_PORT)",
            "-m",
            "neosft",
            "train",
        ]
        assert trainer["args"] == command(ptj)[9:]  # both backends run the same `neosft train`
        assert trainer["args"][0] == f"--variant={variant}"


def test_helm_install_creates_the_runtime_before_the_trainjobs_that_need_it():
    objects = trainjob_run()
    [runtime] = kinds(objects, "TrainingRuntime")
    # Trainer's webhook refuses a TrainJob whose runtime does not exist yet, and Helm creates custom
    # resources in alphabetical order of kind: the runtime must come first, as a pre-install hook.
    assert sorted(["TrainingRuntime", "TrainJob"])[0] == "TrainJob"
    assert runtime["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert not any(is_hook(o) for o in kinds(objects, "TrainJob"))
    [submitted] = kinds(manifests({"train": {"backend": "trainjob"}}, "r1", "ml"), "TrainingRuntime")
    assert "annotations" not in submitted["metadata"]  # `neosft submit` creates it first, as a plain object


def test_trainjobs_wait_suspended_for_their_dataset_and_join_kueue_when_released():
    objects = manifests({"variants": ["single", "multi"], "queue": "gpu", "train": {"backend": "trainjob"}}, "r1", "ml")
    jobs = kinds(objects, "TrainJob")
    assert [j["spec"]["suspend"] for j in jobs] == [True, True]
    assert all(j["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu" for j in jobs)  # Kueue's from the start,
    assert all(j["metadata"]["annotations"]["kueue.x-k8s.io/admission-gated-by"] == "neosft.io/dataset" for j in jobs)
    [data] = kinds(objects, "Job")
    assert data["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    [release] = data["spec"]["template"]["spec"]["containers"]
    assert release["args"] == ["release", "--kind", "TrainJob", "neosft-r1-single", "neosft-r1-multi"]
    [role] = kinds(objects, "Role")
    assert role["rules"] == [
        {
            "apiGroups": ["trainer.kubeflow.org"],
            "resources": ["trainjobs"],
            "verbs": ["get", "patch"],
            "resourceNames": ["neosft-r1-single", "neosft-r1-multi"],
        }
    ]
    objects = manifests(
        {"queue": "gpu", "data": {"enabled": False, "uri": "s3://bkt/d"}, "train": {"backend": "trainjob"}}, "r1", "ml"
    )
    [job] = kinds(objects, "TrainJob")
    assert "suspend" not in job["spec"] and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    assert not kinds(objects, "Role")


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_platform_passthroughs_reach_the_pods(backend):
    values = merge(
        load_values(str(CHART / "ci" / "trainjob-values.yaml"), (), {}),
        {"train": {"backend": backend}, "global": {"imageRegistry": "registry.example.com"}},
    )
    objects = render(values, "r1", "ml")
    validate(objects)
    training = [o for o in objects if o["kind"] in ("PyTorchJob", "TrainingRuntime")]
    assert training
    for obj in training:
        for spec in pod_specs(obj):
            assert spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
            assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
            assert {
                "name": "datasets",
                "persistentVolumeClaim": {"claimName": "shared-datasets", "readOnly": True},
            } in spec["volumes"]
            [main] = spec["containers"]
            for part in ("requests", "limits"):
                assert main["resources"][part]["vpc.amazonaws.com/efa"] == 4
            assert {
                "name": "WANDB_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
            } in main["env"]
            assert main["envFrom"] == [{"configMapRef": {"name": "nccl-tuning"}}]
            assert {"name": "datasets", "mountPath": "/datasets", "readOnly": True} in main["volumeMounts"]
    pods = (
        [o for o in objects if o["kind"] == "Pod"]
        + [o["spec"]["template"] for o in kinds(objects, "Job")]
        + [r["template"] for o in kinds(objects, "PyTorchJob") for r in o["spec"]["pytorchReplicaSpecs"].values()]
        + [
            j["template"]["spec"]["template"]
            for o in kinds(objects, "TrainingRuntime")
            for j in o["spec"]["template"]["spec"]["replicatedJobs"]
        ]
    )
    assert len(pods) >= 3
    for pod in pods:
        assert pod["metadata"]["labels"]["team"] == "team-a"
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "registry.example.com" not in to_yaml(objects)  # global is the parent chart's, not neosft's


def test_the_real_corpus_is_the_default_and_each_run_gets_its_own_dataset():
    assert DEFAULTS["data"]["source"] == "hf://datasets/m-a-p/neo_sft_phase2/neo_sft_phase2.json"
    for run in ("r1", "r2"):
        objects = render({}, run, "ml")
        [build] = kinds(objects, "Job")[0]["spec"]["template"]["spec"]["initContainers"]
        assert build["args"] == [
            "data",
            "build",
            DEFAULTS["data"]["source"],
            "--out",
            f"s3://neosft/neosft/data/{run}",
            "--build-id",
            run,
            "--rules",
            "seed",
        ]
        assert f"--data=s3://neosft/neosft/data/{run}" in command(kinds(objects, "PyTorchJob")[0])


def test_data_rules_reach_the_data_job_and_only_known_rules_render():
    assert SCHEMA["properties"]["data"]["properties"]["rules"]["enum"] == list(RULES)
    [job] = kinds(render({"data": {"rules": "reilx"}}, "r1", "ml"), "Job")
    [build] = job["spec"]["template"]["spec"]["initContainers"]
    assert build["args"][-2:] == ["--rules", "reilx"]
    with pytest.raises(UserError, match="rules"):
        render({"data": {"rules": "reilx\n- --out"}}, "r1", "ml")


def test_a_work_volume_holds_checkpoints_and_the_model_download():
    def scratch(values):
        [job] = kinds(render(values, "r1", "ml"), "PyTorchJob")
        spec = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
        [main] = spec["containers"]
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert {"name": "scratch", "mountPath": "/scratch"} in main["volumeMounts"]
        assert env["NEOSFT_WORK_DIR"] == "/scratch/neosft"
        return next(v for v in spec["volumes"] if v["name"] == "scratch"), main, env

    volume, main, env = scratch({})
    assert volume["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"] == "400Gi"
    assert env["HF_HOME"] == "/scratch/huggingface"
    volume, main, env = scratch({"train": {"workVolume": {"type": "emptyDir", "size": "300Gi"}}})
    assert volume["emptyDir"] == {"sizeLimit": "300Gi"}
    assert main["resources"]["requests"]["ephemeral-storage"] == "300Gi"  # the scheduler picks a node with room
    volume, main, env = scratch(
        {"train": {"workVolume": {"type": "claim", "claimName": "scratch-pvc"}, "modelCacheClaim": "models"}}
    )
    assert volume["persistentVolumeClaim"] == {"claimName": "scratch-pvc"}
    assert env["HF_HOME"] == "/cache/huggingface"


FREE_TEXT = [
    "podAnnotations.a",
    "podLabels.a",
    "podSecurityContext.seLinuxOptions.level",
    "train.backend",
    "train.priorityClassName",
    "train.model",
    "train.deepspeed",
    "image.train.repository",
    "image.train.tag",
    "image.data.tag",
    "data.source",
    "data.uri",
    "s3.prefix",
    "s3.endpoint",
    "s3.region",
    "s3.secretName",
    "huggingface.tokenSecret.name",
    "huggingface.endpoint",
    "queue",
    "serviceAccount.name",
    "train.modelCacheClaim",
    "train.workVolume.storageClassName",
]
INJECTIONS = [
    "x\nhostPID: true",
    "x\n  runAsUser: 0",
    "x\n- --extra",
    "x: {hostPID: true}",
    'x" y',
    "x' y",
    "x #c",
    "x\r\nhostPID: true",
]


@pytest.mark.parametrize("key", FREE_TEXT)
def test_free_text_values_cannot_inject_yaml(key):
    for payload in INJECTIONS:
        value: object = payload
        for part in reversed(key.split(".")):
            value = {part: value}
        try:
            objects = render(value, "r1", "ml")
        except UserError as e:
            assert "chart values: at '/" in str(e)  # refused by the schema, naming the key
            continue
        text = to_yaml(objects)  # or carried as one quoted scalar, adding nothing
        assert "hostPID" not in text.replace(payload, "") and "runAsUser: 0" not in text and "--extra\n" not in text
        assert payload in json.dumps(objects, ensure_ascii=False).replace("\\n", "\n").replace(
            '\\"', '"'
        ) or payload.replace("\n", "\\n") in json.dumps(objects)


def test_training_options_become_trainer_flags():
    values = {
        "train": {
            "model": "Qwen/Qwen2-0.5B",
            "deepspeed": "zero2",
            "packing": True,
            "maxSteps": 10,
            "saveSteps": 5,
            "valSize": 0.05,
            "set": {"logging_steps": 1},
        }
    }
    [job] = kinds(render(values, "r1", "ml"), "PyTorchJob")
    assert command(job)[-11:] == [
        "--model=Qwen/Qwen2-0.5B",
        "--method=lora",
        "--deepspeed=zero2",
        "--report-to=tensorboard",
        "--packing",
        "--max-steps=10",
        "--save-steps=5",
        "--val-size=0.05",
        "--eval-base",
        "--set",
        "logging_steps=1",
    ]


def test_method_and_lora_settings_become_trainer_flags():
    assert DEFAULTS["train"]["method"] == DEFAULT_METHOD
    assert SCHEMA["properties"]["train"]["properties"]["method"]["enum"] == list(METHODS)
    [job] = kinds(
        render(
            {"train": {"lora": {"rank": 8, "alpha": 16, "dropout": 0.05, "target": "q_proj,v_proj"}, "merge": True}},
            "r1",
            "ml",
        ),
        "PyTorchJob",
    )
    args = command(job)
    assert args[args.index("--method=lora") :][:6] == [
        "--method=lora",
        "--lora-rank=8",
        "--lora-alpha=16",
        "--lora-dropout=0.05",
        "--lora-target=q_proj,v_proj",
        "--merge",
    ]
    [job] = kinds(render({"train": {"liger": True}}, "r1", "ml"), "PyTorchJob")
    assert "--liger" in command(job)
    [job] = kinds(render({}, "r1", "ml"), "PyTorchJob")  # the trainer's own LoRA settings: no flag repeats them
    assert "--liger" not in command(job)
    assert "--method=lora" in command(job) and not [a for a in command(job) if a.startswith(("--lora", "--merge"))]
    [job] = kinds(render({"train": {"method": "full"}}, "r1", "ml"), "PyTorchJob")
    assert "--method=full" in command(job) and not [a for a in command(job) if a.startswith("--lora")]
    with pytest.raises(UserError, match="train.merge merges a LoRA adapter"):
        render({"train": {"method": "full", "merge": True}}, "r1", "ml")
    for lora in ({"rank": 8}, {"dropout": 0.0}, {"target": "q_proj"}):  # not ignored: refused
        with pytest.raises(UserError, match="train.lora sets a LoRA adapter: it needs train.method lora"):
            render({"train": {"method": "full", "lora": lora}}, "r1", "ml")
    for bad in ({"method": "qlora"}, {"lora": {"rank": 0}}, {"lora": {"target": "q_proj; rm"}}, {"lora": {"x": 1}}):
        with pytest.raises(UserError, match="chart values: at '/train/"):
            render({"train": bad}, "r1", "ml")


def test_data_job_builds_every_dataset_on_cpu():
    objects = render(
        {"data": {"source": "s3://corpora/chat.json"}, "huggingface": {"tokenSecret": {"name": "hf"}}}, "r1", "ml"
    )
    [job] = kinds(objects, "Job")
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["ttlSecondsAfterFinished"] > 0
    [build] = job["spec"]["template"]["spec"]["initContainers"]
    assert build["args"] == [
        "data",
        "build",
        "s3://corpora/chat.json",
        "--out",
        "s3://neosft/neosft/data/r1",
        "--build-id",
        "r1",
        "--rules",
        "seed",
    ]
    assert not any("gpu" in str(k) for k in build["resources"]["limits"])
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}}} in build["env"]


def test_kueue_queue_labels_the_run_and_joins_training_when_released():
    objects = manifests({"variants": ["single"], "queue": "gpu"}, "r1", "ml")
    [data] = kinds(objects, "Job")
    assert data["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"
    [job] = kinds(objects, "PyTorchJob")  # Kueue's admission gate: not admitted before its dataset exists
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu" and job["spec"]["runPolicy"]["suspend"]
    assert job["metadata"]["annotations"]["kueue.x-k8s.io/admission-gated-by"] == "neosft.io/dataset"
    [data] = kinds(manifests({"queue": "gpu", "data": {"queue": "cpu"}}, "r1", "ml"), "Job")
    assert data["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "cpu"  # data.queue: the CPU Job's own
    assert data["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "release", "operator": "NotIn", "values": [0]}}
    ]  # a failed release rebuilds nothing
    [job] = kinds(
        manifests({"queue": "gpu", "data": {"enabled": False, "uri": "s3://bkt/d"}}, "r1", "ml"), "PyTorchJob"
    )
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu"


def test_submitted_objects_say_neosft_manages_them():
    for obj in manifests({}, "r1", "ml"):
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "neosft"
        assert "Helm" not in json.dumps(obj)
    assert all(o["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm" for o in render({}, "r1", "ml"))


@pytest.mark.parametrize("backend, kind", [("pytorchjob", "PyTorchJob"), ("trainjob", "TrainingRuntime")])
def test_pods_are_locked_down_and_sized(backend, kind):
    objects = render(merge(OPTIONS[1], {"variants": list(VARIANTS), "train": {"backend": backend}}), "r1", "ml")
    run = [o for o in objects if not is_helm_only(o)]  # (the Helm-only runtime check has its own account)
    assert {o["kind"] for o in run} - {"TrainJob"} == {"Job", kind, "Pod", "Role", "RoleBinding"}
    for obj in objects:
        for spec in pod_specs(obj):
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            assert spec["serviceAccountName"] == ("runner" if obj in run else "neosft-r1-runtime-check")
        for c in containers(obj):
            assert c["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "capabilities": {"drop": ["ALL"]},
            }
            assert c["resources"]["requests"] and c["resources"]["limits"]


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
def test_s3_keys_reach_pods_only_through_secret_key_refs(backend):
    objects = render(
        {"variants": list(VARIANTS), "huggingface": {"tokenSecret": {"name": "hf"}}, "train": {"backend": backend}},
        "r1",
        "ml",
    )
    secret_envs = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"}
    for obj in objects:
        for c in containers(obj):
            if c["name"] in ("release", "await-runtime"):  # talks only to the Kubernetes API, with the pod's token
                assert "env" not in c
                continue
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if e["name"] in secret_envs}
            assert set(refs) >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
            assert all("value" not in e for e in c["env"] if e["name"] in secret_envs)
    assert "kind: Secret" not in to_yaml(objects)


def test_service_account_and_helm_test_pod():
    objects = render({}, "r1", "ml")
    [account] = kinds(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "neosft-r1"
    [test] = kinds(objects, "Pod")
    assert is_hook(test) and test["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test["spec"]["containers"][0]["args"] == ["check-storage", "s3://neosft/neosft"]
    assert not any(is_hook(o) for o in manifests({}, "r1", "ml"))


# --- golden snapshots ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "multinode", "trainjob"])
def test_rendered_yaml_matches_the_golden_snapshot(name):
    values = load_values(str(CHART / "ci" / f"{name}-values.yaml"), (), {}) if name != "default" else {}
    rendered = to_yaml(render(values, "golden", "ml"))
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("NEOSFT_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text(), "rendering changed: check it, then NEOSFT_UPDATE_GOLDEN=1 pytest"


# --- values that must be refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, named",
    [
        ({"trian": {}}, "additional properties 'trian' not allowed"),
        ({"train": {"nodez": 2}}, "at '/train': additional properties 'nodez' not allowed"),
        ({"train": {"resources": {"limits": {"gpu": 8}}}}, "at '/train/resources/limits'"),
        ({"image": {"train": {"tagg": "x"}}}, "at '/image/train'"),
        ({"s3": {"secretname": "x"}}, "at '/s3'"),
        ({"variants": ["pairs"]}, "at '/variants/0'"),
        ({"train": {"nodes": "two"}}, "at '/train/nodes'"),
        ({"train": {"nodes": 0}}, "at '/train/nodes'"),
        ({"train": {"packing": "yes"}}, "at '/train/packing'"),
        ({"train": {"env": {"AWS_SECRET_ACCESS_KEY": "literal"}}}, "at '/train/env/AWS_SECRET_ACCESS_KEY'"),
        ({"train": {"valSize": 1.5}}, "at '/train/valSize'"),
        ({"runId": "Has_Capitals"}, "at '/runId'"),
        ({"s3": {"bucket": "s3://bucket"}}, "at '/s3/bucket'"),
        ({"train": {"backend": "mpijob"}}, "at '/train/backend'"),
        ({"train": {"extraResources": {"nvidia.com/gpu": 16}}}, "at '/train/extraResources/nvidia.com~1gpu'"),
        ({"train": {"extraResources": {"efa": 1}}}, "at '/train/extraResources'"),
        (
            {"train": {"extraEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "literal"}]}},
            "at '/train/extraEnv/0/name'",
        ),
        (
            {
                "train": {
                    "extraEnv": [{"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "w", "kee": "k"}}}]
                }
            },
            "at '/train/extraEnv/0",
        ),
        ({"train": {"extraEnv": [{"name": "X"}]}}, "at '/train/extraEnv/0'"),
        ({"train": {"extraVolumeMounts": [{"name": "d", "mountpath": "/d"}]}}, "at '/train/extraVolumeMounts/0'"),
        (
            {"train": {"envFrom": [{"secretRef": {"name": "w"}, "configMapRef": {"name": "c"}}]}},
            "at '/train/envFrom/0'",
        ),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot'"),
        ({"podSecurityContext": {"runAsUser": 0}}, "at '/podSecurityContext/runAsUser'"),
        ({"securityContext": {"privileged": True}}, "at '/securityContext/privileged'"),
        ({"podLabels": {"team": "a b"}}, "at '/podLabels/team'"),
    ],
)
def test_schema_rejects_bad_values_and_names_the_key(values, named):
    with pytest.raises(UserError, match="chart values: ") as caught:
        render(values, "r1", "ml")
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_schema_closes_every_object():
    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                assert "additionalProperties" in node, f"{path} accepts unknown keys"
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(SCHEMA, "#")


def test_release_name_too_long_for_a_run_id():
    with pytest.raises(UserError, match="longer than 30 characters"):
        render({}, "a-release-name-much-too-long-for-object-names", "ml")


def test_values_file_and_sets_and_flags_merge_in_order(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("train: {nodes: 2, packing: true}\nvariants: [multi]\n")
    values = load_values(str(path), ("train.nodes=3", "s3.bucket=b1"), {"variants": ["single"]})
    assert values == {"train": {"nodes": 3, "packing": True}, "variants": ["single"], "s3": {"bucket": "b1"}}
    path.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_values(str(path), (), {})
    with pytest.raises(UserError, match="cannot read values file"):
        load_values(str(tmp_path / "missing.yaml"), (), {})


# --- validation itself ------------------------------------------------------------------------------


def test_validation_rejects_unknown_fields_in_builtin_kinds_and_pytorchjobs():
    objects = render({}, "r1", "ml")
    [job] = kinds(objects, "Job")
    job["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(UserError, match=r"Job/neosft-r1-data is invalid: spec.template.spec.containers.0: .*resourcez"):
        validate(objects)
    objects = render({}, "r1", "ml")
    [ptj] = kinds(objects, "PyTorchJob")
    ptj["spec"]["runPolicy"]["backofLimit"] = 3
    with pytest.raises(UserError, match=r"PyTorchJob/neosft-r1-single is invalid: spec.runPolicy: .*backofLimit"):
        validate(objects)
    ptj["spec"]["runPolicy"].pop("backofLimit")
    ptj["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] = "one"
    with pytest.raises(UserError, match="replicas: 'one' is not of type 'integer'"):
        validate(objects)


def test_validation_rejects_unknown_fields_in_trainjobs_and_their_runtime():
    objects = trainjob_run()
    validate(objects)
    [job] = kinds(objects, "TrainJob")
    job["spec"]["trainer"]["resourcesPerNod"] = {}
    with pytest.raises(UserError, match=r"TrainJob/neosft-r1-single is invalid: spec.trainer: .*resourcesPerNod"):
        validate(objects)
    objects = trainjob_run()
    [runtime] = kinds(objects, "TrainingRuntime")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMount"] = []  # the API server would prune it, and the pod would lose its mounts
    with pytest.raises(
        UserError,
        match=r"TrainingRuntime/neosft-r1 is invalid: spec.template.spec.replicatedJobs.0.*"
        r"volumeMount",
    ):
        validate(objects)
    objects = trainjob_run(
        {"train": {"extraVolumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "x", "readonly": True}}]}}
    )
    with pytest.raises(UserError, match="readonly"):  # a typo inside a passthrough volume fails too
        validate(objects)


def test_strict_keeps_open_maps_open():
    schema = strict(
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "additionalProperties": {"type": "string"}},
                "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            },
        }
    )
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in schema["properties"]["b"]


@pytest.mark.skipif(not SHARED_CRD.exists(), reason="../shared/crds is not beside this clone")
def test_shipped_pytorchjob_schema_is_the_v1_9_crd():
    crd = yaml.load(SHARED_CRD.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert json.loads(PYTORCHJOB_SCHEMA.read_text()) == version["schema"]["openAPIV3Schema"]
    assert (PYTORCHJOB_SCHEMA.parent / "LICENSE.kubeflow-training-operator").read_text() == (
        SHARED_CRD.parent / "LICENSE.kubeflow-training-operator"
    ).read_text()


@pytest.mark.skipif(not SHARED_TRAINER.exists(), reason="../shared/crds is not beside this clone")
@pytest.mark.parametrize(
    "kind, crd",
    [
        ("TrainJob", "trainer.kubeflow.org_trainjobs.yaml"),
        ("TrainingRuntime", "trainer.kubeflow.org_trainingruntimes.yaml"),
    ],
)
def test_shipped_trainer_schemas_are_the_v2_3_0_crds(kind, crd):
    crd = yaml.load((SHARED_TRAINER / crd).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = CRD_SCHEMAS[("trainer.kubeflow.org/v1alpha1", kind)]
    assert json.loads(schema.read_text()) == version["schema"]["openAPIV3Schema"]
    assert (schema.parent / "LICENSE.kubeflow-trainer").read_text() == (SHARED_TRAINER / "LICENSE").read_text()


# --- helm lint and the CI values files ---------------------------------------------------------------


@pytest.mark.parametrize("values_file", [None, *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))])
def test_helm_lint_passes_and_ci_values_render_valid_objects(values_file):
    import helm_python

    values = load_values(str(CHART / "ci" / values_file), (), {}) if values_file else {}
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    validate(render(values, "ci", "ml"))


def test_the_package_ships_the_whole_chart_and_the_crd_schema():
    import glob

    import tomllib

    patterns = tomllib.loads((CHART.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "neosft"
    ]
    package = CHART.parent.parent
    shipped = {f for pattern in patterns for f in glob.glob(pattern, root_dir=package, include_hidden=True)}
    files = {
        p.relative_to(package).as_posix()
        for p in [*CHART.rglob("*"), *PYTORCHJOB_SCHEMA.parent.iterdir()]
        if p.is_file()
    }
    assert files - shipped == set()


def test_a_world_size_that_does_not_divide_the_total_batch_is_refused_before_anything_renders():
    with pytest.raises(
        UserError, match=r"24 GPUs \(train.nodes x train.gpusPerNode\) do not divide the total train batch 64"
    ):
        manifests({"train": {"nodes": 3}}, "r1", "ml")
    assert manifests(
        {"train": {"nodes": 3, "set": {"gradient_accumulation_steps": 2}}}, "r1", "ml"
    )  # explicit: allowed
    assert manifests({"train": {"nodes": 2}}, "r1", "ml")  # 16 GPUs accumulate 4


def test_training_defaults_follow_the_plan_and_report_to_tensorboard():
    [job] = kinds(render({}, "r1", "ml"), "PyTorchJob")
    assert {"--deepspeed=zero2", "--report-to=tensorboard"} <= set(command(job))


def test_reilx_rules_refuse_a_holdout():
    """REILX's files hold every record: data.rules reilx with records held out is refused at render, not in the pod."""
    with pytest.raises(UserError, match="data.rules reilx writes REILX's files, which hold every record"):
        render({"data": {"rules": "reilx", "holdout": "1%"}}, "r1", "ml")
    [job] = kinds(render({"data": {"rules": "reilx", "holdout": "0"}}, "r1", "ml"), "Job")
    assert job["spec"]["template"]["spec"]["initContainers"][0]["args"][-3:] == ["--rules", "reilx", "--holdout=0"]

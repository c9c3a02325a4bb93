"""The local backend turns rendered pod specs into local processes, as a kubelet and the operator would."""

from pathlib import Path

import pytest

from neosft.backends import pods
from neosft.errors import UserError
from neosft.k8s.kinds import PYTORCHJOB, TRAINJOB, pod_spec
from neosft.k8s.manifests import manifests

SECRETS = {("neosft-s3", "AWS_ACCESS_KEY_ID"): "id", ("neosft-s3", "AWS_SECRET_ACCESS_KEY"): "key"}


def training_process(tmp_path: Path, values: dict, trainer=PYTORCHJOB) -> pods.Process:
    objects = manifests({**values, "train": {**values.get("train", {}), "backend": trainer.name}}, "r1", "local")
    [job] = [o for o in objects if o["kind"] == trainer.kind]
    runtime = next((o for o in objects if o["kind"] == "TrainingRuntime"), None)
    spec = pod_spec(job, runtime)
    [process] = pods.processes(spec, SECRETS, pods.volume_folders(spec, tmp_path), pods.torch_injected(trainer, 1))
    return process


@pytest.mark.parametrize("trainer", [PYTORCHJOB, TRAINJOB])
def test_a_training_container_becomes_its_rendered_command_with_variables_secrets_and_mounts_resolved(
    tmp_path, trainer
):
    process = training_process(tmp_path, {"train": {"gpusPerNode": 1, "set": {"seed": 7}}}, trainer)
    port = process.env["PET_MASTER_PORT" if trainer is TRAINJOB else "MASTER_PORT"]
    assert process.argv[:11] == [
        pods.LAUNCHERS["torchrun"][0],
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=1",
        "--node-rank=0",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "neosft",
        "train",
    ]
    assert process.argv[11] == "--variant=single" and process.argv[-2:] == ["--set", "seed=7"]
    assert process.env["AWS_ACCESS_KEY_ID"] == "id" and process.env["AWS_SECRET_ACCESS_KEY"] == "key"
    assert process.env["NEOSFT_WORK_DIR"] == str(tmp_path / "scratch" / "neosft")  # /scratch is a local folder
    assert (tmp_path / "scratch").is_dir() and not (tmp_path / "dshm").exists()


def test_a_variant_set_reaches_only_its_variant(tmp_path):
    values = {"variants": ["single", "multi"], "train": {"set": {"seed": 1}, "variantSet": {"multi": {"seed": 2}}}}
    commands = {
        o["metadata"]["labels"]["neosft.io/variant"]: o["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
            "containers"
        ][0]["command"]
        for o in manifests(values, "r1", "local")
        if o["kind"] == "PyTorchJob"
    }
    assert commands["single"][-1] == "seed=1" and commands["multi"][-1] == "seed=2"


def test_the_data_job_runs_build_then_release(tmp_path):
    [job] = [o for o in manifests({"data": {"source": "sample"}}, "r1", "local") if o["kind"] == "Job"]
    build, release = pods.processes(pod_spec(job), SECRETS, {}, {})
    assert build.argv[3:6] == ["data", "build", "sample"] and release.argv[3] == "release"


def test_a_trainjob_needs_its_runtime_for_a_pod(tmp_path):
    [job] = [o for o in manifests({"train": {"backend": "trainjob"}}, "r1", "local") if o["kind"] == "TrainJob"]
    with pytest.raises(ValueError, match="without its TrainingRuntime"):
        pod_spec(job)


def test_a_secret_the_local_store_cannot_answer_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="no local value for Secret hf key HF_TOKEN"):
        training_process(tmp_path, {"huggingface": {"tokenSecret": {"name": "hf"}}})

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


def test_a_local_run_is_submitted_waited_for_and_found_again_by_its_id(tmp_path, monkeypatch):
    from neosft.backends import backend_for

    monkeypatch.chdir(tmp_path)  # the local backend keeps its runs under ./.neosft, as `neosft run` does
    said: list[str] = []
    with backend_for(local=True, store=str(tmp_path / "store")) as backend:
        run = backend.render({"train": {"enabled": False}, "data": {"source": "sample"}}, "d1", None, said.append)
        assert run.trainer_kind is None and run.builds_data and run.data_uri == "s3://neosft/data/d1"
        assert run.outputs() == {"data": "s3://neosft/data/d1"} and run.store.folder == str(tmp_path / "store")
        assert backend.submit(run, said.append, said.append) == ["Job/neosft-d1-data"]
        backend.wait("d1", said.append, 600)
    assert [line.split(" ", 1)[1] for line in said] == ["Job/neosft-d1-data: Running", "Job/neosft-d1-data: Succeeded"]

    found = backend_for("d1")  # as another process finds it: by its id, with no server running
    assert found.status("d1").parts[0].state == "Succeeded" and [s.run_id for s in found.runs()] == ["d1"]
    [(_, lines)] = found.logs("d1", "data", follow=True)  # a finished part's log, to its end
    assert any("wrote s3://neosft/data/d1/manifest.json" in line for line in lines)
    assert found.delete("d1") == ["Job/neosft-d1-data"]
    assert not found.holds("d1") and (tmp_path / "store" / "neosft" / "data" / "d1" / "manifest.json").exists()
    with pytest.raises(UserError, match="no local run d1"):
        found.status("d1")


def test_the_seams_hold_nothing_in_k8s_reads_storage_and_only_backends_builds_a_backend():
    import ast

    package = Path(__file__).resolve().parent.parent / "neosft"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        if path.parent.name == "k8s":
            assert not {m for m in imported if m and m.startswith(("neosft.storage", "neosft.runfolder", "boto"))}, path
        if path.parent.name != "backends":
            built = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
            assert not built & {"Local", "Kubernetes"}, f"{path} builds a backend: use neosft.backends.backend_for"


@pytest.mark.parametrize(
    "values",
    [
        {"variants": ["single", "multi"]},
        {"data": {"enabled": False, "uri": "s3://bkt/data/r0"}},
        {"s3": {"bucket": "bkt", "prefix": ""}, "train": {"backend": "trainjob"}},
    ],
)
def test_what_rendering_decided_is_what_the_objects_say(values):
    from neosft.backends import backend_for
    from neosft.backends.state import variant_of
    from neosft.k8s.cluster import OUTPUT_ANNOTATION

    run = backend_for(offline=True).render(values, "r1", None, print)
    annotated = {
        variant_of(o): o["metadata"]["annotations"][OUTPUT_ANNOTATION]
        for o in run.objects
        if OUTPUT_ANNOTATION in (o["metadata"].get("annotations") or {})
    }
    assert run.outputs() == annotated
    trained = [o for o in run.objects if run.trainer_kind and o["kind"] == run.trainer_kind.kind]
    assert [variant_of(o) for o in trained] == list(run.variants)
    assert all(f"--data={run.data_uri}" in str(o["spec"]) for o in trained)

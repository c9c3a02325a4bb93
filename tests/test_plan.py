"""`neosft plan`: the cost of training, from the manifest and the variant table."""

import math

import pytest
from conftest import assert_user_error, neosft

from neosft.data.build import build
from neosft.errors import UserError
from neosft.plan import (
    QWEN2_7B,
    disk,
    lora_parameters,
    memory,
    parameters,
    plan,
    recommend,
    render,
    trainable,
    zero3_checkpoint_bytes,
)
from neosft.sample import SAMPLE_CORPUS
from neosft.train.args import DEFAULT_DEEPSPEED
from neosft.variants import LORA, VARIANTS


def test_qwen2_7b_has_its_published_parameter_count():
    assert parameters(QWEN2_7B) == 7_615_616_512  # "7.62B" on the model card
    assert round(zero3_checkpoint_bytes(parameters(QWEN2_7B)) / 1e9) == 107


@pytest.fixture(scope="module")
def data(tmp_path_factory, qwen_tokenizer):
    dest = tmp_path_factory.mktemp("plan") / "data"
    return str(dest), build(str(SAMPLE_CORPUS), str(dest), tokenizer=str(qwen_tokenizer))


def test_steps_tokens_and_hours_follow_the_table(data):
    uri, manifest = data
    (single,) = plan(uri, ["single"], tokens_per_gpu_s=100)
    rows = manifest.variants["single"].rows
    assert single.rows == rows
    assert single.steps_per_epoch == math.ceil(math.ceil(rows / 8) / 8)
    assert single.total_steps == 5 * single.steps_per_epoch
    assert single.exact and single.tokens == manifest.variants["single"].stats["tokens"]["total_within_cutoff"]
    assert single.gpu_hours == pytest.approx(5 * single.tokens / 100 / 3600)
    (on16,) = plan(uri, ["single"], tokens_per_gpu_s=100, gpus=16)  # 16 x 1 x 4: the same 64 rows per step
    assert on16.steps_per_epoch == math.ceil(math.ceil(rows / 16) / 4)
    with pytest.raises(UserError, match="not divisible by 3 device"):
        plan(uri, ["single"], gpus=3)


def test_render_names_every_variant_and_the_assumptions(data):
    text = render(plan(data[0], list(VARIANTS)), 3000)
    for name, v in VARIANTS.items():
        assert any(line.startswith(name) and f"{v.cutoff_len}" in line for line in text.splitlines())
    assert "3,000 tokens/s per GPU" in text and "107 GB" in text
    assert "disk per training node: " in text and "3 checkpoints 320 GB" in text


def test_node_disk_counts_checkpoints_model_and_tokens(data):
    plans = plan(data[0], ["single"])
    one, two = disk(plans, 8), disk(plans, 16)
    params = parameters(QWEN2_7B)
    assert one.checkpoints == 3 * zero3_checkpoint_bytes(params) and two.checkpoints == one.checkpoints // 2
    assert one.model == one.final == 2 * params and one.tokens == 8 * plans[0].tokens
    assert one.total == one.checkpoints + one.final + one.model + one.tokens


def test_gpu_memory_uses_deepspeeds_estimators_and_recommends_zero2_on_8x80():
    params = parameters(QWEN2_7B)
    zero2, zero3 = memory("zero2", 8, 4096), memory("zero3", 8, 4096)
    assert zero2.model_states == 2 * params + 18 * params // 8  # bf16 weights everywhere, the rest sharded
    assert zero3.model_states == 4 * QWEN2_7B["vocab_size"] * QWEN2_7B["hidden_size"] + 18 * params // 8
    assert zero2.logits == 4096 * QWEN2_7B["vocab_size"] * 10 and memory("zero2", 8, 4096, liger=True).logits == 0
    assert memory("zero2", 8, 8192).activations == 2 * zero2.activations
    options, advice = recommend(80, 8, 8192)
    assert [m.stage for m in options] == ["zero2", "zero3"] and advice.startswith("recommended: --deepspeed zero2")
    assert recommend(40, 8, 8192)[1].startswith("recommended: --deepspeed zero3")
    assert recommend(80, 1, 4096)[1].startswith("does not fit")


def test_plan_command_prints_memory_and_a_recommendation_without_a_dataset(tmp_path):
    result = neosft("plan", "--variant", "single", "--gpu-memory", "80", "--data", tmp_path / "none")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "cutoff_len 4096 (single)" in lines[0]
    assert lines[2].split()[0] == "zero2" and lines[3].split()[0] == "zero3" and float(lines[2].split()[-1]) < 80
    assert any(line.startswith("recommended: --deepspeed zero2") for line in lines)
    assert "no steps or hours" in result.stderr
    assert_user_error(neosft("plan", "--gpus", "3"), "not divisible by 3 device")


def test_without_token_stats_the_plan_says_it_estimates(tmp_path):
    build(str(SAMPLE_CORPUS), str(tmp_path / "d"), ["multi"])
    (p,) = plan(str(tmp_path / "d"), ["multi"])
    assert not p.exact and p.over_cutoff is None and p.tokens > 0
    assert "estimated" in render([p], 3000)


def test_missing_dataset_or_variant_is_a_clear_error(tmp_path, data):
    with pytest.raises(UserError, match="no dataset at .* build it with `neosft data build SOURCE --out"):
        plan(str(tmp_path / "nothing"), ["single"])
    build(str(SAMPLE_CORPUS), str(tmp_path / "d"), ["multi"])
    with pytest.raises(UserError, match="has no 'single' dataset"):
        plan(str(tmp_path / "d"), ["single"])


def test_without_data_the_plan_reads_the_newest_local_runs_dataset(tmp_path):
    assert_user_error(
        neosft("plan", "--variant", "multi", cwd=tmp_path), "no dataset in .neosft/store: run `neosft run` first"
    )
    data = tmp_path / ".neosft" / "store" / "neosft" / "data"
    build(str(SAMPLE_CORPUS), str(data / "r1"), ["single"])  # each `neosft run` builds its own dataset folder
    build(str(SAMPLE_CORPUS), str(data / "r2"), ["multi"])
    result = neosft("plan", "--variant", "multi", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["multi"] for line in result.stdout.splitlines())


def test_lora_adapter_of_qwen2_7b_is_the_published_80_7_mb():
    assert lora_parameters(QWEN2_7B, 1) == 2_523_136  # the 7 projections of 28 layers, per unit of rank
    assert 2 * lora_parameters(QWEN2_7B, LORA.rank) == 80_740_352  # r 16 in bf16: the published 80.7 MB
    assert trainable(LORA) == 16 * 2_523_136 and trainable(None) == parameters(QWEN2_7B)


def test_lora_memory_is_a_frozen_base_and_the_adapters_states_and_picks_the_trainers_default():
    params, adapter = parameters(QWEN2_7B), lora_parameters(QWEN2_7B, 16)
    zero2, zero3 = memory("zero2", 8, 4096, lora=LORA), memory("zero3", 8, 4096, lora=LORA)
    assert zero2.model_states == 2 * params + 2 * adapter + 18 * adapter // 8
    largest = QWEN2_7B["vocab_size"] * QWEN2_7B["hidden_size"]
    assert zero3.model_states == math.ceil(2 * params / 8) + 4 * largest + 18 * adapter // 8
    assert zero2.model_states < memory("zero2", 8, 4096).model_states / 2
    _, advice = recommend(80, 8, 8192, LORA)
    assert advice.startswith(f"recommended: --deepspeed {DEFAULT_DEEPSPEED['lora']}")
    _, advice = recommend(80, 8, 8192)
    assert advice.startswith("recommended: --deepspeed zero2")  # full fine-tuning fits too; the trainer's zero3 is safe
    assert recommend(32, 8, 8192, LORA)[1].startswith("recommended: --deepspeed zero3")


def test_lora_plan_prints_the_adapter_its_checkpoints_disk_and_faster_hours(data):
    uri, _ = data
    plans = plan(uri, ["single"])
    lora, full = disk(plans, 8, LORA), disk(plans, 8)
    adapter = lora_parameters(QWEN2_7B, 16)
    assert lora.final == 2 * adapter and lora.checkpoints == 3 * zero3_checkpoint_bytes(adapter)
    assert lora.model == full.model and lora.total < full.total / 3
    result = neosft("plan", "--variant", "single", "--data", uri, "--method", "lora")
    assert result.returncode == 0, result.stderr
    assert "adapter 80.7 MB in bf16" in result.stdout and "2,523,136 per unit of rank" in result.stdout
    assert "14,100 tokens/s per GPU" in result.stdout  # NVIDIA's published Qwen2.5-7B LoRA on one H100
    full_run = neosft("plan", "--variant", "single", "--data", uri, "--method", "full")
    assert "107 GB" in full_run.stdout and "adapter" not in full_run.stdout
    hours = lambda text: float(next(line for line in text.splitlines() if line.startswith("single")).split()[-2])  # noqa: E731
    assert hours(result.stdout) == pytest.approx(hours(full_run.stdout) * 3 / 4, rel=0.05)


def test_plan_per_gpu_type_and_from_a_finished_run(data, tmp_path):
    """Hours scale with the GPU's published throughput (A100: 312 of H100's 989 bf16 TFLOPS), and `--from RUN`
    plans at the tokens/s that run measured (tokens / train runtime / world size in its run.json)."""
    from neosft.artifacts import RunRecord
    from neosft.storage import location

    uri, _ = data
    hours = lambda text: float(next(line for line in text.splitlines() if line.startswith("single")).split()[-2])  # noqa: E731
    args = ("plan", "--variant", "single", "--data", uri, "--method", "full")
    a100, h100 = neosft(*args, "--gpu", "a100"), neosft(*args, "--gpu", "h100")
    assert a100.returncode == 0 and h100.returncode == 0, a100.stderr + h100.stderr
    assert hours(a100.stdout) == pytest.approx(hours(h100.stdout) * 989 / 312, rel=0.05)
    run = tmp_path / "run"
    RunRecord(
        **dict.fromkeys(("variant", "model", "deepspeed", "chat_format", "default_system", "report_to", "neosft_version"), "x"),
        **dict.fromkeys(("hyperparameters", "overrides", "training_arguments", "batch", "dataset"), {}),
        packing=False, liger=False, samples=1, truncated=0, resumed_from=None, steps=1, wall_time_s=1.0,
        train_loss=1.0, final_loss=1.0, tokens=8_000_000, train_runtime_s=100.0, world_size=8,
    ).write(location(str(run)))  # fmt: skip
    measured = neosft(*args, "--from", run)
    assert measured.returncode == 0, measured.stderr
    assert "10,000 tokens/s per GPU" in measured.stdout and "measured by" in measured.stdout
    assert_user_error(neosft(*args, "--from", run, "--tokens-per-gpu-s", "5"), "--from")
    assert_user_error(neosft(*args, "--from", tmp_path / "none"), "no finished run")

"""`neosft plan`: the cost of training, from the manifest and the variant table."""

import math

import pytest

from neosft.data.build import build
from neosft.errors import UserError
from neosft.plan import QWEN2_7B, parameters, plan, render, zero3_checkpoint_bytes
from neosft.sample import SAMPLE_CORPUS
from neosft.variants import VARIANTS


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


def test_render_names_every_variant_and_the_assumptions(data):
    text = render(plan(data[0], list(VARIANTS)), 3000)
    for name, v in VARIANTS.items():
        assert any(line.startswith(name) and f"{v.cutoff_len}" in line for line in text.splitlines())
    assert "3,000 tokens/s per GPU" in text and "107 GB" in text


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

"""LoRA, the default method: `neosft train` on a tiny Qwen2 leaves LLaMA-Factory's adapter in final/, and
`neosft merge` turns it into plain weights with the same logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_user_error, neosft

from neosft.artifacts import RunRecord
from neosft.data.build import build
from neosft.storage import location
from neosft.variants import LORA

STEPS = ["--max-steps", "2", "--set", "cutoff_len=128", "--set", "gradient_accumulation_steps=2"]


def llamafactory_lora_targets(model) -> list[str]:
    """LLaMA-Factory 0.9.5's `find_all_linear_modules` (src/llamafactory/model/model_utils/misc.py) for a Qwen2,
    re-implemented: forbidden modules {"lm_head"}; a module counts when its class name holds "Linear" and not
    "Embedding"; its last name part is the target."""
    forbidden = {"lm_head"}
    names = set()
    for name, module in model.named_modules():
        if any(f in name for f in forbidden):
            continue
        if "Linear" in module.__class__.__name__ and "Embedding" not in module.__class__.__name__:
            names.add(name.split(".")[-1])
    return list(names)


def llamafactory_trainable(model, rank: int) -> dict[str, tuple[int, ...]]:
    """The tensors LLaMA-Factory's `finetuning_type: lora, lora_target: all` saves: for every module whose name ends
    in a target, lora_A (rank x in) and lora_B (out x rank), named as PEFT saves them (adapter name dropped)."""
    targets = set(llamafactory_lora_targets(model))
    shapes = {}
    for name, module in model.named_modules():
        if name.split(".")[-1] in targets:
            shapes[f"base_model.model.{name}.lora_A.weight"] = (rank, module.in_features)
            shapes[f"base_model.model.{name}.lora_B.weight"] = (module.out_features, rank)
    return shapes


@pytest.fixture(scope="module")
def lora_run(sample_dataset, tiny_model, tmp_path_factory):
    """`neosft train` with no --method, on one CPU process."""
    out = tmp_path_factory.mktemp("lora") / "out"
    result = neosft(
        "train",
        "--variant",
        "single",
        "--data",
        sample_dataset,
        "--output",
        out,
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--work-dir",
        out.parent / "work",
        *STEPS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_default_train_leaves_llamafactorys_adapter(lora_run, tiny_model):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    final = lora_run / "final"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "run.json"} <= {
        p.name for p in final.iterdir()
    }
    assert not (final / "model.safetensors").exists()
    config = json.loads((final / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert config["base_model_name_or_path"] == str(tiny_model) and config["peft_type"] == "LORA"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (16, 32, 0.0)
    assert config["lora_alpha"] / config["r"] == 2  # LLaMA-Factory's scaling at lora_rank 16, lora_alpha 32
    assert config["bias"] == "none" and not config["modules_to_save"] and config["task_type"] == "CAUSAL_LM"
    assert sorted(config["target_modules"]) == sorted(llamafactory_lora_targets(base))
    assert sorted(config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]

    tensors = load_file(str(final / "adapter_model.safetensors"))
    assert {name: tuple(t.shape) for name, t in tensors.items()} == llamafactory_trainable(base, 16)
    assert all(t.dtype == torch.float32 for t in tensors.values())  # trained in fp32 on CPU, saved as trained
    assert any(t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name), "the adapter did not train"

    run = RunRecord.read(location(str(lora_run)))
    assert run.method == "lora" and run.deepspeed == "none" and run.steps == 2
    assert run.lora == {**LORA.record(), "target_modules": sorted(config["target_modules"]), "adapter_dtype": "float32"}


def test_the_adapter_loads_with_peft_and_changes_the_model(lora_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, str(lora_run / "final"))
    assert not torch.allclose(tuned(ids).logits, before)


def test_merge_gives_plain_weights_with_the_same_logits(lora_run, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 9, 42, 7, 3, 11, 2]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        expected = PeftModel.from_pretrained(base, str(lora_run / "final"))(ids).logits

    result = neosft("merge", lora_run, "--to", tmp_path / "fp32")  # by default in the base's dtype: float32
    assert result.returncode == 0, result.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32", dtype="auto")
    assert merged.dtype == torch.float32 == AutoModelForCausalLM.from_pretrained(tiny_model, dtype="auto").dtype
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)

    result = neosft("merge", lora_run, "--to", tmp_path / "bf16", "--dtype", "bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert merged.dtype == torch.bfloat16 and (tmp_path / "bf16" / "tokenizer.json").exists()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits.float(), expected, atol=0.05)


def test_merge_refuses_what_it_cannot_merge(lora_run, tmp_path):
    assert_user_error(neosft("merge", tmp_path / "nothing", "--to", tmp_path / "m"), "no finished run")


def test_lora_settings_are_checked_before_anything_loads(sample_dataset, tiny_model, tmp_path):
    args = [
        "train",
        "--variant",
        "single",
        "--data",
        sample_dataset,
        "--output",
        tmp_path / "o",
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--work-dir",
        tmp_path / "w",
        *STEPS,
    ]
    assert_user_error(neosft(*args, "--lora-target", "qq_proj"), "--lora-target qq_proj", "q_proj")
    assert_user_error(neosft(*args, "--lora-target", " , "), "--lora-target")
    assert_user_error(neosft(*args, "--method", "full", "--merge"), "--merge")
    assert_user_error(neosft(*args, "--method", "full", "--lora-rank", "8"), "need --method lora")


def test_the_adapter_is_seeded_so_a_second_run_trains_the_same_one(lora_run, sample_dataset, tiny_model, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "again"
    result = neosft(
        "train",
        "--variant",
        "single",
        "--data",
        sample_dataset,
        "--output",
        out,
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--work-dir",
        tmp_path / "work",
        *STEPS,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (load_file(str(o / "final" / "adapter_model.safetensors")) for o in (lora_run, out))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_train_merge_writes_merged_weights_beside_final_once(lora_run, sample_dataset, tiny_model):
    from transformers import AutoModelForCausalLM

    args = [
        "train",
        "--variant",
        "single",
        "--data",
        sample_dataset,
        "--output",
        lora_run,
        "--model",
        tiny_model,
        "--deepspeed",
        "none",
        "--work-dir",
        lora_run.parent / "work",
        *STEPS,
        "--merge",
    ]
    result = neosft(*args)  # the run finished without --merge: it is not trained again, only merged
    assert result.returncode == 0, result.stderr[-3000:]
    assert "holds a finished run" in result.stderr and (lora_run / "merged" / "config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(lora_run / "merged", dtype="auto")
    assert merged.dtype == torch.float32 and not any("lora" in name for name, _ in merged.named_parameters())
    stamp = (lora_run / "merged" / "model.safetensors").stat().st_mtime_ns
    assert neosft(*args).returncode == 0
    assert (lora_run / "merged" / "model.safetensors").stat().st_mtime_ns == stamp  # merged already: left as it is


def test_variants_prints_the_lora_settings_from_the_one_table():
    text = neosft("variants").stdout
    assert "method: lora" in text and all(f"  {key} = {value}" in text for key, value in LORA.record().items())
    table = json.loads(neosft("variants", "--json").stdout)
    assert table["method"] == "lora" and table["lora"] == {**LORA.record()} and LORA.scaling == 2


def _retarget(output: Path, base: Path) -> None:
    """OUTPUT's run record and adapter config naming `base` as the model they trained from."""
    for name in ("final/run.json", "final/adapter_config.json"):
        fields = json.loads((output / name).read_text())
        fields["model" if name.endswith("run.json") else "base_model_name_or_path"] = str(base)
        (output / name).write_text(json.dumps(fields))


def _truncated(output: Path) -> None:
    weights = output / "final" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])


def _another_rank(output: Path) -> None:
    config = output / "final" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "r": 4}))


def _base_deleted(output: Path) -> None:  # as `neosft delete` removes a local run's tiny model
    base = output.parent / "base"
    shutil.copytree(json.loads((output / "final" / "run.json").read_text())["model"], base)
    _retarget(output, base)
    shutil.rmtree(base)


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_truncated, "adapter_model.safetensors: not a readable safetensors file"),
        (_another_rank, "adapter_config.json: rank 4, but adapter_model.safetensors holds rank 16"),
        (_base_deleted, "does not exist"),
    ],
)
def test_a_damaged_adapter_is_one_line_naming_the_file_in_merge_and_eval(lora_run, tmp_path, damage, needle):
    """Issue 27 item 13: each was a traceback from safetensors or peft."""
    output = tmp_path / "run" / "single"
    shutil.copytree(lora_run, output)
    damage(output)
    build("sample", str(tmp_path / "held"), holdout="20%")  # the run's own dataset has none
    for result in (
        neosft("merge", output, "--to", tmp_path / "m"),
        neosft("eval", output, "--data", tmp_path / "held", "--samples", "0"),
    ):  # progress lines, then one error line naming the run's file
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: {output}/final/") and needle in error, error
    assert not (tmp_path / "m").exists()

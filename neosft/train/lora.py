"""LoRA with peft: the target rule (LLaMA-Factory's `lora_target: all`), the adapter put on the model, the adapter
file in the training dtype, and `neosft merge` (base + adapter -> plain transformers weights)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from neosft.artifacts import RunRecord
from neosft.errors import UserError
from neosft.progress import log
from neosft.storage import location
from neosft.variants import Lora

ADAPTER_WEIGHTS = "adapter_model.safetensors"
EXCLUDED = "lm_head"  # LLaMA-Factory's forbidden module for a decoder such as Qwen2
MERGE_DTYPES = ("base", "bf16")


def linear_modules(model) -> list[str]:
    """LLaMA-Factory's `find_all_linear_modules` (src/llamafactory/model/model_utils/misc.py, v0.9.5) on a decoder:
    the last name part of every module whose class name holds `Linear` and not `Embedding`, skipping every module
    whose path holds `lm_head`. On Qwen2: q/k/v/o_proj and gate/up/down_proj."""
    names = set()
    for name, module in model.named_modules():
        kind = type(module).__name__
        if EXCLUDED not in name and "Linear" in kind and "Embedding" not in kind:
            names.add(name.split(".")[-1])
    return sorted(names)


def target_modules(model, lora: Lora) -> list[str]:
    """The module names the adapter wraps (`all` resolved on `model`), each checked present and its rank in bounds
    (`Lora.fits`)."""
    wanted = set(linear_modules(model)) | set(lora.targets())
    linear: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        last = name.split(".")[-1]
        if last in wanted:  # a Linear's features, an Embedding's size; another module is not bound here
            sides = (
                getattr(module, "in_features", getattr(module, "num_embeddings", sys.maxsize)),
                getattr(module, "out_features", getattr(module, "embedding_dim", sys.maxsize)),
            )
            linear[last] = min(linear.get(last, sides), sides)
    return lora.fits(linear, "the model")


def config_targets(config, lora: Lora) -> list[str]:
    """`target_modules` on the model of `config`, built on the meta device: no weights, a bad target is refused early."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return target_modules(AutoModelForCausalLM.from_config(config), lora)


def with_adapter(model, lora: Lora, targets: list[str], gradient_checkpointing: bool, seed: int):
    """`model` frozen, with a new LoRA adapter on the `targets` (a `peft.PeftModel`), its random lora_A drawn after
    seeding with `seed`: the same on every rank and in every run (a resumed run's reference included). With gradient
    checkpointing the embeddings' outputs require gradients, as LLaMA-Factory sets them, so every checkpointed layer
    back-propagates."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import set_seed

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        modules_to_save=list(lora.modules_to_save) or None,
    )
    if gradient_checkpointing:
        model.enable_input_require_grads()
    set_seed(seed)
    return get_peft_model(model, config)


def cast_adapter(folder: Path, bf16: bool) -> str:
    """Store `folder`'s adapter weights in the training dtype (bf16 when training in bf16, as DeepSpeed's bf16 engine
    saves them); returns that dtype's name."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / ADAPTER_WEIGHTS
    dtype = torch.bfloat16 if bf16 else torch.float32
    tensors = load_file(str(path))
    if any(t.dtype != dtype for t in tensors.values()):
        save_file({k: t.to(dtype).contiguous() for k, t in tensors.items()}, str(path), metadata={"format": "pt"})
    return str(dtype).removeprefix("torch.")


def checked_adapter(folder: Path, name: str | None = None) -> str:
    """The base model that the adapter in `folder` (a run's final/) names, once the adapter is checked whole: a
    `UserError` names the file and what is wrong (an unreadable config, a local base model that is gone, as
    `neosft delete` removes a local run's, a truncated weights file, a config of another rank than its weights).
    `name`: where the user knows `folder` (a local copy's source)."""
    from safetensors import SafetensorError, safe_open

    config, weights = f"{name or folder}/adapter_config.json", f"{name or folder}/{ADAPTER_WEIGHTS}"
    try:
        fields = json.loads((folder / "adapter_config.json").read_text())
        base, rank = fields.get("base_model_name_or_path"), fields.get("r")
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{config}: not a readable adapter config (damaged?); train the run again") from None
    if not isinstance(base, str) or not base:
        raise UserError(f"{config}: names no base model (base_model_name_or_path)")
    if base.startswith(("/", ".")) and not Path(base).is_dir():
        raise UserError(f"{config}: its base model {base} does not exist (deleted with its run?)")
    try:
        with safe_open(str(folder / ADAPTER_WEIGHTS), "pt") as f:
            ranks = {f.get_slice(k).get_shape()[0] for k in f.keys() if ".lora_A." in k}  # noqa: SIM118  # no __iter__
    except (OSError, SafetensorError) as e:
        raise UserError(f"{weights}: not a readable safetensors file (truncated or damaged: {e})") from None
    if ranks and ranks != {rank}:
        raise UserError(f"{config}: rank {rank}, but {ADAPTER_WEIGHTS} holds rank {min(ranks)}: not this adapter's")
    return base


def load_adapter(base, folder: Path):
    """`base` (a loaded model) with the adapter in `folder` (checked by `checked_adapter`), a `peft.PeftModel`."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(base, str(folder))
    except (RuntimeError, ValueError, KeyError) as e:  # peft: weights that do not fit the model or the config
        raise UserError(f"{folder}: the adapter does not fit its base model ({str(e).splitlines()[0][:200]})") from None


def merge(output: str, dest: str, dtype: str = "base") -> None:
    """Merge OUTPUT's LoRA adapter into its base model and write plain transformers weights (safetensors), config and
    tokenizer to DEST (config.json last): in the base model's own dtype (`base`, its config's), or in bf16."""
    if dtype not in MERGE_DTYPES:
        raise UserError(f"--dtype {dtype}: choose from {', '.join(MERGE_DTYPES)}")
    run = location(output.rstrip("/"))
    record = RunRecord.read(run)
    if record is None:
        raise UserError(f"{output} holds no finished run (no final/run.json): nothing to merge")
    if record.method != "lora":
        raise UserError(f"{output} was trained with --method {record.method}: final/ already holds full weights")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="neosft-merge-") as tmp:
        adapter, merged = Path(tmp) / "adapter", Path(tmp) / "merged"
        (run / "final").download_dir(adapter)
        checked_adapter(adapter, f"{output.rstrip('/')}/final")
        log(f"merging {output}/final into {record.model} ({dtype})")
        try:
            base = AutoModelForCausalLM.from_pretrained(
                record.model, dtype=torch.bfloat16 if dtype == "bf16" else "auto"
            )
        except (OSError, ValueError) as e:
            raise UserError(f"base model {record.model} of {output}: cannot load it ({e})") from None
        model = load_adapter(base, adapter).merge_and_unload()
        model.save_pretrained(str(merged))
        AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(merged))
        target = location(dest.rstrip("/"))
        files = sorted(p for p in merged.rglob("*") if p.is_file() and p.name != "config.json")
        for path in [*files, merged / "config.json"]:  # config.json last: once it is there, the merge is complete
            (target / path.relative_to(merged).as_posix()).upload(path)

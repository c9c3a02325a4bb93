"""Scoring without gradients: the summed cross-entropy of a causal LM over label tokens, and greedy answers.

Samples are sorted by length and cut into batches of at most `batch_tokens` padded tokens, so padding stays small;
the LM head runs only on the positions that have a label (a 152k-token vocabulary makes full logits the biggest
cost), in chunks. Batches are dealt round-robin over the ranks and the sums added up.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from neosft.artifacts import MAX_NUMBER, LossSummary
from neosft.eval import GENERATE_BATCH
from neosft.train import dist
from neosft.train.tokenize import IGNORE_INDEX

BATCH_TOKENS = 16384
HEAD_CHUNK = 4096  # label positions per LM-head call


def batches(lengths: np.ndarray, batch_tokens: int) -> list[list[int]]:
    """Sample indices by length, longest first, in batches whose padded size (rows x longest) fits `batch_tokens`
    (a sample longer than that alone)."""
    out: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable").tolist():
        if out and (len(out[-1]) + 1) * int(lengths[out[-1][0]]) <= batch_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _causal(model):
    """The causal LM under a PEFT wrapper (its LoRA layers are injected in place) or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.inference_mode()
def score(model, samples, pad_id: int, batch_tokens: int = BATCH_TOKENS) -> tuple[float, int, int]:
    """(summed cross-entropy, label tokens, input tokens) of `samples` (anything with `lengths` and `sample(i)`, as
    `Tokens` and `Labeled`), over every rank: this rank scores every world-size-th batch."""
    causal, device = _causal(model), next(model.parameters()).device
    total, labels_n, inputs_n = torch.zeros((), dtype=torch.float64, device=device), 0, 0
    rank, world = dist.shard()
    for b in batches(samples.lengths, batch_tokens)[rank::world]:
        rows = [samples.sample(i) for i in b]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        where = targets != IGNORE_INDEX
        picked, wanted = hidden[where], targets[where]
        for start in range(0, len(wanted), HEAD_CHUNK):
            logits = causal.lm_head(picked[start : start + HEAD_CHUNK]).float()
            total += F.cross_entropy(logits, wanted[start : start + HEAD_CHUNK], reduction="sum").double()
        labels_n += int(where.sum())
        inputs_n += int(mask.sum())
    sums = torch.tensor([float(total), labels_n, inputs_n], dtype=torch.float64, device=device)
    dist.all_reduce_sum(sums)
    return float(sums[0]), int(sums[1]), int(sums[2])


def summary(loss_sum: float, tokens: int, samples: int) -> LossSummary:
    """The token-weighted mean and its perplexity (NaN where there is no label token or the model diverged;
    Infinity past what an eval record holds)."""
    loss = loss_sum / tokens if tokens else math.nan
    perplexity = math.inf if loss > math.log(MAX_NUMBER) else math.exp(loss)  # NaN stays NaN
    return LossSummary(round(loss, 6), round(perplexity, 4), tokens, samples)


@torch.inference_mode()
def answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch: int = GENERATE_BATCH) -> list[str]:
    """Greedy answers to `prompts` (chat text ending with the assistant header), shared over the ranks, in order."""
    device = next(model.parameters()).device
    rank, world = dist.shard()
    mine = list(range(rank, len(prompts), world))
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: dict[int, str] = {}
    try:
        for start in range(0, len(mine), batch):
            chunk = mine[start : start + batch]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            generated = model.generate(
                **enc.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            for i, row in zip(chunk, generated[:, enc["input_ids"].shape[1] :]):
                out[i] = tokenizer.decode(row, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    merged: dict[int, str] = {}
    for part in dist.all_gather_objects(out):
        merged.update(part)
    return [merged[i] for i in range(len(prompts))]

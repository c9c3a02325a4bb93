"""Scoring without gradients: the summed cross-entropy of a causal LM over label tokens, and greedy answers.

Samples are sorted by length and cut into batches of at most `batch_tokens` padded tokens, so padding stays small;
the LM head runs only on the positions that have a label (a 152k-token vocabulary makes full logits the biggest
cost), in chunks. Batches are dealt round-robin over the ranks and the sums added up.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Scores:
    """Per sample (in the samples' order): the summed cross-entropy and the label-token count; and the input tokens
    scored."""

    loss: np.ndarray  # float64
    labels: np.ndarray  # int64
    inputs: int

    def summary(self) -> LossSummary:
        """The token-weighted mean over every sample and its perplexity (NaN where there is no label token)."""
        tokens = int(self.labels.sum())
        loss = float(self.loss.sum()) / tokens if tokens else float("nan")
        return LossSummary(round(loss, 6), round(math.exp(loss), 4) if tokens else float("nan"), tokens, len(self.loss))


@torch.inference_mode()
def score(model, samples, pad_id: int, batch_tokens: int = BATCH_TOKENS) -> Scores:
    """The `Scores` of `samples` (anything with `lengths` and `sample(i)`, as `Tokens` and `Labeled`), over every
    rank: this rank scores every world-size-th batch, and each sample's sums meet in one all-reduce."""
    causal, device = _causal(model), next(model.parameters()).device
    n = len(samples.lengths)
    per_sample = torch.zeros((2, n), dtype=torch.float64, device=device)  # summed loss, label tokens
    inputs_n = 0
    rank, world = dist.shard()
    for b in batches(samples.lengths, batch_tokens)[rank::world]:
        rows = [samples.sample(i) for i in b]
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[j, :k], labels[j, :k], mask[j, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        where = targets != IGNORE_INDEX
        picked, wanted = hidden[where], targets[where]
        owner = torch.tensor(b, dtype=torch.long, device=device)[where.nonzero()[:, 0]]  # each label's sample
        for start in range(0, len(wanted), HEAD_CHUNK):
            logits = causal.lm_head(picked[start : start + HEAD_CHUNK]).float()
            losses = F.cross_entropy(logits, wanted[start : start + HEAD_CHUNK], reduction="none").double()
            per_sample[0].index_add_(0, owner[start : start + HEAD_CHUNK], losses)
        per_sample[1].index_add_(0, owner, torch.ones_like(owner, dtype=torch.float64))
        inputs_n += int(mask.sum())
    inputs = torch.tensor([inputs_n], dtype=torch.float64, device=device)
    dist.all_reduce_sum(per_sample)
    dist.all_reduce_sum(inputs)
    sums = per_sample.cpu().numpy()
    return Scores(sums[0], sums[1].round().astype(np.int64), int(inputs[0]))


def greedy(model, tokenizer, max_new_tokens: int):
    """The model's own generation config (its end tokens, repetition penalty, ...), made greedy: sampling off and its
    sampling settings cleared, `max_new_tokens` long; pad and end tokens from the tokenizer only where it has none."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample, config.num_beams = False, 1
    config.temperature = config.top_p = config.top_k = None
    config.max_new_tokens, config.max_length = max_new_tokens, None
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def summary(loss_sum: float, tokens: int, samples: int) -> LossSummary:
    """The token-weighted mean and its perplexity (NaN where there is no label token or the model diverged;
    Infinity past what an eval record holds)."""
    loss = loss_sum / tokens if tokens else math.nan
    perplexity = math.inf if loss > math.log(MAX_NUMBER) else math.exp(loss)  # NaN stays NaN
    return LossSummary(round(loss, 6), round(perplexity, 4), tokens, samples)


@torch.inference_mode()
def answers(model, tokenizer, prompts: list[str], max_new_tokens: int, batch: int = GENERATE_BATCH) -> list[str]:
    """Greedy answers to `prompts` (chat text ending with the assistant header), shared over the ranks, in order: each
    rank's prompts by length in batches of `batch`, left-padded so every answer starts at the batch's last column."""
    device = next(model.parameters()).device
    config = greedy(model, tokenizer, max_new_tokens)
    rank, world = dist.shard()
    mine = sorted(range(rank, len(prompts), world), key=lambda i: len(prompts[i]))  # similar lengths pad less
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: dict[int, str] = {}
    try:
        for start in range(0, len(mine), batch):
            chunk = mine[start : start + batch]
            enc = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            generated = model.generate(**enc.to(device), generation_config=config)
            for i, row in zip(chunk, generated[:, enc["input_ids"].shape[1] :]):
                out[i] = tokenizer.decode(row, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    merged: dict[int, str] = {}
    for part in dist.all_gather_objects(out):
        merged.update(part)
    return [merged[i] for i in range(len(prompts))]

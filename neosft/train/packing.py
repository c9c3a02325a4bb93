"""Packing: several samples per sequence up to cutoff_len, with no attention across sample borders.

Samples are grouped by best-fit decreasing. A packed batch is flattened into one row whose
`position_ids` restart at every sample: flash-attention turns them into variable-length attention,
and SDPA/eager into a block-diagonal causal mask, so each sample sees only itself.
"""

from __future__ import annotations

import numpy as np
import torch

from neosft.train.tokenize import Tokens


def pack(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Indices of the samples in each sequence: every sample in one, none over `capacity` tokens."""
    bins: list[list[int]] = []
    by_room: list[list[int]] = [[] for _ in range(capacity + 1)]  # open sequences by tokens left
    has_room = np.zeros(capacity + 1, dtype=bool)
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        fits = np.flatnonzero(has_room[n:])
        if fits.size:  # the fullest sequence that still fits it
            room = n + int(fits[0])
            b = by_room[room].pop()
            has_room[room] = bool(by_room[room])
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(int(i))
        by_room[room - n].append(b)
        has_room[room - n] = True
    return bins


class SampleDataset(torch.utils.data.Dataset):
    """One sample per item; `indices` selects a split."""

    def __init__(self, tokens: Tokens, indices: np.ndarray):
        self.tokens, self.indices = tokens, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.tokens.sample(int(self.indices[i]))


class PackedDataset(torch.utils.data.Dataset):
    """One packed sequence (a list of samples) per item."""

    def __init__(self, tokens: Tokens, indices: np.ndarray, capacity: int):
        self.tokens, self.indices = tokens, indices
        self.bins = pack(tokens.lengths[indices], capacity)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, i: int) -> dict:
        return {"samples": [self.tokens.sample(int(self.indices[j])) for j in self.bins[i]]}


class FlattenCollator:
    """Packed items -> one row of input_ids, labels and restarting position_ids (no attention_mask)."""

    def __init__(self):
        from transformers import DataCollatorWithFlattening

        self.flatten = DataCollatorWithFlattening(return_position_ids=True)

    def __call__(self, items: list[dict]) -> dict:
        return self.flatten([sample for item in items for sample in item["samples"]])

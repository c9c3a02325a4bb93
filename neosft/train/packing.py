"""Packing: several samples per sequence up to cutoff_len, with no attention across sample borders.

Samples are grouped by best-fit decreasing. A packed batch is flattened into one row whose
`position_ids` restart at every sample: flash-attention turns them into variable-length attention,
SDPA/eager into a block-diagonal causal mask, and `varlen_sdpa` (used where flash-attention is not
installed) into one causal SDPA per sample, so each sample sees only itself at the cost of its own length.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

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


VARLEN_ATTENTION = "neosft_varlen_sdpa"


def varlen_sdpa(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids=None,
    **kwargs,
):
    """Causal SDPA over each packed sample on its own (a transformers attention function, for batches of one row)."""
    assert query.shape[0] == 1, "packed batches are flattened into one row"
    starts = (torch.diff(position_ids[0]) != 1).nonzero().flatten() + 1
    bounds = [0, *starts.tolist(), query.shape[2]]
    out = torch.cat(
        [
            F.scaled_dot_product_attention(
                query[:, :, a:b],
                key[:, :, a:b],
                value[:, :, a:b],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=True,
            )
            for a, b in itertools.pairwise(bounds)
        ],
        dim=2,
    )
    return out.transpose(1, 2).contiguous(), None


def attention_implementation(packing: bool) -> str:
    """flash-attention 2 on a GPU where it imports (packed rows: variable-length attention); else, with packing, one
    SDPA per packed sample, else SDPA. An installed flash_attn whose import fails (a wheel built for another torch or
    CUDA: undefined symbols) is not chosen: the run says so and uses the fallback."""
    if torch.cuda.is_available() and flash_attn_imports():
        return "flash_attention_2"
    return register_varlen_attention() if packing else "sdpa"


def flash_attn_imports() -> bool:
    """Whether `import flash_attn` works here (a found package whose extension does not load is logged, not used)."""
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        return False
    try:
        import flash_attn  # noqa: F401
    except (ImportError, OSError) as e:
        from neosft.progress import log

        log(f"warning: flash_attn is installed but does not import ({e}); attention falls back to SDPA")
        return False
    return True


def register_varlen_attention() -> str:
    """Make `attn_implementation=VARLEN_ATTENTION` available; its samples' borders replace the attention mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa)
    AttentionMaskInterface.register(VARLEN_ATTENTION, lambda *args, **kwargs: None)
    return VARLEN_ATTENTION

"""The variant's dataset, checked against its manifest and tokenized once for every rank.

Global rank 0 tokenizes and stores the tokens under OUTPUT_URI/tokens/<key>/ (meta.json last);
one process per node fetches them, and every rank of the node memory-maps the same files.
A restarted run finds them there and skips the work.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path

import orjson

from neosft.artifacts import Manifest, VariantData
from neosft.chat import ChatFormat
from neosft.errors import UserError
from neosft.progress import log
from neosft.storage import Location, location
from neosft.train import dist
from neosft.train.tokenize import FILES, Tokens, tokenize

ROW_KEYS = ("instruction", "output")  # every row's; `input` besides (not in REILX's single rows), `system` where the
# record had one


def manifest_entry(data_uri: str, variant: str) -> tuple[Manifest, VariantData]:
    """(manifest, its entry for `variant`); refuses a folder that is not a built dataset of that variant."""
    manifest = Manifest.read(data_uri)
    return manifest, manifest.variant(variant, data_uri)


def rows(data_uri: str, variant: str, entry: VariantData, reilx: bool = False) -> Iterator[dict]:
    """Stream the variant's rows, each checked for its shape; at the end, refuse them if their sha256 is not the
    manifest's. Under the reilx rules a row whose values are not strings is REILX's script's as it found them
    (`single` copies values unchanged): such rows are counted and left out, not refused."""
    digest = hashlib.sha256()
    left_out = 0
    for name in entry.files:
        with (location(data_uri) / name).open() as f:
            for number, line in enumerate(f, 1):
                digest.update(line)
                try:
                    row = orjson.loads(line) if not reilx else _reilx_row(line)
                except (orjson.JSONDecodeError, ValueError, RecursionError):
                    raise UserError(
                        f"{data_uri}/{name} line {number} is not a JSON row (a truncated or damaged "
                        "part); rebuild the dataset"
                    ) from None
                if not is_row(row):
                    if reilx and isinstance(row, dict):
                        left_out += 1
                        continue
                    raise UserError(
                        f"{data_uri}/{name} line {number} is not a row of string instruction and output "
                        "(and input, system); rebuild the dataset with `neosft data build`"
                    )
                yield row
    if digest.hexdigest() != entry.sha256:
        raise UserError(f"{data_uri}: the {variant} rows do not match the sha256 in manifest.json; rebuild the dataset")
    if left_out:
        log(
            f"warning: {left_out:,} {variant} rows hold a value that is not a string (REILX's scripts copy values as "
            "found): not trained on"
        )


def _reilx_row(line: bytes):
    """A row as REILX's `single` script writes it: `json.dump` writes a NaN or Infinity it copied as the bare
    words, which orjson refuses and the standard library reads back (such a row is then not one of strings)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def is_row(row) -> bool:
    """Whether `row` is a row of string instruction and output (and input, system where present)."""
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(k), str) for k in ROW_KEYS)
        and all(isinstance(row.get(k, ""), str) for k in ("input", "system"))
    )


def tokenized(
    data_uri: str,
    variant: str,
    entry: VariantData,
    tokenizer,
    chat: ChatFormat,
    cutoff_len: int,
    output: Location,
    work_dir: Path,
    reilx: bool = False,
) -> Tokens:
    """The variant's tokens, computed once (global rank 0) and shared with every rank through OUTPUT_URI."""
    template = chat.template.chat_template if chat.template else "ChatML"
    recipe = json.dumps([entry.sha256, cutoff_len, _tokenizer_id(tokenizer), template, chat.default_system])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    remote, local = output / "tokens" / key, work_dir / "tokens" / key
    if dist.rank() == 0 and not (remote / "meta.json").exists():
        log(f"tokenizing {entry.rows:,} {variant} rows (cutoff_len {cutoff_len})")
        tokens = tokenize(rows(data_uri, variant, entry, reilx), tokenizer, cutoff_len, chat)
        tokens.save(local)
        remote.upload_dir(local)
        meta = json.dumps({"samples": len(tokens), "truncated": tokens.truncated}).encode()
        (local / "meta.json").write_bytes(meta)
        (remote / "meta.json").write_bytes(meta)  # last: marks the upload complete
    dist.barrier()
    if dist.local_rank() == 0 and not (local / "meta.json").exists():
        local.mkdir(parents=True, exist_ok=True)
        for name in (*(f"{f}.npy" for f in FILES), "meta.json"):  # meta.json last, as above
            (remote / name).download(local / name)
    dist.barrier()
    tokens = Tokens.load(local, json.loads((local / "meta.json").read_bytes())["truncated"])
    if tokens.truncated:
        log(
            f"{tokens.truncated:,} of {len(tokens):,} samples were longer than cutoff_len {cutoff_len} and were truncated"
        )
    return tokens


def _tokenizer_id(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()


def held_out(samples: int, val_size: float) -> int:
    """How many samples `--val-size` holds out: LLaMA-Factory's `val_size` as `datasets`' `train_test_split` reads a
    fraction, ceil(val_size * samples) (datasets/arrow_dataset.py, `n_test = ceil(test_size * n_samples)`)."""
    return math.ceil(samples * val_size)


def split(samples: int, val_size: float, seed: int):
    """(train indices, eval indices) as LLaMA-Factory splits its dataset (src/llamafactory/data/data_utils.py,
    `split_dataset`: `dataset.train_test_split(test_size=val_size, seed=seed)`, whose rows are
    `np.random.default_rng(seed).permutation(n)`: the first ceil(val_size * n) held out, the rest trained on in that
    order). With nothing held out LLaMA-Factory does not split: the rows stay in the file's order. Either way the
    Trainer's own sampler then shuffles them, in LLaMA-Factory's trainer as in neosft's."""
    import numpy as np

    n_eval = held_out(samples, val_size)
    if not n_eval:
        return np.arange(samples), np.arange(0)
    order = np.random.default_rng(seed).permutation(samples)
    return order[n_eval:], order[:n_eval]

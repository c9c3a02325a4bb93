"""`neosft data build`: one streaming pass from a ShareGPT corpus to the alpaca SFT datasets.

Output under DEST: `<variant>/part-NNNNN.jsonl`, `dataset_info.json` (LLaMA-Factory) and
`manifest.json`. Parts are written to a staging folder first and published only after the whole
source parsed: a failed build leaves DEST as it was, a killed publish leaves no manifest (the
old one is removed before any part is replaced), and the manifest is always written last.

Speed: a reader process parses and escapes records (see `reader`) while this one assembles rows
from the escaped turns, and a thread hashes and writes them: three stages on two cores.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from array import array
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import orjson

from neosft import __version__
from neosft.data.reader import Reader, escape
from neosft.data.records import SKIP_REASONS
from neosft.data.stats import LengthJoiner, TokenCounter, summary
from neosft.errors import UserError
from neosft.progress import Progress, log
from neosft.storage import LocalLocation, Location, location
from neosft.variants import VARIANTS, Variant

STAGING_PREFIX = ".neosft-staging-"


def build(
    source: str,
    dest: str,
    variants: list[str] | None = None,
    joiner: str = "\n\n",
    input_prompt: str = "",
    shard_rows: int = 100_000,
    tokenizer: str | None = None,
    build_id: str | None = None,
) -> dict:
    """Build the datasets; returns the manifest that was written to DEST/manifest.json."""
    names = variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if shard_rows < 1:
        raise UserError("--shard-rows must be at least 1")
    out = location(dest)
    out.check()
    total_bytes = location(source).size()  # fails early, before any work, if the source is missing

    staging = _staging_dir(out)
    writer = _Writer(staging)
    try:
        outputs = [_VariantOutput(VARIANTS[n], staging, joiner, input_prompt, shard_rows, tokenizer, writer) for n in names]
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        with Reader(source) as reader, Progress(f"building {', '.join(names)}", total_bytes) as progress:
            for batch in reader:
                for item in batch:
                    if isinstance(item, str):
                        skipped[item] += 1
                    else:
                        for o in outputs:
                            o.add(*item)
                progress.update(reader.bytes, reader.count)
        manifest = {
            "source": {"uri": source, "sha256": reader.sha256, "bytes": reader.bytes, "records": reader.count},
            "options": {"joiner": joiner, "input_prompt": input_prompt},
            "skipped": skipped,
            "kept": reader.count - sum(skipped.values()),
            "variants": {o.variant.name: o.finish() for o in outputs},
            "build_id": build_id,
            "neosft_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _publish(staging, out, manifest)
    finally:
        writer.close()
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _staging_dir(out: Location) -> Path:
    """Local DEST: a hidden folder inside it, so publishing is a rename; S3 DEST: a temp folder."""
    if isinstance(out, LocalLocation):
        for stale in out.path.glob(f"{STAGING_PREFIX}*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        path = out.path / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path
    return Path(tempfile.mkdtemp(prefix="neosft-build-"))


class _VariantOutput:
    """One variant's rows: assembled from escaped turns, measured, and handed to the writer thread in 1 MB blocks."""

    BLOCK_BYTES = 1 << 20

    def __init__(self, variant: Variant, staging: Path, joiner: str, input_prompt: str, shard_rows: int,
                 tokenizer: str | None, writer: "_Writer"):
        self.variant = variant
        self.escaped_joiner, self.length_joiner = escape(joiner), LengthJoiner(joiner)
        self.middle = b'","input":"' + escape(input_prompt) + b'","output":"'
        self.folder = staging / variant.name
        self.folder.mkdir()
        self.shard_rows, self.writer = shard_rows, writer
        self.rows, self.files, self.hash = 0, [], hashlib.sha256()
        self.block, self.block_bytes, self.file = [], 0, None
        self.has_system = False
        self.instruction_chars, self.output_chars = array("I"), array("I")
        self.tokens = TokenCounter(tokenizer, variant.cutoff_len) if tokenizer else None

    def add(self, system: bytes | None, rounds: list[tuple[bytes, bytes]], lengths: list[tuple[int, int]]) -> None:
        """Add the rows of one conversation, given as escaped JSON string bodies and lengths (see `reader`)."""
        tail = b'"}\n' if system is None else b'","system":"' + system + b'"}\n'
        block, rows = self.block, self.variant.pairs(rounds, self.escaped_joiner)
        for (instruction, output), (n_instruction, n_output) in zip(rows, self.variant.pairs(lengths, self.length_joiner), strict=True):
            if self.rows % self.shard_rows == 0:
                self._next_part()
            self.rows += 1
            block += (b'{"instruction":"', instruction, self.middle, output, tail)  # joined once per block
            self.block_bytes += len(instruction) + len(output)
            self.instruction_chars.append(n_instruction)
            self.output_chars.append(n_output)
            if self.tokens:
                self.tokens.add(**orjson.loads(b"".join(block[-5:])))
        if self.block_bytes >= self.BLOCK_BYTES:
            self._flush()
        self.has_system |= system is not None

    def _flush(self) -> None:
        if self.block:
            self.writer.submit(self._write_block, b"".join(self.block))
            self.block.clear()
            self.block_bytes = 0

    def _next_part(self) -> None:
        self._flush()
        name = f"part-{len(self.files):05d}.jsonl"
        self.files.append(f"{self.variant.name}/{name}")
        self.writer.submit(self._open_part, self.folder / name)

    # these three run on the writer thread
    def _open_part(self, path: Path) -> None:
        self._close_part()
        self.file = open(path, "wb", buffering=0)  # 1 MB blocks need no buffer; raw writes measured faster

    def _write_block(self, data: bytes) -> None:
        self.hash.update(data)
        view = memoryview(data)
        while view:  # a raw write may take less than all
            view = view[self.file.write(view) :]

    def _close_part(self) -> None:
        if self.file:
            self.file.close()
            self.file = None

    def finish(self) -> dict:
        if not self.files:  # no rows: still one (empty) part, so the folder loads
            self._next_part()
        self._flush()
        self.writer.submit(self._close_part)
        self.writer.wait()
        stats = {
            "rows": self.rows,
            "instruction_chars": summary(self.instruction_chars),
            "output_chars": summary(self.output_chars),
        }
        if self.tokens:
            stats["tokens"] = self.tokens.stats()
        return {"rows": self.rows, "files": self.files, "sha256": self.hash.hexdigest(),
                "has_system": self.has_system, "stats": stats}


class _Writer:
    """Runs file work (hashing, writing) in order on one background thread: both release the GIL,
    so they overlap with parsing. At most `MAX_PENDING` blocks wait, so memory stays bounded."""

    MAX_PENDING = 32

    def __init__(self, folder: Path):
        self.folder = folder
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neosft-writer")
        self.pending: deque[Future] = deque()

    def submit(self, fn, *args) -> None:
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.MAX_PENDING):
            self._result(self.pending.popleft())
        self.pending.append(self.pool.submit(fn, *args))

    def wait(self) -> None:
        while self.pending:
            self._result(self.pending.popleft())

    def _result(self, future: Future) -> None:
        try:
            future.result()
        except OSError as e:  # a full disk, most likely
            raise UserError(f"cannot write to {self.folder}: {e.strerror or e}") from None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def dataset_info(manifest: dict) -> dict:
    """LLaMA-Factory's dataset_info.json: one alpaca dataset per variant folder."""
    info = {}
    for name, v in manifest["variants"].items():
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        if v["has_system"]:
            columns["system"] = "system"
        info[name] = {"file_name": name, "formatting": "alpaca", "columns": columns}
    return info


def _publish(staging: Path, out: Location, manifest: dict) -> None:
    """Move the parts into DEST; the manifest goes first out and last in."""
    log(f"publishing to {out}")
    (out / "manifest.json").delete()
    for name, v in manifest["variants"].items():
        for file in v["files"]:
            (out / file).move_from(staging / file)
        for stale in set(f"{name}/{f}" for f in (out / name).list() if f.startswith("part-")) - set(v["files"]):
            (out / stale).delete()
    (out / "dataset_info.json").write_bytes(_json(dataset_info(manifest)))
    (out / "manifest.json").write_bytes(_json(manifest))


def _json(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"

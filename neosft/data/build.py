"""`neosft data build`: one streaming pass from a ShareGPT corpus to the alpaca SFT datasets.

Output under DEST: `<parts>/<variant>/part-NNNNN.jsonl`, `dataset_info.json` (LLaMA-Factory) and
`manifest.json`, which names `<parts>` (a folder named by its content's hash). Every option is checked
before any work; parts are staged and published in a new folder only after the whole source parsed,
then the manifest is replaced (one atomic write): a reader always sees a whole dataset, the previous
one or the new one, and a failed or killed build leaves DEST as it was. Concurrent builds stage apart;
the last to publish wins whole.

Speed: a reader process parses and escapes records (see `reader`) while this one assembles rows
from the escaped turns, and a thread hashes and writes them: three stages on two cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import signal
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import orjson

from neosft import __version__
from neosft.artifacts import MANIFEST, HeldOut, Manifest, SourceInfo, VariantData
from neosft.data.holdout import Holdout
from neosft.data.reader import Reader, escape
from neosft.data.records import SKIP_REASONS
from neosft.data.stats import TokenCounter
from neosft.errors import UserError
from neosft.progress import Progress, log
from neosft.storage import Location, location, readable
from neosft.variants import VARIANTS, Variant

EXPECTED_SHAPE = '{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}'


def build(
    source: str,
    dest: str,
    variants: list[str] | None = None,
    joiner: str = "\n\n",
    input_prompt: str = "",
    shard_rows: int = 100_000,
    tokenizer: str | None = None,
    build_id: str | None = None,
    holdout: str = "0",
) -> Manifest:
    """Build the datasets; returns the manifest that was written to DEST/manifest.json. `holdout` (see
    `neosft.data.holdout`) sets records aside before any variant, into `<parts>/heldout/`."""
    names = list(VARIANTS) if variants is None else variants
    _check_options(source, dest, names, joiner, input_prompt, shard_rows, tokenizer, build_id)
    rule = Holdout.parse(holdout)
    out = location(dest)
    out.check()
    file = readable(source)
    total_bytes = file.size()  # fails early, before any work, if the source is missing

    with _stop_on_sigterm(), out.staging() as staging:
        writer = _Writer(staging)
        try:
            outputs = [_VariantOutput(VARIANTS[n], staging, joiner, input_prompt, shard_rows, tokenizer, writer) for n in names]
            held = _HeldOut(staging, [_VariantOutput(VARIANTS[n], staging, joiner, input_prompt, shard_rows, tokenizer,
                                                     writer, HELDOUT + "/") for n in names]) if rule.enabled else None
            skipped = dict.fromkeys(SKIP_REASONS, 0)
            with Reader(file, [o.variant for o in outputs], joiner, rule) as reader, Progress(f"building {', '.join(names)}", total_bytes) as progress:
                for batch in reader:
                    for item in batch:
                        if isinstance(item, str):
                            skipped[item] += 1
                        else:
                            for o in outputs:
                                o.add(*item)
                    if held:
                        held.add(reader.held)
                    progress.update(reader.bytes, reader.count)
            kept = reader.count - sum(skipped.values())
            if not kept:
                raise UserError(f"{source}: no usable record among {reader.count:,} (skipped: "
                                + ", ".join(f"{k} {v:,}" for k, v in skipped.items()) + f"); each record must look like {EXPECTED_SHAPE}")
            built = {o.variant.name: o.finish(reader.stats[o.variant.name]) for o in outputs}
            heldout = held.finish(rule, holdout, reader.heldout_stats) if held else None
        finally:
            writer.close()
        parts = "parts-" + hashlib.sha256(orjson.dumps({n: [v.sha256, v.files] for n, v in built.items()}
                                                       | ({"heldout": heldout.sha256} if heldout else {}))).hexdigest()[:16]
        if heldout:
            heldout = dataclasses.replace(heldout, file=f"{parts}/{heldout.file}", variants={
                n: dataclasses.replace(v, files=[f"{parts}/{f}" for f in v.files]) for n, v in heldout.variants.items()})
        manifest = Manifest(
            source=SourceInfo(source, reader.sha256, reader.bytes, reader.count, reader.revision),
            options={"joiner": joiner, "input_prompt": input_prompt, "shard_rows": shard_rows},
            skipped=skipped,
            kept=kept,
            variants={n: dataclasses.replace(v, files=[f"{parts}/{f}" for f in v.files]) for n, v in built.items()},
            parts=parts,
            build_id=build_id,
            neosft_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            warnings=[f"{n} has no rows: {VARIANTS[n].rule}" for n, v in built.items() if not v.rows],
            heldout=heldout,
        )
        _publish_parts_then_manifest(staging, out, manifest)
    return manifest


def _check_options(source, dest, names, joiner, input_prompt, shard_rows, tokenizer, build_id) -> None:
    """Refuse every bad option before any work, so a bad one never costs a build or the previous dataset."""
    for option, value in (("SOURCE", source), ("--out", dest), ("--joiner", joiner), ("--input-prompt", input_prompt),
                          ("--tokenizer", tokenizer), ("--build-id", build_id)):
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{option} is not valid UTF-8: {value.encode('utf-8', 'surrogateescape')!r}") from None
    if not source:
        raise UserError("SOURCE is empty: name a file, s3://bucket/key, https://..., hf://datasets/OWNER/NAME/PATH or `sample`")
    if not dest:
        raise UserError("--out is empty: name a folder or s3://bucket/prefix")
    if not names:
        raise UserError(f"no variant to build; choose from {', '.join(VARIANTS)}")
    for i, name in enumerate(names):
        if name not in VARIANTS:
            raise UserError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        if name in names[:i]:
            raise UserError(f"variant {name!r} is named twice")
    if shard_rows < 1:
        raise UserError("--shard-rows must be at least 1")
    if tokenizer is not None:
        from neosft.data.stats import load_tokenizer

        load_tokenizer(tokenizer)


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (a pod being stopped) unwinds like Ctrl-C: the reader stops, staging is removed, DEST untouched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _VariantOutput:
    """One variant's rows: assembled from escaped turns, measured, and handed to the writer thread in 1 MB blocks."""

    BLOCK_BYTES = 1 << 20

    def __init__(self, variant: Variant, staging: Path, joiner: str, input_prompt: str, shard_rows: int,
                 tokenizer: str | None, writer: "_Writer", under: str = ""):
        self.variant, self.under = variant, under
        self.escaped_joiner = escape(joiner)
        self.middle = b'","input":"' + escape(input_prompt) + b'","output":"'
        self.folder = staging / under / variant.name
        self.folder.mkdir(parents=True)
        self.shard_rows, self.writer = shard_rows, writer
        self.rows, self.files, self.hash = 0, [], hashlib.sha256()
        self.block, self.block_bytes, self.file = [], 0, None
        self.has_system = False
        self.tokens = TokenCounter(tokenizer, variant.cutoff_len) if tokenizer else None

    def add(self, system: bytes | None, rounds: list[tuple[bytes, bytes]]) -> None:
        """Add the rows of one conversation, given as escaped JSON string bodies (see `reader`)."""
        tail = b'"}\n' if system is None else b'","system":"' + system + b'"}\n'
        block = self.block
        for instruction, output in self.variant.pairs(rounds, self.escaped_joiner):
            if self.rows % self.shard_rows == 0:
                self._next_part()
            self.rows += 1
            block += (b'{"instruction":"', instruction, self.middle, output, tail)  # joined once per block
            self.block_bytes += len(instruction) + len(output)
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
        self.files.append(f"{self.under}{self.variant.name}/{name}")
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

    def finish(self, chars: dict) -> VariantData:
        """Close the parts; `chars` holds the rows' character-length statistics from the reader."""
        if not self.files:  # no rows: still one (empty) part, so the folder loads
            self._next_part()
        self._flush()
        self.writer.submit(self._close_part)
        self.writer.wait()
        assert chars["rows"] == self.rows, (chars["rows"], self.rows)  # both sides applied the same rule
        stats = dict(chars)
        if self.tokens:
            stats["tokens"] = self.tokens.stats()
        return VariantData(self.rows, self.files, self.hash.hexdigest(), self.has_system, stats)


HELDOUT = "heldout"  # <parts>/heldout/: records.jsonl (ShareGPT) and <variant>/part-*.jsonl


class _HeldOut:
    """The held-out records in ShareGPT form (records.jsonl) and each variant's rows built from them."""

    def __init__(self, staging: Path, outputs: list[_VariantOutput]):
        self.outputs, self.count, self.hash = outputs, 0, hashlib.sha256()
        self.file = open(staging / HELDOUT / "records.jsonl", "wb")  # the outputs made the folder

    def add(self, records) -> None:
        for system, rounds in records:
            turns = [b'{"from":"system","value":"' + system + b'"}'] if system is not None else []
            turns += [b'{"from":"human","value":"' + h + b'"},{"from":"gpt","value":"' + g + b'"}' for h, g in rounds]
            line = b'{"conversations":[' + b",".join(turns) + b"]}\n"
            self.file.write(line)
            self.hash.update(line)
            self.count += 1
            for o in self.outputs:
                o.add(system, rounds)

    def finish(self, rule: Holdout, spec: str, stats: dict) -> HeldOut:
        self.file.close()
        variants = {o.variant.name: o.finish(stats[o.variant.name]) for o in self.outputs}
        return HeldOut(self.count, f"{HELDOUT}/records.jsonl", self.hash.hexdigest(), spec, rule.describe(), variants)


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


def dataset_info(manifest: Manifest) -> dict:
    """LLaMA-Factory's dataset_info.json: one alpaca dataset per variant folder."""
    info = {}
    for name, v in manifest.variants.items():
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        if v.has_system:
            columns["system"] = "system"
        info[name] = {"file_name": f"{manifest.parts}/{name}", "formatting": "alpaca", "columns": columns}
    return info


def _publish_parts_then_manifest(staging: Path, out: Location, manifest: Manifest) -> None:
    """Publish the staged parts in their own new folder, then replace dataset_info.json and manifest.json;
    only then remove parts no manifest names any more (keeping the previous build's for readers still on it)."""
    log(f"publishing to {out}")
    with out.lock():
        previous = _parts_named_by(out)
        (out / manifest.parts).publish_dir(staging)
        (out / "dataset_info.json").write_bytes(orjson.dumps(dataset_info(manifest), option=orjson.OPT_INDENT_2) + b"\n")
        manifest.write(out)
        _remove_unnamed_parts(out, keep={manifest.parts, previous})


def _remove_unnamed_parts(out: Location, keep: set) -> None:
    """Remove the parts folders in `out` not in `keep` (and an older layout's `<variant>/part-*` files), except
    those with a file written within the store's clean-up grace: another build's, still publishing."""
    files = out.list()
    old = set(out.list(older_than_s=out.CLEANUP_GRACE_S)) if out.CLEANUP_GRACE_S else set(files)
    stale: dict[str, bool] = {}
    for name in files:
        top, _, rest = name.partition("/")
        if (top.startswith("parts-") and top not in keep) or (top in VARIANTS and rest.startswith("part-")):
            stale[top] = stale.get(top, True) and name in old
    for top, whole in stale.items():
        if whole:
            (out / top).delete_dir()


def _parts_named_by(out: Location) -> str | None:
    try:
        return Manifest.from_json((out / MANIFEST).read_bytes()).parts if (out / MANIFEST).exists() else None
    except UserError:  # a manifest of an older layout: nothing of it to keep
        return None

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
import json
import re
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from neosft import __version__
from neosft.artifacts import MANIFEST, HeldOut, Manifest, SourceInfo, VariantData
from neosft.data import published, reilx
from neosft.data.holdout import Holdout
from neosft.data.reader import Reader, escape
from neosft.data.records import SKIP_REASONS
from neosft.data.stats import TokenCounter
from neosft.errors import UserError, redact
from neosft.progress import Progress, log
from neosft.storage import Location, location, readable
from neosft.variants import RULES, VARIANTS, Variant

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
    rules: str = "seed",
    holdout: str = "0",
) -> Manifest:
    """Build the datasets; returns the manifest that was written to DEST/manifest.json. `rules`: `seed` (the
    card's wording, see `records` and `variants`) or `reilx` (REILX's published scripts, see `reilx`). `holdout`
    (see `neosft.data.holdout`) sets records aside before any variant, into `<parts>/heldout/`."""
    names = list(VARIANTS) if variants is None else variants
    _check_options(source, dest, names, joiner, input_prompt, shard_rows, tokenizer, build_id)
    _check_rules(rules, joiner, input_prompt)
    rule = Holdout.parse(holdout)
    if rule.enabled and rules == "reilx":
        raise UserError(
            f"--holdout {holdout} with --rules reilx: REILX's files hold every record; build them with "
            "--holdout 0 (the default under reilx)"
        )
    out = location(dest)
    out.check()
    file = readable(source)
    total_bytes = file.size()  # fails early, before any work, if the source is missing

    with _stop_on_sigterm(), out.staging() as staging:
        writer = _Writer(staging)
        try:
            outputs = [
                _VariantOutput(VARIANTS[n], staging, joiner, input_prompt, shard_rows, tokenizer, writer, rules)
                for n in names
            ]
            held = (
                _held_out(staging, names, joiner, input_prompt, shard_rows, tokenizer, writer) if rule.enabled else None
            )
            reasons = SKIP_REASONS if rules == "seed" else [r for n in names for r in reilx.skip_reasons(n)]
            skipped = dict.fromkeys(reasons, 0)
            with (
                Reader(file, [o.variant for o in outputs], joiner, rules, rule) as reader,
                Progress(f"building {', '.join(names)}", total_bytes) as progress,
            ):
                for batch in reader:
                    for item in batch:
                        _route(item, outputs, skipped)
                    if held:
                        held.add(reader.held)
                    progress.update(reader.bytes, reader.count)
            kept = _kept(source, reader.count, skipped)
            built = {o.variant.name: o.finish(reader.stats[o.variant.name], skipped, reader.sha256) for o in outputs}
            heldout = held.finish(rule, holdout, reader.heldout_stats) if held else None
        finally:
            writer.close()
        manifest = _manifest(
            source, reader, joiner, input_prompt, shard_rows, build_id, rules, skipped, kept, built, heldout
        )
        _publish_parts_then_manifest(staging, out, manifest)
    return manifest


def _held_out(staging, names, joiner, input_prompt, shard_rows, tokenizer, writer) -> _HeldOut:
    """The held-out records' outputs: one per variant, under HELDOUT/."""
    return _HeldOut(
        staging,
        [
            _VariantOutput(
                VARIANTS[n], staging, joiner, input_prompt, shard_rows, tokenizer, writer, under=HELDOUT + "/"
            )
            for n in names
        ],
    )


def _route(item, outputs: list[_VariantOutput], skipped: dict[str, int]) -> None:
    """One item of the reader's batch to the variants' outputs, or to the skip counts."""
    if isinstance(item, str):
        skipped[item] += 1
    elif isinstance(item, reilx.More):  # more lines of the record before
        outputs[item.variant].add_lines(item.lines)
    elif isinstance(item, list):  # reilx: each variant's lines, or its skip reason
        for o, lines in zip(outputs, item):
            o.add_lines(lines)
        if all(isinstance(lines, str) for lines in item):
            skipped[item[0]] += 1
    else:
        for o in outputs:
            o.add(*item)


def _kept(source: str, count: int, skipped: dict[str, int]) -> int:
    """The records kept; none is a `UserError` naming the skip counts and the expected shape."""
    kept = count - sum(skipped.values())
    if not kept:
        raise UserError(
            f"{redact(source)}: no usable record among {count:,} (skipped: "
            + ", ".join(f"{k} {v:,}" for k, v in skipped.items())
            + f"); each record must look like {EXPECTED_SHAPE}"
        )
    return kept


def _manifest(
    source, reader, joiner, input_prompt, shard_rows, build_id, rules, skipped, kept, built, heldout
) -> Manifest:
    """The build's manifest, its files moved under the content-addressed parts folder."""
    parts = (
        "parts-"
        + hashlib.sha256(
            orjson.dumps(
                {n: [v.sha256, v.files] for n, v in built.items()} | ({"heldout": heldout.sha256} if heldout else {})
            )
        ).hexdigest()[:16]
    )
    if heldout:
        heldout = dataclasses.replace(
            heldout,
            file=f"{parts}/{heldout.file}",
            variants={
                n: dataclasses.replace(v, files=[f"{parts}/{f}" for f in v.files]) for n, v in heldout.variants.items()
            },
        )
    return Manifest(
        source=SourceInfo(redact(source), reader.sha256, reader.bytes, reader.count, reader.revision),
        options={"joiner": joiner, "input_prompt": input_prompt, "shard_rows": shard_rows},
        skipped=skipped,
        kept=kept,
        variants={n: dataclasses.replace(v, files=[f"{parts}/{f}" for f in v.files]) for n, v in built.items()},
        parts=parts,
        build_id=build_id,
        neosft_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=[f"{n} has no rows: {VARIANTS[n].rule}" for n, v in built.items() if not v.rows],
        rules=rules,
        heldout=heldout,
    )


def _check_options(source, dest, names, joiner, input_prompt, shard_rows, tokenizer, build_id) -> None:
    """Refuse every bad option before any work, so a bad one never costs a build or the previous dataset."""
    for option, value in (
        ("SOURCE", source),
        ("--out", dest),
        ("--joiner", joiner),
        ("--input-prompt", input_prompt),
        ("--tokenizer", tokenizer),
        ("--build-id", build_id),
    ):
        if value is None:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{option} is not valid UTF-8: {value.encode('utf-8', 'surrogateescape')!r}") from None
    if not source:
        raise UserError(
            "SOURCE is empty: name a file, s3://bucket/key, https://..., hf://datasets/OWNER/NAME/PATH or `sample`"
        )
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


def _check_rules(rules: str, joiner: str, input_prompt: str) -> None:
    if rules not in RULES:
        raise UserError(f"unknown rules {rules!r}; choose from {', '.join(RULES)}")
    if rules == "reilx" and (joiner != "\n\n" or input_prompt):
        raise UserError(
            "--rules reilx writes REILX's scripts' rows (turns joined by '\\n\\n', `input` empty): "
            "--joiner and --input-prompt apply to --rules seed only"
        )


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

    def __init__(
        self,
        variant: Variant,
        staging: Path,
        joiner: str,
        input_prompt: str,
        shard_rows: int,
        tokenizer: str | None,
        writer: _Writer,
        rules: str = "seed",
        under: str = "",
    ):
        self.variant, self.rules, self.under = variant, rules, under
        self.escaped_joiner = escape(joiner)
        self.middle = b'","input":"' + escape(input_prompt) + b'","output":"'
        self.folder = staging / under / variant.name
        self.folder.mkdir(parents=True)
        self.shard_rows, self.writer = shard_rows, writer
        self.rows, self.hash, self.bytes = 0, hashlib.sha256(), 0
        self.files: list[str] = []
        self.skipped = dict.fromkeys(reilx.skip_reasons(variant.name), 0)  # this variant's own, under reilx
        self.block: list[bytes] = []
        self.block_bytes = 0
        self.file: Any = None  # the open part, written on the writer thread
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
            if self.block_bytes >= self.BLOCK_BYTES:  # inside the record: its rows may be quadratic in its rounds
                self._flush()
        self.has_system |= system is not None

    def add_lines(self, lines: reilx.Lines | str) -> None:
        """Add the rows of one record under the REILX rules: its finished lines, or the reason it is skipped."""
        if isinstance(lines, str):
            self.skipped[lines] += 1
            return
        data, rows, has_system = lines
        while rows:
            if self.rows % self.shard_rows == 0:
                self._next_part()
            take = min(rows, self.shard_rows - self.rows % self.shard_rows)
            end = len(data)
            if take < rows:  # the part ends inside this record: after its `take`-th line
                end = 0
                for _ in range(take):
                    end = data.index(b"\n", end) + 1
            piece, data = data[:end], data[end:]
            self.rows += take
            rows -= take
            self.block.append(piece)
            self.block_bytes += len(piece)
            if self.tokens:
                for line in piece.splitlines():
                    row = json.loads(line)
                    instruction, query, output = (
                        reilx.text(row.get(k, "")) for k in ("instruction", "input", "output")
                    )
                    self.tokens.add(instruction, query, output, row.get("system"))
        if self.block_bytes >= self.BLOCK_BYTES:
            self._flush()
        self.has_system |= has_system

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
        self.bytes += len(data)
        view = memoryview(data)
        while view:  # a raw write may take less than all
            view = view[self.file.write(view) :]

    def _close_part(self) -> None:
        if self.file:
            self.file.close()
            self.file = None

    def finish(self, chars: dict, skipped: dict, source_sha256: str) -> VariantData:
        """Close the parts; `chars` holds the rows' character-length statistics from the reader, `skipped` the
        build's skip counts (this variant's under the seed rules)."""
        if not self.files:  # no rows: still one (empty) part, so the folder loads
            self._next_part()
        self._flush()
        self.writer.submit(self._close_part)
        self.writer.wait()
        assert chars["rows"] == self.rows, (chars["rows"], self.rows)  # both sides applied the same rule
        stats = dict(chars)
        if self.tokens:
            stats["tokens"] = self.tokens.stats()
        sha256 = self.hash.hexdigest()
        return VariantData(
            self.rows,
            self.files,
            sha256,
            self.has_system,
            stats,
            self.bytes,
            dict(skipped) if self.rules == "seed" else self.skipped,
            published.compare(source_sha256, self.variant.name, sha256, self.bytes),
        )


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
        variants = {o.variant.name: o.finish(stats[o.variant.name], {}, "") for o in self.outputs}
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
        columns: dict[str, str | None] = {"prompt": "instruction", "query": "input", "response": "output"}
        if manifest.rules == "reilx" and name in reilx.NO_INPUT:
            columns["query"] = None  # REILX's rows have no `input` key (LLaMA-Factory's default would look for one)
        if v.has_system:
            columns["system"] = "system"
        info[name] = {"file_name": f"{manifest.parts}/{name}", "formatting": "alpaca", "columns": columns}
    return info


def _publish_parts_then_manifest(staging: Path, out: Location, manifest: Manifest) -> None:
    """Publish the staged parts in their own new folder, then replace manifest.json and derive dataset_info.json
    from the manifest that won; only then remove parts no manifest names any more (keeping the previous build's
    for readers still on it)."""
    log(f"publishing to {out}")
    with out.lock():
        previous = _parts_named_by(out)
        (out / manifest.parts).publish_dir(staging)
        manifest.write(out)
        _write_dataset_info(out)
        _remove_unnamed_parts(out, keep={manifest.parts, previous})


def _write_dataset_info(out: Location, attempts: int = 10) -> None:
    """dataset_info.json from the manifest in `out` now, written again while that manifest changed meanwhile: the
    build that writes dataset_info.json last saw its manifest still in place afterwards, so both name one build
    (another build replacing the manifest later writes dataset_info.json again itself)."""
    current = (out / MANIFEST).read_bytes()
    for _ in range(attempts):
        info = dataset_info(Manifest.from_json(current, str(out / MANIFEST)))
        (out / "dataset_info.json").write_bytes(orjson.dumps(info, option=orjson.OPT_INDENT_2) + b"\n")
        current, written_from = (out / MANIFEST).read_bytes(), current
        if current == written_from:
            return
    raise UserError(f"{out}: other builds kept replacing manifest.json while this one published; build again")


_PARTS = re.compile(r"parts-[0-9a-f]{16}")  # the folders neosft names its parts
_OLD_PART = re.compile(r"part-[0-9]{5}\.jsonl")  # the older layout's parts: <variant>/part-NNNNN.jsonl


def _remove_unnamed_parts(out: Location, keep: set) -> None:
    """Remove the parts folders of neosft's naming in `out` not in `keep` (and an older layout's
    `<variant>/part-NNNNN.jsonl` files), except those with a file written within the store's clean-up grace: another
    build's, still publishing. Nothing else in `out` is touched."""
    files = out.list()
    old = set(out.list(older_than_s=out.CLEANUP_GRACE_S)) if out.CLEANUP_GRACE_S else set(files)
    stale: dict[str, bool] = {}
    for name in files:
        top, _, rest = name.partition("/")
        if _PARTS.fullmatch(top) and top not in keep:
            stale[top] = stale.get(top, True) and name in old
        elif top in VARIANTS and _OLD_PART.fullmatch(rest) and name in old:
            (out / name).delete()
    for top, whole in stale.items():
        if whole:
            (out / top).delete_dir()


def _parts_named_by(out: Location) -> str | None:
    try:
        return Manifest.from_json((out / MANIFEST).read_bytes()).parts if (out / MANIFEST).exists() else None
    except UserError:  # a manifest of an older layout: nothing of it to keep
        return None

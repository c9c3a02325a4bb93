"""A reader process that parses, checks and JSON-escapes records while the main process writes.

Parsing and writing are both Python-bound, so the build runs them on two cores. Each record crosses
the pipe as its skip reason or as `(system, rounds)`: system and turns already escaped as JSON string
bodies (bytes, cheap to pickle; JSON escaping commutes with concatenation, so the variant rules join
them directly). The rows' lengths in characters never cross: this process applies the variant rules
to the turns' lengths and sends only each variant's length statistics, at the end. Under `--rules reilx`
a record crosses as each variant's finished lines (or its skip reason), see `reilx`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import signal
import time
import traceback
from array import array
from collections.abc import Iterator

import orjson

from neosft import storage
from neosft.data.holdout import Holdout, Splitter, key
from neosft.data.records import parse_record
from neosft.data.reilx import Rules
from neosft.data.source import Source
from neosft.data.stats import summary
from neosft.errors import UserError
from neosft.storage import Readable
from neosft.variants import Variant

BATCH = 512
# A batch (about 0.8 MB on a real corpus) crosses the pipe in one write, not in 64 KiB pieces that wake the
# other process at each: measured 2.77..3.02 s -> 2.30..2.47 s at 200 MB. 1 MiB: Linux's limit without privileges.
PIPE_BYTES = 1 << 20
PROGRESS_EVERY_S = 1.0

Escaped = tuple[bytes | None, list[tuple[bytes, bytes]]]
NO_HOLDOUT = Holdout(0.0, None)


def escape(s: str) -> bytes:
    """The JSON string body of `s` (no quotes): UTF-8, non-ASCII kept as is, and a lone surrogate (which
    UTF-8 cannot hold) as its `\\uXXXX` escape, exactly as JSON writes it."""
    try:
        return orjson.dumps(s)[1:-1]
    except orjson.JSONEncodeError:
        return json.dumps(s, ensure_ascii=False).encode("utf-8", "backslashreplace")[1:-1]


class Reader:
    """`with Reader(file) as reader:` starts the process (before the caller starts any thread);
    iterate for batches of records (a skip reason or `Escaped` each) and `held` (the `Escaped` records of the
    batch set aside by `holdout`, see `neosft.data.holdout`), then read the source's `sha256`, `bytes`, `count`,
    `revision` and `stats` (per variant: rows and character-length statistics, see `neosft.data.stats`; those of
    the held-out rows in `heldout_stats`); `bytes` and `count` follow the stream for progress."""

    def __init__(
        self, file: Readable, variants: list[Variant], joiner: str, rules: str = "seed", holdout: Holdout = NO_HOLDOUT
    ):
        self.file, self.variants, self.joiner, self.rules, self.holdout = file, variants, joiner, rules, holdout
        self.sha256, self.bytes, self.count, self.revision = "", 0, 0, None
        self.stats: dict[str, dict] = {}
        self.held: list[Escaped] = []
        self.heldout_stats: dict = {}

    def __enter__(self) -> Reader:
        # fork: the child needs no re-import of __main__ (spawn would re-run a caller's script)
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        self.receiver, sender = ctx.Pipe(duplex=False)
        with contextlib.suppress(AttributeError, OSError):  # Linux only; elsewhere the default size
            fcntl.fcntl(sender.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.process = ctx.Process(  # type: ignore[attr-defined]  # every concrete context has Process
            target=_read,
            args=(self.file, self.variants, self.joiner, self.rules, self.holdout, sender, self.receiver),
            name="neosft-reader",
            daemon=True,
        )
        self.process.start()
        sender.close()
        return self

    def __exit__(self, *exc) -> None:
        self.receiver.close()
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()

    def __iter__(self) -> Iterator[list[str | Escaped]]:
        while True:
            try:
                kind, *payload = self.receiver.recv()
            except EOFError:
                raise RuntimeError(f"the reader process died (exit code {self.process.exitcode})") from None
            if kind == "batch":
                items, self.held, self.bytes, self.count = payload
                yield items
            elif kind == "done":
                self.sha256, self.bytes, self.count, self.revision, self.stats, self.heldout_stats = payload
                return
            elif kind == "error":
                raise UserError(payload[0])
            else:
                raise RuntimeError(f"the reader process failed:\n{payload[0]}")


def _read(file: Readable, variants: list[Variant], joiner: str, rules: str, holdout: Holdout, sender, receiver) -> None:
    receiver.close()  # the parent's end: if the parent dies, sending fails and this process ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent ends this process
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stopped: end quietly
    storage.forget_clients()  # never share the parent's pooled connections
    try:
        _send_records(file, variants, joiner, rules, holdout, sender)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass  # the parent is gone: nobody to tell
    finally:
        with contextlib.suppress(OSError):
            sender.close()


def _send_records(file: Readable, variants: list[Variant], joiner: str, rules: str, holdout: Holdout, sender) -> None:
    try:
        last = [time.monotonic()]

        def progress() -> None:  # every chunk: a progress note each second, also where no record is
            if time.monotonic() - last[0] > PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                sender.send(("batch", [], [], source.bytes, source.count))

        source = Source(file, progress)
        width = len(joiner)
        lengths = [(v, array("I"), array("I")) for v in variants]
        held_lengths = [(v, array("I"), array("I")) for v in variants]
        splitter = Splitter(holdout) if holdout.enabled else None
        batch: list = []
        turns: list = []  # the batch's conversations' (human, gpt) lengths
        held: list = []
        held_turns: list = []

        def measure(into, conversations) -> None:
            for variant, instruction, output in into:
                n_instruction, n_output = variant.lengths(conversations, width)
                instruction.extend(n_instruction)
                output.extend(n_output)

        def send() -> None:
            measure(lengths, turns)
            measure(held_lengths, held_turns)
            sender.send(("batch", batch, held, source.bytes, source.count))
            for pending in (batch, turns, held, held_turns):
                pending.clear()

        def route(train, out) -> None:
            for item, n in train:
                batch.append(item)
                turns.append(n)
            for item, n in out:
                held.append(item)
                held_turns.append(n)

        reilx = Rules(variants) if rules == "reilx" else None
        for record in source.records():
            if reilx:  # each variant's lines (or skip reason), see `reilx`
                batch.append(reilx.record(record))
                for more in reilx.rest():  # a record whose lines run past a chunk: sent as they are made
                    batch.append(more)
                    send()
            elif isinstance(conv := parse_record(record), str):
                batch.append(conv)
            else:
                item = (
                    None if conv.system is None else escape(conv.system),
                    [(escape(h), escape(g)) for h, g in conv.rounds],
                )
                n = [(len(h), len(g)) for h, g in conv.rounds]
                route(*splitter.add(key(*item), (item, n)) if splitter else ([(item, n)], []))
            if len(batch) == BATCH:
                send()
        if splitter:
            route([], splitter.finish())
        send()

        def stats(into) -> dict:
            return {
                v.name: {"rows": len(i), "instruction_chars": summary(i), "output_chars": summary(o)}
                for v, i, o in into
            }

        sender.send(
            (
                "done",
                source.sha256,
                source.bytes,
                source.count,
                source.revision,
                reilx.stats() if reilx else stats(lengths),
                stats(held_lengths),
            )
        )
    except UserError as e:
        sender.send(("error", str(e)))
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception:
        sender.send(("crash", traceback.format_exc()))

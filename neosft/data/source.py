"""Stream records out of a corpus without ever holding the whole of it.

Formats are recognised by content, not by name: a JSON array, JSON lines, either of them gzipped,
or Parquet. While it streams, a `Source` hashes the stored bytes and counts them and the records.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import orjson

from neosft.errors import UserError
from neosft.storage import LocalLocation, location

CHUNK = 1 << 16  # 64 KiB: measured faster than 1 MiB for ijson (cache-friendly)


class Source:
    """A corpus at `uri`; iterate `records()` once, then read `sha256`, `bytes` and `count`."""

    def __init__(self, uri: str):
        self.uri = uri
        self.loc = location(uri)
        self.bytes = 0
        self.count = 0
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def records(self) -> Iterator[object]:
        try:
            for record in self._read(exact=False):
                self.count += 1
                yield record
        except _RetryExact:  # ijson refused it: find the exact error, or read on past ijson's limits
            for i, record in enumerate(self._read(exact=True)):
                if i >= self.count:
                    self.count += 1
                    yield record

    def _read(self, exact: bool) -> Iterator[object]:
        self.bytes, self._hash = 0, hashlib.sha256()
        with self.loc.open() as raw:
            stream = io.BufferedReader(_Tap(raw, self), CHUNK)
            try:
                yield from self._parse(stream, exact)
                _drain(stream)  # hash every stored byte, also those after the last record
            except (EOFError, OSError, zlib.error) as e:  # a truncated or corrupt gzip stream
                raise UserError(f"{self.uri}: cannot read: {e}") from None

    def _parse(self, stream: io.BufferedReader, exact: bool) -> Iterator[object]:
        if stream.peek(4)[:4] == b"PAR1":
            return _parquet_records(stream, self.loc)
        text, name = self._text(stream)
        first = text.peek(CHUNK).lstrip()[:1]
        if first == b"[":
            return _ArrayReader(text, name).records() if exact else _fast_array_records(text)
        if first == b"{":
            return _jsonl_records(text, name)
        if not first:
            raise UserError(f"{name} is empty")
        raise UserError(f"{name}: unsupported format (starts with {first!r}); expected a JSON array, JSON lines, gzip or Parquet")

    def _text(self, stream: io.BufferedReader) -> tuple[io.BufferedReader, str]:
        """The JSON text, gunzipped and past any UTF-8 byte order mark, and its name for errors."""
        name = self.uri
        if stream.peek(2)[:2] == b"\x1f\x8b":
            stream, name = io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), CHUNK), f"{self.uri} (after gunzip)"
        if stream.peek(3)[:3] == b"\xef\xbb\xbf":
            stream.read(3)
        return stream, name


class _RetryExact(Exception):
    """ijson failed: reread with the exact reader."""


def _fast_array_records(text: BinaryIO) -> Iterator[object]:
    """ijson's C parser: fast, but it cannot say where JSON is invalid and overflows on integers
    beyond 64 bits; either way the `Source` rereads the array with `_ArrayReader`."""
    import ijson

    try:
        yield from ijson.items(text, "item", use_float=True, buf_size=CHUNK)
    except ijson.JSONError:
        raise _RetryExact() from None


class _Tap(io.RawIOBase):
    """Reads through to `raw`, hashing and counting the bytes for the `Source`."""

    def __init__(self, raw: BinaryIO, source: Source):
        self.raw, self.source = raw, source

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.raw.read(len(buf))
        n = len(data)
        buf[:n] = data
        self.source._hash.update(data)
        self.source.bytes += n
        return n


def _drain(stream: BinaryIO) -> None:
    while stream.read(CHUNK):
        pass


def _loads(data, name: str, offset: int) -> object:
    """Parse one JSON value; a syntax error names its absolute byte offset in the stream."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:  # the standard parser also takes what orjson refuses but JSON allows (huge integers, lone surrogates)
        return json.loads(bytes(data))
    except UnicodeDecodeError as e:
        raise UserError(f"{name}: invalid UTF-8 at byte {offset + e.start}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{name}: invalid JSON at byte {offset + _byte_pos(data, e.pos)}: {e.msg}") from None


def _byte_pos(data, char_pos: int) -> int:
    return len(bytes(data).decode("utf-8")[:char_pos].encode("utf-8"))


def _jsonl_records(stream: BinaryIO, name: str) -> Iterator[object]:
    offset = 0
    for line in stream:
        if line.strip():
            yield _loads(line, name, offset)
        offset += len(line)


_STRUCTURAL = re.compile(rb'["{}\[\]]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # the rest of a string after its opening quote
_SCALAR = re.compile(rb"[^,\]\s]*")
_SPACE = re.compile(rb"\s*")


class _ArrayReader:
    """Splits a top-level JSON array into its elements with a bracket scan and parses each with
    orjson: slower than ijson, but it knows the exact byte offset of every syntax error."""

    def __init__(self, stream: BinaryIO, name: str):
        self.stream, self.name = stream, name
        self.buf, self.base, self.eof = b"", 0, False  # buf holds stream bytes [base, base + len(buf))

    def _more(self, keep: int) -> int:
        """Drop bytes before `keep`, read another chunk; returns how far indices shifted."""
        chunk = self.stream.read(CHUNK)
        if not chunk:
            self.eof = True
        self.buf = self.buf[keep:] + chunk
        self.base += keep
        return keep

    def _skip_space(self, pos: int) -> int:
        while True:
            pos = _SPACE.match(self.buf, pos).end()
            if pos < len(self.buf) or self.eof:
                return pos
            pos -= self._more(pos)

    def _error(self, pos: int, what: str) -> UserError:
        return UserError(f"{self.name}: invalid JSON at byte {self.base + pos}: {what}")

    def records(self) -> Iterator[object]:
        pos = self._skip_space(0)
        assert self.buf[pos : pos + 1] == b"["
        pos = self._skip_space(pos + 1)
        if self.buf[pos : pos + 1] == b"]":
            pos += 1
        else:
            while True:
                if pos >= len(self.buf):
                    raise self._error(pos, "the file ends inside the array")
                start, end = self._element_end(pos)
                yield _loads(memoryview(self.buf)[start:end], self.name, self.base + start)
                pos = self._skip_space(end)
                sep = self.buf[pos : pos + 1]
                if sep == b"]":
                    pos += 1
                    break
                if sep != b",":
                    raise self._error(pos, "expected ',' or ']'" if sep else "the file ends inside the array")
                pos = self._skip_space(pos + 1)
                if self.buf[pos : pos + 1] == b"]":
                    raise self._error(pos, "trailing comma before ']'")
        pos = self._skip_space(pos)
        if pos < len(self.buf):
            raise self._error(pos, "unexpected data after the array")

    def _element_end(self, start: int) -> tuple[int, int]:
        """(start, end) of the element starting at `start`, reading more data as needed."""
        first = self.buf[start : start + 1]
        if first not in (b"{", b"[", b'"'):
            while True:
                end = _SCALAR.match(self.buf, start).end()
                if end < len(self.buf) or self.eof:
                    return start, end
                start -= self._more(start)
        depth, pos = 0, start
        while True:
            m = _STRUCTURAL.search(self.buf, pos)
            if m is None:
                if self.eof:
                    raise self._error(len(self.buf), "the file ends inside a record")
                pos = len(self.buf)
                shift = self._more(start)
                start, pos = start - shift, pos - shift
                continue
            c = m.group()
            if c == b'"':
                s = _STRING_REST.match(self.buf, m.end())
                if s is None:
                    if self.eof:
                        raise self._error(m.start(), "the file ends inside a string")
                    shift = self._more(start)
                    start, pos = start - shift, m.start() - shift
                    continue
                pos = s.end()
                if depth == 0:
                    return start, pos
                continue
            depth += 1 if c in b"{[" else -1
            pos = m.end()
            if depth == 0:
                return start, pos


def _parquet_records(stream: BinaryIO, loc) -> Iterator[object]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="neosft-") as tmp:
        if isinstance(loc, LocalLocation):
            path = loc.path
            _drain(stream)  # hash it
        else:  # Parquet needs random access: spool the object to disk, hashing as it goes
            path = Path(tmp) / "source.parquet"
            with open(path, "wb") as f:
                while chunk := stream.read(CHUNK):
                    f.write(chunk)
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises its own error types for corrupt files
            raise UserError(f"{loc.uri}: not a readable Parquet file: {e}") from None
        columns = ["conversations"] if "conversations" in pf.schema_arrow.names else []
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            if columns:
                for conversations in batch.column(0).to_pylist():
                    yield {"conversations": conversations}
            else:
                yield from ({} for _ in range(batch.num_rows))

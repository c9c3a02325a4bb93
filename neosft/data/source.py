"""Stream records out of a corpus without ever holding the whole of it.

Formats are recognised by content, not by name: a JSON array, JSON lines, either of them gzipped,
or Parquet. While it streams, a `Source` hashes the stored bytes and counts them and the records.

JSON is parsed by the standard library's C scanner (`json.JSONDecoder.raw_decode`) over a sliding
text window: it keeps every value exactly (lone surrogates included, which orjson refuses and ijson's
C backend alters), knows the byte of every syntax error, stops at a bounded depth, and costs what
ijson costs. The window grows geometrically for a long record (linear time), and whitespace between
records is skipped chunk by chunk (flat memory), also in JSON lines.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from neosft.errors import UserError
from neosft.storage import Readable, readable

CHUNK = 1 << 16  # 64 KiB: the window's step; measured as fast as 1 MiB and kinder to the cache
MAX_INT_DIGITS = 4000  # longer integers (Python refuses > 4300 digits) parse as Decimal: exact, never written


class Source:
    """A corpus (a SOURCE URI, or its `Readable` already resolved); iterate `records()` once, then read
    `sha256`, `bytes`, `count` and `revision`. `on_chunk` runs after every chunk read, for progress."""

    def __init__(self, file: Readable | str, on_chunk: Callable[[], None] = lambda: None):
        self.file = readable(file) if isinstance(file, str) else file
        self.uri = self.file.uri
        self.revision = self.file.revision
        self.bytes = 0
        self.count = 0
        self.on_chunk = on_chunk
        self._hash = hashlib.sha256()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def records(self) -> Iterator[object]:
        with self.file.open() as raw:
            stream = io.BufferedReader(_Tap(raw, self), CHUNK)
            try:
                for record in self._parse(stream):
                    self.count += 1
                    yield record
                _drain(stream)  # hash every stored byte, also those after the last record
            except (EOFError, OSError, zlib.error) as e:  # a truncated or corrupt gzip stream
                raise UserError(f"{self.uri}: cannot read: {e}") from None

    def _parse(self, stream: io.BufferedReader[Any]) -> Iterator[object]:
        if stream.peek(4)[:4] == b"PAR1":
            return _parquet_records(stream, self.file)
        text, name = self._text(stream)
        while (head := text.peek(CHUNK)) and not head.lstrip(_BLANKS):  # leading whitespace, however long
            text.read(len(head))
        first = head.lstrip(_BLANKS)[:1]
        if first == b"[":
            return _Values(text, name).array()
        if first == b"{":
            return _Values(text, name).lines()
        if not first:
            raise UserError(f"{name} is empty")
        raise UserError(
            f"{name}: unsupported format (starts with {first!r}); expected a JSON array, JSON lines, gzip or Parquet"
        )

    def _text(self, stream: io.BufferedReader) -> tuple[io.BufferedReader, str]:
        """The JSON text, gunzipped and past any UTF-8 byte order mark, and its name for errors."""
        name = self.uri
        if stream.peek(2)[:2] == b"\x1f\x8b":
            stream, name = (
                io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), CHUNK),
                f"{self.uri} (after gunzip)",
            )
        if stream.peek(3)[:3] == b"\xef\xbb\xbf":
            stream.read(3)
        return stream, name


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
        self.source.on_chunk()
        return n


def _drain(stream: BinaryIO) -> None:
    while stream.read(CHUNK):
        pass


def _int(digits: str) -> int | Decimal:
    return int(digits) if len(digits) <= MAX_INT_DIGITS else Decimal(digits)


_BLANKS = b" \t\n\r"  # JSON's whitespace
_SPACE = re.compile(r"[ \t\n\r]*")
_NOT_A_VALUE = ("", " ", "\t", "\n", "\r")  # where `_peek` must skip whitespace or read on before a value
_DECODER = json.JSONDecoder(parse_int=_int)


class _Values:
    """The JSON values of a text stream (the elements of one top-level array, or JSON lines), parsed with
    `raw_decode` over a window of decoded text. The window holds the current value and at most a chunk more."""

    def __init__(self, stream: BinaryIO, name: str):
        self.stream, self.name = stream, name
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf, self.pos, self.eof = "", 0, False
        self.decoded = 0  # bytes decoded into text so far: the window ends there

    def _more(self, size: int = CHUNK) -> None:
        """Drop the text before `pos` and append about `size` more bytes of it."""
        data = self.stream.read(size)
        pending = len(self.utf8.getstate()[0])
        try:
            text = self.utf8.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise UserError(f"{self.name}: invalid UTF-8 at byte {self.decoded + e.start}") from None
        self.decoded += pending + len(data) - len(self.utf8.getstate()[0])
        self.buf = self.buf[self.pos :] + text if self.pos < len(self.buf) else text
        self.pos = 0
        self.eof = not data

    def _offset(self, pos: int) -> int:
        """The byte offset in the stream of text position `pos` in the window."""
        return self.decoded - len(self.buf[pos:].encode("utf-8", "surrogatepass"))

    def _error(self, pos: int, what: str) -> UserError:
        return UserError(f"{self.name}: invalid JSON at byte {self._offset(pos)}: {what}")

    def _peek(self) -> str:
        """The next character that is not whitespace ('' at the end), skipping whitespace a chunk at a time."""
        while True:
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]  # \s* always matches
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self._more()

    def _value(self) -> object:
        """The value at `pos`, reading on (in growing steps: linear time) while it is incomplete."""
        size = CHUNK
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # else a number might go on in the next chunk
                    self.pos = end
                    return value
            except json.JSONDecodeError as e:
                incomplete = e.pos >= len(self.buf) - 6 or e.msg.startswith("Unterminated string")
                if self.eof or not incomplete:
                    raise self._error(e.pos, e.msg if not self.eof else "the file ends inside a record") from None
            except RecursionError:
                raise UserError(
                    f"{self.name}: the record at byte {self._offset(self.pos)} is nested deeper than "
                    "the JSON parser goes (about 1000 levels); no conversation is"
                ) from None
            self._more(size)
            size *= 2

    def array(self) -> Iterator[object]:
        self._peek()
        self.pos += 1  # the '['
        if self._peek() == "]":
            self.pos += 1
        else:
            while True:
                if self.buf[self.pos : self.pos + 1] in _NOT_A_VALUE and not self._peek():
                    raise self._error(self.pos, "the file ends inside the array")
                yield self._value()
                sep = self.buf[self.pos : self.pos + 1]  # most often right after the value
                if sep not in (",", "]"):
                    sep = self._peek()
                self.pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    raise self._error(self.pos - 1, "expected ',' or ']'" if sep else "the file ends inside the array")
                if self._peek() == "]":
                    raise self._error(self.pos, "trailing comma before ']'")
        if self._peek():
            raise self._error(self.pos, "unexpected data after the array")

    def lines(self) -> Iterator[object]:
        while self._peek():
            yield self._value()


def _parquet_records(stream: BinaryIO, file) -> Iterator[object]:
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="neosft-") as tmp:
        path = file.local_path()
        if path is not None:
            _drain(stream)  # hash it
        else:  # Parquet needs random access: spool the object to disk, hashing as it goes
            path = Path(tmp) / "source.parquet"
            with open(path, "wb") as f:
                while chunk := stream.read(CHUNK):
                    f.write(chunk)
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises its own error types for corrupt files
            raise UserError(f"{file.uri}: not a readable Parquet file: {e}") from None
        columns = ["conversations"] if "conversations" in pf.schema_arrow.names else []
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            if columns:
                for conversations in batch.column(0).to_pylist():
                    yield {"conversations": conversations}
            else:
                yield from ({} for _ in range(batch.num_rows))

"""Reading and writing files the way every command does (docs/formats.md).

`-` means stdin/stdout, a `.gz` file is read and written transparently, and outputs are
written atomically: a temporary file in the target's directory, renamed over the target
only when everything was written, so that a failed run leaves no partial file behind.
"""

from __future__ import annotations

import gc
import gzip
import io
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np

STDIO = "-"
_GZIP_MAGIC = b"\x1f\x8b"
_NO_VALUE = object()
_SHOWN_CHARS = 80


class InputError(ValueError):
    """Bad input, reported as `FILE:LINE: field: what is wrong (value)`.

    Built either from parts, `InputError(source, line, field, problem, value)`, where
    `source` names the file (or, for records passed in memory, `record INDEX`), `line` is
    1-based or None and `field` is None when the problem is the line as a whole; or from a
    finished message, `InputError(message)`. The command line prints the message and exits
    with status 2.
    """

    def __init__(
        self,
        source: str,
        line: int | None = None,
        field: str | None = None,
        problem: str | None = None,
        value: Any = _NO_VALUE,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem
        self.value_text = None if value is _NO_VALUE else show_value(value)
        super().__init__(self._message())

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def _message(self) -> str:
        if self.problem is None:
            return self.where
        parts = [self.where]
        if self.field is not None:
            parts.append(self.field)
        text = ": ".join(parts) + ": " + self.problem
        if self.value_text is not None:
            text += f" ({self.value_text})"
        return text

    def with_line_offset(self, lines: int) -> InputError:
        """The same error with its line number moved on by `lines`."""
        line = None if self.line is None else self.line + lines
        return _restore(self.source, line, self.field, self.problem, self.value_text)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _restore, (self.source, self.line, self.field, self.problem, self.value_text)


def _restore(
    source: str, line: int | None, field: str | None, problem: str | None, value_text: str | None
) -> InputError:
    err = InputError(source, line, field, problem)
    err.value_text = value_text
    err.args = (err._message(),)
    return err


def show_value(value: Any) -> str:
    """A value as it would look in JSON (NaN and Infinity included), cut to a readable length."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace").strip()
    else:
        try:
            text = json.dumps(value, allow_nan=True, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return text


def display_name(path: str | os.PathLike[str]) -> str:
    """How a path is named in messages: `<stdin>` for `-`."""
    return "<stdin>" if str(path) == STDIO else str(path)


@contextmanager
def open_binary(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """The decompressed bytes of `path` (`-` = stdin; gzip recognised by suffix or magic bytes)."""
    if str(path) == STDIO:
        stream: IO[bytes] = sys.stdin.buffer
        if not isinstance(stream, io.BufferedReader):
            stream = io.BufferedReader(stream)  # type: ignore[arg-type]
        if stream.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                yield unzipped
        else:
            yield stream
        return
    with open(path, "rb") as raw:
        if str(path).endswith(".gz") or raw.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


def is_plain_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular, uncompressed file: one that can be read from any offset."""
    if str(path) == STDIO or str(path).endswith(".gz") or not os.path.isfile(path):
        return False
    with open(path, "rb") as raw:
        return raw.read(2) != _GZIP_MAGIC


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole (decompressed) content of `path`."""
    with open_binary(path) as stream:
        return stream.read()


def open_text_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The lines of `path` as text, line ends included (`-` = stdin, `.gz` decompressed)."""
    with open_binary(path) as stream:
        for raw in stream:
            yield raw.decode("utf-8")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only if the `with` block completes.

    `-` writes to stdout. A path ending in `.gz` is gzip-compressed with no file name and
    mtime 0 in the header, so the same content gives the same bytes.
    """
    if str(path) == STDIO:
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "xb") as raw:
            if target.name.endswith(".gz"):
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped:
                    yield zipped
            else:
                yield raw
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------------------------------
# JSON lines: one JSON object per line, decoded a whole block at a time.
#
# The fast path hands a block to msgspec in one call. It is taken only when every line of
# the block starts with `{` and ends with `}`: a line break between `}` and `{` can only
# separate two top-level values, so the block then holds exactly one object per line and
# record i is on line i. Anything else (blank lines, a record that fails its type) goes
# through the line-by-line path, which finds the first bad line and says what is wrong.

_NEWLINE, _CR, _OPEN, _CLOSE = 10, 13, ord("{"), ord("}")
_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NAMED_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>[^`]*)`$")
DEFAULT_BLOCK_BYTES = 8 << 20
_READ_AHEAD = 1 << 16


@dataclass
class DecodedBlock:
    """The records of one block, the line number of each, and how many lines the block had."""

    records: list[Any]
    lines: np.ndarray
    n_lines: int


def decode_block(
    data: bytes | memoryview, decoder: msgspec.json.Decoder, source: str, first_line: int = 1
) -> DecodedBlock:
    """Decode a block of JSON lines; the first bad line raises InputError."""
    if not len(data):
        return DecodedBlock([], np.empty(0, dtype=np.int64), 0)
    with gc_paused():
        records = _decode_clean_block(data, decoder)
    if records is not None:
        lines = np.arange(first_line, first_line + len(records), dtype=np.int64)
        return DecodedBlock(records, lines, len(records))
    data = bytes(data)
    decoded = list(iter_decoded_lines(data, decoder, source, first_line))
    lines = np.fromiter((line for line, _ in decoded), dtype=np.int64, count=len(decoded))
    n_lines = data.count(b"\n") + (not data.endswith(b"\n"))
    return DecodedBlock([record for _, record in decoded], lines, n_lines)


def _decode_clean_block(data: bytes | memoryview, decoder: msgspec.json.Decoder) -> list[Any] | None:
    """All records of the block when it is cleanly one object per line, else None."""
    chars = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(chars == _NEWLINE)
    if ends.size == 0 or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    last = ends - 1
    last -= (last >= 0) & (chars[np.maximum(last, 0)] == _CR)
    if (last < 0).any() or (chars[last] != _CLOSE).any():
        return None
    if chars[0] != _OPEN or (chars[ends[:-1] + 1] != _OPEN).any():
        return None
    try:
        records = decoder.decode_lines(data)
    except msgspec.MsgspecError:
        return None
    return records if len(records) == ends.size else None


def iter_decoded_lines(
    data: bytes, decoder: msgspec.json.Decoder, source: str, first_line: int = 1
) -> Iterator[tuple[int, Any]]:
    """(line number, record) for each non-blank line; a bad line raises InputError."""
    for offset, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            record = decoder.decode(line)
        except msgspec.MsgspecError as exc:
            raise explain_line(line, exc, source, first_line + offset) from None
        yield first_line + offset, record


def explain_line(line: bytes, exc: Exception, source: str, line_no: int | None) -> InputError:
    """What is wrong with one line that msgspec refused, as an InputError naming the field."""
    try:
        # The standard library also reads NaN and Infinity, so that they can be named.
        parsed = json.loads(line)
    except ValueError:
        return InputError(source, line_no, None, f"invalid JSON: {_lower_first(str(exc))}", line)
    if isinstance(exc, msgspec.ValidationError):
        return explain_validation(str(exc), parsed, source, line_no)
    found = _first_non_finite(parsed, "")
    if found is not None:
        return InputError(source, line_no, found[0], "not a finite number", found[1])
    return InputError(source, line_no, None, f"invalid JSON: {_lower_first(str(exc))}", line)


def explain_validation(message: str, record: Any, source: str, line_no: int | None) -> InputError:
    """Turn msgspec's `what - at `$.path`` into `field: what (value)`."""
    match = _AT_PATH.match(message)
    assert match is not None
    # msgspec writes `[...]` for "some value of this mapping": name the mapping itself.
    what, path = match["msg"], (match["path"] or "").split("[...]")[0]
    named = _NAMED_FIELD.match(what)
    if named is not None:
        field = _join_path(path, named["name"])
        if named["kind"] == "missing required":
            return InputError(source, line_no, field, "missing")
        return InputError(source, line_no, field, "unknown field", _lookup(record, f"{path}.{named['name']}"))
    if not path and what.startswith("Expected `object`"):
        return InputError(source, line_no, None, "not a JSON object", record)
    value = _lookup(record, path)
    if what == "Number out of range" and isinstance(value, float) and not math.isfinite(value):
        what = "not a finite number"
    elif what.startswith("Invalid enum value"):
        what = "not one of the allowed values"
    return InputError(source, line_no, _join_path(path, None), _lower_first(what), value)


def _join_path(path: str, name: str | None) -> str | None:
    field = path.lstrip(".")
    if name is not None:
        field = f"{field}.{name}" if field else name
    return field or None


def _lookup(record: Any, path: str) -> Any:
    value = record
    for key, index in _PATH_TOKEN.findall(path):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _NO_VALUE
    return value


def _first_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path.lstrip("."), value
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        found = _first_non_finite(sub, sub_path)
        if found is not None:
            return found
    return None


def _lower_first(text: str) -> str:
    text = text.removeprefix("JSON is malformed: ")
    return text[:1].lower() + text[1:]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Hold the cycle collector while many short-lived, acyclic objects are built.

    Decoding or encoding a block allocates hundreds of thousands of floats, tuples and
    lists; the collections they would set off cost more than the work itself.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def iter_blocks(
    stream: IO[bytes], *, block_bytes: int = DEFAULT_BLOCK_BYTES, start: int = 0, end: int | None = None
) -> Iterator[memoryview]:
    """The bytes from offset `start` (a block boundary) to `end` (or EOF), in whole-line blocks.

    Block boundaries are fixed by the content alone: boundary k is the first line end at
    or after byte k * block_bytes. Reading from the start or from any boundary therefore
    gives the same blocks, so sums taken per block and added in block order are the same
    however the file was shared out among workers.

    Each block is a view into one buffer that the next block reuses (copying gigabytes
    would cost more than decoding them): use it, or copy it, before asking for the next.
    """
    buf = bytearray(block_bytes + _READ_AHEAD)
    filled = 0  # bytes of buf holding data
    pos = start  # offset of buf[0] in the stream
    eof = False

    def fill(upto: int) -> None:
        nonlocal buf, filled, eof
        if upto > len(buf):
            bigger = bytearray(max(upto, 2 * len(buf)))
            bigger[:filled] = memoryview(buf)[:filled]
            buf = bigger
        view = memoryview(buf)
        while filled < upto and not eof:
            want = upto - filled if end is None else min(upto - filled, end - pos - filled)
            got = stream.readinto(view[filled : filled + want]) if want > 0 else 0
            if got:
                filled += got
            else:
                eof = True

    while True:
        target = (pos // block_bytes + 1) * block_bytes - pos
        fill(target)
        search_from, cut = target - 1, -1
        while cut < 0:
            found = buf.find(b"\n", search_from, filled)
            if found >= 0:
                cut = found + 1
            elif eof:
                break
            else:
                search_from = filled
                fill(filled + _READ_AHEAD)
        if cut < 0:
            if filled:
                yield memoryview(buf)[:filled]
            return
        yield memoryview(buf)[:cut]
        buf[: filled - cut] = bytes(memoryview(buf)[cut:filled])  # a copy: the two ranges may overlap
        filled -= cut
        pos += cut


def block_boundary(stream: IO[bytes], k: int, size: int, block_bytes: int = DEFAULT_BLOCK_BYTES) -> int:
    """Offset of block boundary k (see iter_blocks) in a seekable stream of `size` bytes."""
    if k <= 0:
        return 0
    at = k * block_bytes - 1
    while at < size:
        stream.seek(at)
        piece = stream.read(1 << 16)
        found = piece.find(b"\n")
        if found >= 0:
            return at + found + 1
        at += len(piece)
    return size

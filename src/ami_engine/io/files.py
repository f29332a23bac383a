"""Reading and writing files the way every command does (docs/formats.md).

`-` means stdin/stdout, a `.gz` file is read and written transparently, and outputs are
written atomically: a temporary file in the target's directory, renamed over the target
only when everything was written, so that a failed run leaves no partial file behind.
"""

from __future__ import annotations

import errno
import gc
import gzip
import hashlib
import io
import json
import math
import os
import re
import secrets
import sys
import zlib
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


def display_name(path: str | os.PathLike[str] | InMemoryFile) -> str:
    """How a path is named in messages: `<stdin>` for `-`."""
    if isinstance(path, InMemoryFile):
        return path.name
    return "<stdin>" if str(path) == STDIO else str(path)


@dataclass(frozen=True)
class InMemoryFile:
    """The raw bytes of a file (or of stdin), read once, standing in for its path.

    A reader given one reads these bytes instead of opening a path again, so that what is
    hashed and what is parsed are the same bytes, and stdin can be read more than once.
    """

    name: str
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def read_once(path: str | os.PathLike[str]) -> InMemoryFile:
    """The raw (still compressed) bytes of `path` (`-` = stdin) in memory."""
    source = display_name(path)
    if str(path) == STDIO:
        return InMemoryFile(source, sys.stdin.buffer.read())
    try:
        with open(path, "rb") as raw:
            return InMemoryFile(source, raw.read())
    except OSError as exc:
        raise os_input_error(exc, source) from None


def os_input_error(exc: OSError, source: str | None = None) -> InputError:
    """An operating-system error on a file as an InputError naming the file:
    `FILE: no such file or directory`."""
    name = source if source is not None else str(exc.filename) if exc.filename is not None else "<file>"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        name = name[:_SHOWN_CHARS - 3] + "..." if len(name) > _SHOWN_CHARS else name
    return InputError(name, None, None, _lower_first(reason))


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


@contextmanager
def open_binary(path: str | os.PathLike[str] | InMemoryFile) -> Iterator[IO[bytes]]:
    """The decompressed bytes of `path` (`-` = stdin; gzip recognised by suffix or magic bytes).

    A file that cannot be opened, or gzip data that is corrupt or cut short, is an
    InputError naming the file, whenever the reading finds it.
    """
    source = display_name(path)
    try:
        with _open_binary(path) as stream:
            yield stream
    except _GZIP_ERRORS as exc:
        problem = "cut short" if isinstance(exc, EOFError) else str(exc).removeprefix("Error -3 while decompressing")
        raise InputError(source, None, None, f"not valid gzip data ({problem.strip(' :')})") from None
    except OSError as exc:
        raise os_input_error(exc, source) from None


@contextmanager
def _open_binary(path: str | os.PathLike[str] | InMemoryFile) -> Iterator[IO[bytes]]:
    if isinstance(path, InMemoryFile):
        stream: IO[bytes] = io.BufferedReader(io.BytesIO(path.raw))  # type: ignore[arg-type]
        gz = path.name.endswith(".gz") or path.raw[:2] == _GZIP_MAGIC
    elif str(path) == STDIO:
        stream = sys.stdin.buffer
        if not isinstance(stream, io.BufferedReader):
            stream = io.BufferedReader(stream)  # type: ignore[arg-type]
        gz = stream.peek(2)[:2] == _GZIP_MAGIC
    else:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
        gz = str(path).endswith(".gz") or stream.peek(2)[:2] == _GZIP_MAGIC  # type: ignore[attr-defined]
    try:
        if gz:
            with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield stream
    finally:
        if not isinstance(path, str | os.PathLike) or str(path) != STDIO:
            stream.close()


def is_plain_file(path: str | os.PathLike[str] | InMemoryFile) -> bool:
    """True for a regular, uncompressed file: one that can be read from any offset."""
    if isinstance(path, InMemoryFile) or str(path) == STDIO or str(path).endswith(".gz") or not os.path.isfile(path):
        return False
    with open(path, "rb") as raw:
        return raw.read(2) != _GZIP_MAGIC


def read_bytes(path: str | os.PathLike[str] | InMemoryFile) -> bytes:
    """The whole (decompressed) content of `path`."""
    with open_binary(path) as stream:
        return stream.read()


def read_text(path: str | os.PathLike[str] | InMemoryFile) -> str:
    """The whole (decompressed) content of `path` as UTF-8 text; bad UTF-8 is an InputError
    naming the line."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(display_name(path), line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def open_text_lines(path: str | os.PathLike[str] | InMemoryFile) -> Iterator[str]:
    """The lines of `path` as text, line ends included (`-` = stdin, `.gz` decompressed)."""
    with open_binary(path) as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(display_name(path), number, None, "not UTF-8 text") from None
            yield text


# ------------------------------------------------------------------------------ outputs
#
# An output is written to a hidden temporary file beside it, `.NAME.ami-tmp-PID-RANDOM`,
# and renamed over it when complete. A process killed while writing leaves its temporary
# file behind; the next output written to the same folder removes those whose process is
# gone.

_TEMP_MARK = ".ami-tmp-"


def temp_path_for(target: Path) -> Path:
    """A new temporary file name beside `target`, after clearing stale ones from its folder."""
    remove_stale_temps(target.parent)
    return target.with_name(f".{target.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files in `folder` left by processes no longer running."""
    removed = []
    try:
        entries = list(Path(folder).glob(f".*{_TEMP_MARK}*"))
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name.rsplit(_TEMP_MARK, 1)[1].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a number this system cannot ask about: leave it
    return True


@contextmanager
def _compressed_if_gz(raw: IO[bytes], name: str) -> Iterator[IO[bytes]]:
    """`raw`, gzip-compressed when `name` ends in `.gz` (no file name, mtime 0: same content, same bytes)."""
    if name.endswith(".gz"):
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped:
            yield zipped  # type: ignore[misc]
    else:
        yield raw


def _open_temp(target: Path) -> tuple[Path, IO[bytes]]:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path_for(target)
        return temp, open(temp, "xb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise os_input_error(exc, str(target)) from None


def _replace(temp: Path, target: Path) -> None:
    try:
        os.replace(temp, target)
    except OSError as exc:
        raise os_input_error(exc, str(target)) from None


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only if the `with` block completes.

    `-` writes to stdout. A path ending in `.gz` is gzip-compressed with no file name and
    mtime 0 in the header, so the same content gives the same bytes. A file that cannot
    be written is an InputError naming it.
    """
    if str(path) == STDIO:
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target = Path(path)
    temp, raw = _open_temp(target)
    try:
        with raw, _compressed_if_gz(raw, target.name) as stream:
            yield stream
        _replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_outputs(outputs: dict[str, bytes | None]) -> None:
    """Write several files as one set: all of them, or, on any failure, none.

    Each file is written in full to its temporary file first; only then is each path
    mapped to None removed (a file of an earlier run that this run does not produce) and
    each temporary file renamed into place. `-` is written to stdout last.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in outputs.items():
            if data is None or path == STDIO:
                continue
            target = Path(path)
            temp, raw = _open_temp(target)
            temps.append((temp, target))
            with raw, _compressed_if_gz(raw, target.name) as stream:
                stream.write(data)
        for path, data in outputs.items():
            if data is None and path != STDIO and os.path.isfile(path):
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise os_input_error(exc, path) from None
        for temp, target in temps:
            _replace(temp, target)
    except BaseException:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise
    for path, data in outputs.items():
        if path == STDIO and data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()


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
# msgspec refuses bad UTF-8 inside strings, and nesting deeper than the stack, with these.
DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)
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
    except DECODE_ERRORS:
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
        except DECODE_ERRORS as exc:
            raise explain_line(line, exc, source, first_line + offset) from None
        yield first_line + offset, record


def explain_line(line: bytes, exc: Exception, source: str, line_no: int | None) -> InputError:
    """What is wrong with one line that msgspec refused, as an InputError naming the field."""
    if isinstance(exc, RecursionError):
        return InputError(source, line_no, None, "invalid JSON: nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        return InputError(source, line_no, None, "not UTF-8 text inside a string")
    try:
        # The standard library also reads NaN and Infinity, so that they can be named.
        parsed = json.loads(line)
    except (ValueError, RecursionError):
        return InputError(source, line_no, None, f"invalid JSON: {_lower_first(str(exc))}", line)
    if isinstance(exc, msgspec.ValidationError):
        return explain_validation(str(exc), parsed, source, line_no)
    try:
        found = _first_non_finite(parsed, "")
    except RecursionError:
        found = None
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

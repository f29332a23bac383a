"""Opening input the way every command does: `-` is stdin, gzip is read transparently
(by suffix or by its magic bytes), and a file read once can stand in for its path (in
memory, or streamed through its SHA-256).

A path must name a regular file (or a link to one): a FIFO, a device or a folder is
refused by what its opened descriptor is, before anything is read from it, so that
`/dev/zero` cannot fill memory nor a FIFO with no writer hang the command.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import stat
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from ._errors import InputError, os_input_error

STDIO = "-"
_GZIP_MAGIC = b"\x1f\x8b"
# Opening a FIFO for reading waits for a writer, and a terminal may become the controlling
# one: neither, before the descriptor can be looked at.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def display_name(path: str | os.PathLike[str] | InMemoryFile | StreamedFile) -> str:
    """How a path is named in messages: `<stdin>` for `-`."""
    if isinstance(path, InMemoryFile | StreamedFile):
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


class StreamedFile:
    """A file (or stdin) to be read once, front to back, by one reader (open_binary), its
    SHA-256 taken of the raw bytes as they pass: what is hashed is what is parsed, as with
    InMemoryFile, without holding the file in memory. `sha256` is known once the reader
    is done; a second reading is refused (a file may not be read twice as one)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.name = display_name(path)
        self._path = path
        self._digest = hashlib.sha256()
        self._state = "new"  # then "reading", then "read"

    @property
    def sha256(self) -> str:
        if self._state != "read":
            raise RuntimeError(f"{self.name}: its SHA-256 is known once it has been read to its end")
        return self._digest.hexdigest()

    @contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        if self._state != "new":
            raise RuntimeError(f"{self.name}: a streamed file is read once")
        self._state = "reading"
        stdin = str(self._path) == STDIO
        raw = sys.stdin.buffer if stdin else open_regular(self._path)
        with io.BufferedReader(_Hashing(raw, self._digest, close=not stdin), 1 << 20) as hashed:
            yield hashed
            while hashed.read(1 << 20):  # what the reader left (nothing, for a reader that reads to the end)
                pass
        self._state = "read"


class _Hashing(io.RawIOBase):
    """The bytes of `raw`, each added to `digest` as it is read."""

    def __init__(self, raw: IO[bytes], digest: Any, *, close: bool) -> None:
        self._raw, self._digest, self._close = raw, digest, close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n

    def close(self) -> None:
        if not self.closed and self._close:
            self._raw.close()
        super().close()


def not_regular(mode: int, source: str) -> InputError | None:
    """The error for a file of status `mode` that is not a regular file, naming what it is;
    None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = next((name for is_kind, name in _KINDS if is_kind(mode)), "not a file")
    return InputError(source, None, None, f"is {kind}, not a regular file")


def regular_fd(path: str | os.PathLike[str], source: str | None = None) -> int:
    """A descriptor of `path` open for reading, once it shows a regular file (a link to one
    is followed); an InputError naming what it is otherwise. The check is made on the
    descriptor that is then read, so a file put in its place meanwhile is not read."""
    source = display_name(path) if source is None else source
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise os_input_error(exc, source) from None
    try:
        problem = not_regular(os.fstat(fd).st_mode, source)
        if problem is not None:
            raise problem
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """`path` opened for reading as a binary stream, if it is a regular file (regular_fd)."""
    return os.fdopen(regular_fd(path), "rb")


def read_once(path: str | os.PathLike[str]) -> InMemoryFile:
    """The raw (still compressed) bytes of `path` (`-` = stdin) in memory."""
    source = display_name(path)
    if str(path) == STDIO:
        return InMemoryFile(source, sys.stdin.buffer.read())
    try:
        with open_regular(path) as raw:
            return InMemoryFile(source, raw.read())
    except OSError as exc:
        raise os_input_error(exc, source) from None


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


@contextmanager
def open_binary(path: str | os.PathLike[str] | InMemoryFile | StreamedFile) -> Iterator[IO[bytes]]:
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
def _open_binary(path: str | os.PathLike[str] | InMemoryFile | StreamedFile) -> Iterator[IO[bytes]]:
    if isinstance(path, StreamedFile):
        with path._open() as hashed:
            if path.name.endswith(".gz") or hashed.peek(2)[:2] == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=hashed, mode="rb") as unzipped:
                    yield unzipped  # type: ignore[misc]
            else:
                yield hashed
        return
    if isinstance(path, InMemoryFile):
        stream: IO[bytes] = io.BufferedReader(io.BytesIO(path.raw))  # type: ignore[arg-type]
        gz = path.name.endswith(".gz") or path.raw[:2] == _GZIP_MAGIC
    elif str(path) == STDIO:
        stream = sys.stdin.buffer
        if not isinstance(stream, io.BufferedReader):
            stream = io.BufferedReader(stream)  # type: ignore[arg-type]
        gz = stream.peek(2)[:2] == _GZIP_MAGIC
    else:
        stream = open_regular(path)
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


def is_plain_file(path: str | os.PathLike[str] | InMemoryFile | StreamedFile) -> bool:
    """True for a regular, uncompressed file: one that can be read from any offset."""
    if isinstance(path, InMemoryFile | StreamedFile) or str(path) == STDIO or str(path).endswith(".gz"):
        return False
    try:
        with open_regular(path) as raw:
            return raw.read(2) != _GZIP_MAGIC
    except InputError:
        return False


def read_bytes(path: str | os.PathLike[str] | InMemoryFile, *, limit: int | None = None,
               what: str = "this input") -> bytes:
    """The whole (decompressed) content of `path`. With `limit`, content longer than that
    is an InputError saying it is too large for `what`, and is read no further: a small
    gzip file can hold gigabytes."""
    with open_binary(path) as stream:
        data = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(data) > limit:
        size = f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"
        raise InputError(display_name(path), None, None, f"larger than {size} (decompressed): too large for {what}")
    return data


def read_text(path: str | os.PathLike[str] | InMemoryFile, *, limit: int | None = None,
              what: str = "this input") -> str:
    """The whole (decompressed) content of `path` as UTF-8 text; bad UTF-8 is an InputError
    naming the line. `limit` and `what` as for read_bytes."""
    data = read_bytes(path, limit=limit, what=what)
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


__all__ = [
    "STDIO",
    "InMemoryFile",
    "StreamedFile",
    "display_name",
    "is_plain_file",
    "not_regular",
    "open_binary",
    "open_regular",
    "regular_fd",
    "open_text_lines",
    "read_bytes",
    "read_once",
    "read_text",
]

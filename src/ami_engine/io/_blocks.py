"""JSON lines read a whole block at a time, with block boundaries fixed by the content,
so that the same file gives the same blocks however it is shared out among workers.
"""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import msgspec
import numpy as np

from ._errors import DECODE_ERRORS, explain_line

# JSON lines: one JSON object per line, decoded a whole block at a time.
#
# The fast path hands a block to msgspec in one call. It is taken only when every line of
# the block starts with `{` and ends with `}`: a line break between `}` and `{` can only
# separate two top-level values, so the block then holds exactly one object per line and
# record i is on line i. Anything else (blank lines, a record that fails its type) goes
# through the line-by-line path, which finds the first bad line and says what is wrong.

_NEWLINE, _CR, _OPEN, _CLOSE = 10, 13, ord("{"), ord("}")
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


def usable_cpus() -> int:
    """The CPUs this process may run on: what reading a file in parts is shared among."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Let this process reuse the memory it frees rather than hand it back at once (glibc).

    Reading a large file a batch at a time allocates and frees arrays of a few hundred KB
    to a few MB thousands of times; by default glibc hands much of it back after each
    batch and the kernel zeroes every page again on the next batch's first touch (at 10
    million decisions, half a second of a 1.4 s `metrics` on Parquet). After this, blocks
    up to 32 MB (the most glibc's own sliding threshold reaches: JSONL blocks of 8 MB
    included) come from the heap, and up to 64 MB of freed heap is kept for the next
    batch. Processes forked afterwards inherit it. Where malloc is not glibc's, nothing
    changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no such library or function (not glibc, not POSIX)
        return
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    mallopt(_M_TRIM_THRESHOLD, 64 << 20)


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


__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DecodedBlock",
    "block_boundary",
    "decode_block",
    "gc_paused",
    "iter_blocks",
    "iter_decoded_lines",
]

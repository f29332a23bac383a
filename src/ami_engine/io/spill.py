"""States' values kept in a file on disk instead of this process's memory.

Learning from months of traces needs every state's nine values (72 bytes a decision) many
times over, but only a shard or a part of them at once. A `RowSpill` writes them, block
by block as they are read, to a temporary file and maps it read-only: the array it gives
is an ordinary NumPy array (np.memmap) for every reader, and the values are the same
bits. Its pages come from the system's file cache when read and go back to it when let
go (`take_rows`, `let_go`): the process holds what it is working on, not the file.

The file lives in the system's temporary folder (TMPDIR) and is removed when the array
is no longer used, or when the process ends; a process killed outright leaves it there
(`ami-engine-states-*.f64`). A worker process on the same machine maps the same file
(`SpilledRows`) to build its shards itself.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
PREFIX = "ami-engine-states-"
# Where the system cannot be told (no madvise), the pages stay until the system wants them.
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None) if hasattr(mmap.mmap, "madvise") else None


class RowSpill:
    """Rows of `width` float64 values appended to a temporary file, then mapped (finish)."""

    def __init__(self, width: int, directory: str | None = None) -> None:
        self.width = width
        fd, self.path = tempfile.mkstemp(prefix=PREFIX, suffix=".f64", dir=directory)
        self._file = os.fdopen(fd, "wb")
        self._done = weakref.finalize(self, _remove, self.path)
        self.rows = 0

    def add(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows of shape {rows.shape}; expected (n, {self.width})")
        if rows.size:
            try:
                self._file.write(rows.data)
            except OSError as exc:
                raise self._failed(exc) from None
        self.rows += rows.shape[0]

    def finish(self) -> np.ndarray:
        """The rows written, read-only; the file is removed once the array (and every view
        of it) is gone. No rows: an empty in-memory array (nothing to map)."""
        try:
            self._file.close()
        except OSError as exc:
            raise self._failed(exc) from None
        self._done.detach()
        if not self.rows:
            _remove(self.path)
            return np.empty((0, self.width))
        values = np.memmap(self.path, dtype=np.float64, mode="r", shape=(self.rows, self.width))
        # The mapping is the object every view shares: the file goes with the last of them.
        weakref.finalize(values._mmap, _remove, self.path)
        return values

    def abandon(self) -> None:
        """Close and remove the file (reading failed part way)."""
        try:
            self._file.close()
        except OSError:
            pass  # what could not be written is of no use now
        self._done()

    def _failed(self, exc: OSError) -> OSError:
        """A write that failed (a full disk, most likely), saying what the file is for; the
        file is removed."""
        self.abandon()
        return OSError(exc.errno, f"{exc.strerror or exc}; learning keeps the states' values in this temporary "
                       f"file (72 bytes a state): set TMPDIR to a folder with room for them", self.path)


def spilled(width: int, read: Callable[[RowSpill], T]) -> tuple[T, np.ndarray]:
    """`read(sink)`'s result, and the rows it wrote to `sink` (RowSpill.finish); the file is
    removed when `read` fails."""
    sink = RowSpill(width)
    try:
        found = read(sink)
    except BaseException:
        sink.abandon()
        raise
    return found, sink.finish()


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _mapping(values: Any) -> mmap.mmap | None:
    found = getattr(values, "_mmap", None)
    return found if isinstance(found, mmap.mmap) else None


def let_go(values: Any) -> None:
    """Hand back the pages of a mapped array that this process has read (they stay in the
    system's file cache, and are read from it again when needed); nothing for any other
    array."""
    found = _mapping(values)
    if found is not None and not found.closed and _DONTNEED is not None:
        found.madvise(_DONTNEED)


def take_rows(values: np.ndarray, piece: Any) -> np.ndarray:
    """`values[piece]` as a contiguous array of its own; a mapped array's pages are let go
    after (its reading costs the copy, never the whole file)."""
    if _mapping(values) is None:
        return np.ascontiguousarray(values[piece])
    out = np.array(values[piece], order="C", subok=False)  # a copy, even of a contiguous slice
    let_go(values)
    return out


def rows_kept_alike(values: np.ndarray, index: np.ndarray, block_rows: int = 1 << 20) -> np.ndarray:
    """The rows of `values` at `index` (in that order), kept as `values` is: in a temporary
    file of their own when it is mapped (copied block by block), else in memory."""
    if _mapping(values) is None:
        return np.ascontiguousarray(values[index])
    spill = RowSpill(values.shape[1])
    try:
        for start in range(0, len(index), block_rows):
            spill.add(take_rows(values, index[start:start + block_rows]))
    except BaseException:
        spill.abandon()
        raise
    return spill.finish()


def column(values: np.ndarray, j: int, block_rows: int = 1 << 20) -> np.ndarray:
    """Column j of `values` as a contiguous array (the same values as `values[:, j]`), read
    block by block so that a mapped array's pages are let go as it goes."""
    if _mapping(values) is None:
        return values[:, j]
    out = np.empty(values.shape[0], dtype=values.dtype)
    for start in range(0, values.shape[0], block_rows):
        out[start:start + block_rows] = values[start:start + block_rows, j]
        let_go(values)
    return out


@dataclass(frozen=True)
class SpilledRows:
    """Where a spilled array's rows are: enough for another process on this machine to map
    the same file (`open`), which must not have changed in between."""

    path: str
    shape: tuple[int, int]
    identity: tuple[int, int, int]  # (device, inode, size) of the file when it was mapped

    @classmethod
    def of(cls, values: Any) -> SpilledRows | None:
        """Where `values` lie, when it is a whole array spilled by RowSpill; else None."""
        if _mapping(values) is None or not isinstance(getattr(values, "filename", None), str):
            return None
        if getattr(values, "offset", 0) or values.ndim != 2 or not values.flags.c_contiguous:
            return None
        size = values.shape[0] * values.shape[1] * 8
        try:
            st = os.stat(values.filename)
        except OSError:
            return None
        if st.st_size != size:
            return None
        return cls(values.filename, (int(values.shape[0]), int(values.shape[1])), (st.st_dev, st.st_ino, st.st_size))

    def open(self) -> np.ndarray:
        """The rows, mapped read-only here; an OSError when the file is not the one spilled."""
        st = os.stat(self.path)
        if (st.st_dev, st.st_ino, st.st_size) != self.identity:
            raise OSError(f"{self.path}: not the states file this work was given (changed or replaced)")
        return np.memmap(self.path, dtype=np.float64, mode="r", shape=self.shape)

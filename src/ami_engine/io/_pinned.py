"""Reading a data file as one unchanging thing: the bytes hashed are the bytes parsed.

A Parquet data set is read in ranges, not front to back, and its SHA-256 (which the gate
compares with the one a suggestion names) is taken by a pass of its own. Reading each file
through a descriptor opened once closes the gap between the two:

- the file is opened once, and refused unless that descriptor shows a regular file (a
  FIFO is not waited on, a device not read without end);
- both the hash and the reader (pyarrow, through /proc/self/fd/N where the system has
  it) read that descriptor's file, so a file renamed or replaced under the same path
  while it is read is not seen;
- its status (device, inode, size, modification and change times) is taken before the
  hash and again after the reading: a file written in place meanwhile changes its change
  time, which no user can set back, and is refused. A file changed in the last
  SETTLE_SECONDS is looked at once it is that old, so that a change made in the same tick
  of the system's file clock as the first look cannot go unseen.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ._errors import os_input_error
from ._open import regular_fd

SETTLE_SECONDS = 0.05  # many ticks of the coarse clock file times are taken from
_BLOCK = 1 << 20


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _settled(fd: int) -> os.stat_result:
    """The file's status, taken once its last change (its change time, which only the
    system sets) is SETTLE_SECONDS old: a change made later shows as a later change time.
    A change time ahead of this machine's clock (another host's, over a network file
    system) gives no such wait."""
    st = os.fstat(fd)
    age = time.time() - st.st_ctime_ns / 1e9
    if 0 <= age < SETTLE_SECONDS:
        time.sleep(SETTLE_SECONDS - age)
        st = os.fstat(fd)
    return st


def _sha256_of(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, _BLOCK, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


@dataclass
class Pinned:
    """A file held open for reading: `source` is the name to open it by (its descriptor's,
    where the system has one), `sha256` its digest when asked for."""

    file: str
    source: str
    sha256: str | None


@contextmanager
def pinned(file: str, *, digest: bool) -> Iterator[Pinned]:
    """`file` held open while the caller reads it through `source`; with `digest`, its
    SHA-256 from the same descriptor. Raises InputError when it changed meanwhile."""
    fd = regular_fd(file, file)
    try:
        try:
            before = _settled(fd)
            sha = _sha256_of(fd) if digest else None
        except OSError as exc:
            raise os_input_error(exc, file) from None
        by_descriptor = f"/proc/self/fd/{fd}"
        yield Pinned(file, by_descriptor if os.path.exists(by_descriptor) else file, sha)
        after = os.fstat(fd)
        if _identity(after) != _identity(before):
            raise InputError(file, None, None, "changed while it was being read; read it again when nothing "
                                               "writes to it")
    finally:
        os.close(fd)


class DatasetDigest:
    """The SHA-256 of a Parquet file or folder (io.parquet.dataset_sha256), made from each
    file's digest as it is read: of a file, its bytes'; of a folder, of each file's path
    relative to it and digest, in reading order."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = os.fspath(path)
        self.folder = os.path.isdir(self.root)
        self._files: list[str] | None = None
        self._parts: list[tuple[str, str]] = []

    def expect(self, files: list[str]) -> None:
        self._files = list(files)
        self._parts = []

    def add(self, file: str, sha256: str) -> None:
        self._parts.append((file, sha256))

    def hexdigest(self) -> str:
        if self._files is None or [f for f, _ in self._parts] != self._files:
            raise RuntimeError(f"{self.root}: the digest of a data set is known once every file of it is read")
        if not self.folder:
            return self._parts[0][1]
        digest = hashlib.sha256()
        for file, sha in self._parts:
            digest.update(Path(os.path.relpath(file, self.root)).as_posix().encode() + b"\0")
            digest.update(bytes.fromhex(sha))
        return digest.hexdigest()

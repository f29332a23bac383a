"""The in-memory form of a list of states: what the engine decides on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np

from .spill import rows_kept_alike, take_rows

# The nine state fields of docs/engine.md §1, in the column order of StateSet.values.
STATE_FIELDS: tuple[str, ...] = (
    "physical",
    "social",
    "context",
    "risk",
    "compassion",
    "justice",
    "harm_sens",
    "responsibility",
    "empathy",
)


class Nones(Sequence[None]):
    """n missing values (a StateSet's t or ids when they are not kept), in constant memory:
    a list of n Nones takes 8 bytes per state, 80 MB at ten million."""

    __slots__ = ("_n",)

    def __init__(self, n: int) -> None:
        self._n = int(n)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[None]:
        return repeat(None, self._n)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return Nones(len(range(*index.indices(self._n))))
        if not -self._n <= index < self._n:
            raise IndexError("index out of range")
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Nones):
            return len(other) == self._n
        if isinstance(other, list):
            return len(other) == self._n and all(v is None for v in other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Nones({self._n})"


@dataclass(frozen=True)
class StateSet:
    """N states in input order.

    values: (N, 9) float64, columns in STATE_FIELDS order, every value in [0, 1]; in
    memory, or mapped from a temporary file (io.spill: learning's large trace files).
    streams, t, ids: one entry per state (None where the record had none); a stream is a
    str or an int, and "1" and 1 are different streams.
    repairs: per state, the fields that were filled or clipped on request, or None.
    """

    values: np.ndarray
    streams: list[Any]
    t: Sequence[Any]  # a list, or Nones when not kept
    ids: Sequence[Any]
    repairs: list[dict[str, str] | None] | None = None
    expect_level_min: np.ndarray | None = field(default=None)
    _codes: tuple[np.ndarray, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def stream_codes(self) -> tuple[np.ndarray, int]:
        """Integer code per state (codes numbered by first appearance) and the number of streams.
        Worked out once per state set (its streams are never changed) and shared by every
        caller, read-only: at tens of millions of states a copy per caller is gigabytes."""
        if self._codes is None:
            self.with_codes(_first_appearance(self.streams))
        return self._codes

    def codes_at(self, index: np.ndarray) -> tuple[np.ndarray, int]:
        """stream_codes() of the states at `index` (in that order) as a state set of their own,
        from this set's codes."""
        codes, _ = self.stream_codes()
        return renumber(codes[np.asarray(index, dtype=np.int64)])

    def with_codes(self, codes: tuple[np.ndarray, int]) -> StateSet:
        """This state set, its stream_codes() given (codes_at of the set it was taken from)."""
        found, n_streams = codes
        found = np.asarray(found)
        found.setflags(write=False)
        object.__setattr__(self, "_codes", (found, n_streams))
        return self

    def lean(self, index: np.ndarray) -> StateSet:
        """The states at the given positions, in that order, as the engine needs them: values
        and stream labels (shared objects), no t, ids or repairs. Values kept in a file
        (io.spill) are copied to a file of their own."""
        index = np.asarray(index, dtype=np.int64)
        streams = self.streams
        return StateSet(values=rows_kept_alike(self.values, index),
                        streams=[streams[i] for i in index.tolist()], t=Nones(index.size),
                        ids=Nones(index.size)).with_codes(self.codes_at(index))

    def subset(self, index: np.ndarray) -> StateSet:
        """The states at the given positions, in that order (t keeps each state's own value)."""
        idx = [int(i) for i in index]
        t = [self.t[i] if self.t[i] is not None else i for i in idx]
        return StateSet(
            values=take_rows(self.values, index),
            streams=[self.streams[i] for i in idx],
            t=t,
            ids=[self.ids[i] for i in idx],
            repairs=None if self.repairs is None else [self.repairs[i] for i in idx],
            expect_level_min=None if self.expect_level_min is None else self.expect_level_min[index],
        ).with_codes(self.codes_at(index))


def renumber(codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Stream codes renumbered 0, 1, ... in order of first appearance, and their number."""
    if not codes.size:
        return np.empty(0, dtype=np.int64), 0
    present, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    rank = np.empty(present.size, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(present.size)
    return rank[inverse.ravel()], int(present.size)


def _first_appearance(streams: Sequence[Any]) -> tuple[np.ndarray, int]:
    """A code per stream label, numbered by first appearance; "1" and 1 are different streams.
    Labels all of one type (str, or int within 64 bits) are coded by Arrow's dictionary
    encoding, which numbers values by first appearance too; anything else one by one."""
    kinds = set(map(type, streams))
    if len(kinds) == 1 and kinds <= {str, int}:
        import pyarrow as pa

        try:
            encoded = pa.array(streams).dictionary_encode()
        except (pa.ArrowInvalid, OverflowError, UnicodeEncodeError):  # e.g. a lone surrogate: one by one
            pass
        else:
            return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)
    seen: dict[tuple[str, Any], int] = {}
    codes = np.empty(len(streams), dtype=np.int64)
    for i, s in enumerate(streams):
        codes[i] = seen.setdefault((type(s).__name__, s), len(seen))
    return codes, len(seen)

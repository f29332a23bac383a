"""The engine run over parts of whole streams, so that per-decision columns of a large state
set never exist all at once.

A stream never spans two parts, so its drift window runs exactly as on all the states and
every decision's columns are the same bytes as those of one run over everything: a caller
that keeps only what it needs from each part (and puts it back at the part's positions)
gets exactly the figures of the whole. States that fit in one part are run as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..config import Config
from ..io.stateset import StateSet
from ..io.traces import TraceColumns
from ._batch import StreamRun, _by_space
from .sums import EngineSums

PART_DECISIONS = 200_000  # target decisions per part (a longer stream is a part on its own)


def stream_parts(states: StateSet, target: int = PART_DECISIONS,
                 codes: tuple[np.ndarray, int] | None = None) -> list[np.ndarray]:
    """Positions of whole streams, in parts of about `target` decisions: streams in order of
    first appearance, each part's positions ascending (input order). One part, every
    position, when the states fit. `codes`: states.stream_codes(), when the caller has them."""
    if target < 1:
        raise ValueError(f"target: expected an integer >= 1, got {target!r}")
    n = len(states)
    if n <= target:
        return [np.arange(n, dtype=np.int64)]
    stream_of, n_streams = codes if codes is not None else states.stream_codes()
    order = np.argsort(stream_of, kind="stable")
    # Positions as int32 where they fit: at tens of millions of states the parts together
    # hold one position per state.
    small = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    ptr = np.zeros(n_streams + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(stream_of, minlength=n_streams))
    parts: list[np.ndarray] = []
    first = 0
    for s in range(n_streams):
        if ptr[s + 1] - ptr[first] >= target or s == n_streams - 1:
            parts.append(np.sort(order[ptr[first]:ptr[s + 1]]).astype(small))
            first = s + 1
    return parts


class PartsRun:
    """Configs decided over the parts of whole streams of a state set, part after part:
    iterating gives each part's positions and every config's columns on it; afterwards
    sums() gives each config's sums over all the states, the bytes of direct_sums."""

    def __init__(self, states: StateSet, configs: Sequence[Config], target: int = PART_DECISIONS,
                 codes: tuple[np.ndarray, int] | None = None) -> None:
        self.parts = stream_parts(states, target, codes)
        self.groups = _by_space(configs)  # configs that share an action space are decided together
        self.runs = [StreamRun(states, [configs[i] for i in members]) for members in self.groups]
        self.n_configs = len(configs)

    def __iter__(self) -> Iterator[tuple[np.ndarray, list[TraceColumns]]]:
        for positions in self.parts:
            columns: list[TraceColumns | None] = [None] * self.n_configs
            for members, decided in zip(self.groups, self.runs, strict=True):
                for i, cols in zip(members, decided.decide(positions), strict=True):
                    columns[i] = cols
            yield positions, columns

    def sums(self) -> EngineSums:
        rows: list[EngineSums | None] = [None] * self.n_configs
        for members, decided in zip(self.groups, self.runs, strict=True):
            for i, row in zip(members, decided.sums(), strict=True):
                rows[i] = row
        return EngineSums.concat(rows)


def run_parts(states: StateSet, configs: Sequence[Config], target: int = PART_DECISIONS,
              codes: tuple[np.ndarray, int] | None = None) -> Iterator[tuple[np.ndarray, list[TraceColumns]]]:
    """Each part's positions and every config's columns on it, part after part (PartsRun)."""
    return iter(PartsRun(states, configs, target, codes))

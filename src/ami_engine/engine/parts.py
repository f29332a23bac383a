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
from ..io.stateset import Nones, StateSet
from ..io.traces import TraceColumns
from ._batch import run

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
    order = np.argsort(stream_of, kind="stable").astype(np.int64)
    ptr = np.zeros(n_streams + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(stream_of, minlength=n_streams))
    parts: list[np.ndarray] = []
    first = 0
    for s in range(n_streams):
        if ptr[s + 1] - ptr[first] >= target or s == n_streams - 1:
            parts.append(np.sort(order[ptr[first]:ptr[s + 1]]))
            first = s + 1
    return parts


def part_states(states: StateSet, positions: np.ndarray) -> StateSet:
    """The states at `positions` (whole streams, ascending) as a StateSet for the engine:
    values and stream labels; times and ids are not carried (the decisions use neither)."""
    if positions.size == len(states):
        return states
    k = int(positions.size)
    streams = states.streams
    return StateSet(values=np.ascontiguousarray(states.values[positions]),
                    streams=[streams[i] for i in positions.tolist()], t=Nones(k), ids=Nones(k))


def run_parts(states: StateSet, configs: Sequence[Config], target: int = PART_DECISIONS,
              codes: tuple[np.ndarray, int] | None = None) -> Iterator[tuple[np.ndarray, list[TraceColumns]]]:
    """Each part's positions and every config's columns on it (run), part after part."""
    for positions in stream_parts(states, target, codes):
        part = part_states(states, positions)
        yield positions, [run(part, config) for config in configs]

"""Deciding states and writing their traces slice by slice, so that the per-decision columns
and the records of only one slice of the input exist at a time, however many states there
are.

The slices are consecutive states in input order and each stream's drift window is carried
from one slice to the next (run_slices), so every decision is the one run() makes on all
the states; a Parquet slice is a whole number of row groups and JSON lines are written one
record per line, so the file is the same bytes as the one written from run() at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config
from ..io import parquet
from ..io.files import atomic_output
from ..io.stateset import StateSet
from ..io.traces import TraceColumns, encode_traces
from ._batch import run, run_slices

SLICE_ROWS = 131_072  # states decided at a time (rounded up to whole row groups for Parquet)


class DecidedSlices:
    """The decisions slice by slice (run_slices; `pres`: the pre-decisions made elsewhere),
    counting the decisions at each level as they go (from zero again each time they are
    gone through)."""

    def __init__(self, states: StateSet, config: Config, rows: int,
                 pres: Callable[[list[slice]], Iterator[Any]] | None = None) -> None:
        self.states, self.config, self.rows, self.pres = states, config, rows, pres
        self.counts = np.zeros(3, dtype=np.int64)

    def __call__(self) -> Iterator[tuple[slice, TraceColumns]]:
        self.counts = np.zeros(3, dtype=np.int64)
        if not len(self.states):  # no states: the empty columns, as run() gives them
            yield slice(0, 0), run(self.states, self.config)
            return
        for part, cols in run_slices(self.states, self.config, self.rows, self.pres):
            self.counts += np.bincount(cols.level, minlength=3)
            yield part, cols


def write_run(out: str | os.PathLike[str], states: StateSet, config: Config, *, chaos: bool = False,
              rows: int | None = None) -> np.ndarray:
    """Decide `states` under `config` and write their traces to `out` (Parquet for a name
    ending in `.parquet`, else JSON lines: `-` = stdout, `.gz` compressed), atomically;
    returns the count of decisions at each level. `rows`: states decided at a time
    (default SLICE_ROWS)."""
    rows = SLICE_ROWS if rows is None else rows
    if rows < 1:
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    config_id = config.config_id
    if os.fspath(out).lower().endswith(parquet.PARQUET_SUFFIX):
        groups = parquet.ROW_GROUP_ROWS
        decided = DecidedSlices(states, config, -(-rows // groups) * groups)
        parquet.write_decided(out, decided, states, config_id=config_id, model=ENGINE_MODEL, chaos=chaos)
    else:
        decided = DecidedSlices(states, config, rows)
        with atomic_output(out) as fh:
            for part, cols in decided():
                for chunk in encode_traces(cols, states, config_id=config_id, model=ENGINE_MODEL, chaos=chaos,
                                           at=part.start):
                    fh.write(chunk)
    return decided.counts

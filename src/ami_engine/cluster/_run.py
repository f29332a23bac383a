"""Deciding states on a Dask cluster into one traces Parquet file.

A decision is made in two passes: the pre-decision of each state (scores, selection,
confidence, uncertainty, escalation: the engine's costly part, independent per state)
and the finish (drift, soft clamp, fail-safe: sequential per stream, cheap). The states
are taken in consecutive slices, as `run` takes them in one process (engine/write.py):
each slice's pre-decisions are made on a worker from its state values, a few slices
ahead, and finished here in input order, each stream's drift window carried from slice
to slice, then written by the writer of `run`: the same decisions, so the same file,
while this process holds the states and the decisions of a few slices only. A slice
whose worker died is decided again from the values its task carries.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config
from ..engine._batch import pre_decisions
from ..engine.write import SLICE_ROWS, DecidedSlices
from ..io import parquet
from ..io.files import InputError
from ..io.stateset import StateSet
from ._evaluator import use_cores
from ._spec import quiet, worker_count

_AHEAD_PER_WORKER = 2  # slices being decided per worker while this process finishes one


def _check_keys(states: StateSet, source: str) -> None:
    """A `stream` or `id` of two types is refused before any work, with the record the
    writer in one process names: the first of the other type, in the earliest row group."""
    found = []
    for name, values in (("stream", states.streams), ("id", states.ids)):
        try:
            parquet._key_type(values, name)
        except parquet._KeyConflict:
            i = parquet._first_of_other_type(values, None)
            found.append((i // parquet.ROW_GROUP_ROWS, name, i, values[i]))
    if found:
        _, name, i, value = min(found, key=lambda hit: hit[0])
        raise InputError(source, i + 1, name, parquet._MIXED, value)


def _pre_decisions(values: np.ndarray, config: Config) -> Any:
    use_cores(share=True)
    return pre_decisions(values, config)


def _pres_on(client: Any, states: StateSet, config: Config):
    """Given the slices, their pre-decisions in order, made on the cluster a few slices
    ahead of the one asked for."""
    def made(parts: list[slice]) -> Iterator[Any]:
        ahead = max(1, _AHEAD_PER_WORKER * worker_count(client))
        waiting = iter(parts)
        pending: deque[Any] = deque()

        def submit() -> None:
            part = next(waiting, None)
            if part is not None:
                values = np.ascontiguousarray(states.values[part])
                pending.append(client.submit(_pre_decisions, values, config, pure=False))

        with quiet():
            for _ in range(ahead):
                submit()
            while pending:
                future = pending.popleft()
                pre = future.result()
                del future
                submit()
                yield pre

    return made


def run_on_cluster(client: Any, states: StateSet, config: Config, out: str, *, chaos: bool = False,
                   rows: int | None = None) -> np.ndarray:
    """Decide `states` under `config` on the cluster and write their traces to `out` (a
    `.parquet` file, written atomically, the same bytes as `run` writes in one process);
    returns the decisions at each level. `rows`: states decided at a time (default
    SLICE_ROWS, rounded up to whole row groups)."""
    if not out.lower().endswith(parquet.PARQUET_SUFFIX):
        raise ValueError(f"{out}: the cluster writes Parquet (.parquet)")
    rows = SLICE_ROWS if rows is None else rows
    if rows < 1:
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    _check_keys(states, os.fspath(out))
    groups = parquet.ROW_GROUP_ROWS
    decided = DecidedSlices(states, config, -(-rows // groups) * groups, _pres_on(client, states, config))
    parquet.write_decided(out, decided, states, config_id=config.config_id, model=ENGINE_MODEL, chaos=chaos)
    return decided.counts

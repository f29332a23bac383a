"""Deciding states on a Dask cluster, stream by stream, into one traces Parquet file.

A decision depends on its own stream only, so whole streams are dealt out to parts (in
order of first appearance, parts of about equal size). A task carries what the engine
reads of its part, the state values and a code per stream, and sends back the decided
columns; they are put back at the part's positions and written here by the writer of
`run` in one process: the same columns, so the same file. A part whose worker died is
decided again from the values its task carries.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config
from ..io import parquet
from ..io.files import InputError
from ..io.stateset import StateSet
from ..io.traces import TraceColumns
from ._spec import quiet, worker_count

_PARTS_PER_WORKER = 2
# The decided columns a task sends back; `t` is the states' own, worked out here.
_DECIDED = tuple(f.name for f in fields(TraceColumns) if f.name != "t")


def _decide(values: np.ndarray, streams: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """The columns the engine decides for one part: its state values and stream codes (the
    engine reads no other part of a state)."""
    from ..engine import run

    k = int(values.shape[0])
    cols = run(StateSet(values=values, streams=streams.tolist(), t=[None] * k, ids=[None] * k), config)
    return {name: getattr(cols, name) for name in _DECIDED}


def stream_parts(states: StateSet, n_parts: int) -> list[np.ndarray]:
    """Positions of the states of each part, ascending; every stream in one part, the
    streams in order of first appearance, the parts of about equal numbers of states."""
    codes, n_streams = states.stream_codes()
    n_parts = max(1, min(n_parts, n_streams))
    sizes = np.bincount(codes, minlength=n_streams)
    before = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    part_of_stream = np.minimum(before * n_parts // max(1, len(states)), n_parts - 1)
    part = part_of_stream[codes]
    return [index for index in (np.flatnonzero(part == p) for p in range(n_parts)) if index.size]


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


def decide_on_cluster(client: Any, states: StateSet, config: Config) -> TraceColumns:
    """The engine's columns for `states` under `config`, decided on the cluster: the same
    bytes as `engine.run(states, config)`. Each part's columns are put in place as it
    comes back, so that no more than one part's are held twice."""
    from distributed import as_completed

    from ..engine._batch import _trace_times

    parts = stream_parts(states, worker_count(client) * _PARTS_PER_WORKER)
    if not parts:  # no states: nothing to share out
        from ..engine import run

        return run(states, config)
    codes, _ = states.stream_codes()
    n = len(states)
    with quiet():
        futures = {client.submit(_decide, np.ascontiguousarray(states.values[index]), codes[index], config,
                                 pure=False): p for p, index in enumerate(parts)}
        decided: dict[str, np.ndarray] = {}
        for future in as_completed(list(futures)):
            part = future.result()
            index = parts[futures.pop(future)]
            del future
            for name in _DECIDED:
                values = part[name]
                if name not in decided:
                    decided[name] = np.empty((n,) + values.shape[1:], dtype=values.dtype)
                decided[name][index] = values
            del part
    return TraceColumns(t=_trace_times(states), **decided)


def run_on_cluster(client: Any, states: StateSet, config: Config, out: str, *, chaos: bool = False) -> np.ndarray:
    """Decide `states` under `config` on the cluster and write their traces to `out` (a
    `.parquet` file, written atomically, as `run` writes it in one process); returns the
    decisions at each level."""
    if not out.lower().endswith(parquet.PARQUET_SUFFIX):
        raise ValueError(f"{out}: the cluster writes Parquet (.parquet)")
    _check_keys(states, os.fspath(out))
    cols = decide_on_cluster(client, states, config)
    parquet.write_traces(out, cols, states, config_id=config.config_id, model=ENGINE_MODEL, chaos=chaos)
    return np.bincount(cols.level, minlength=3)

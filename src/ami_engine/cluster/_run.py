"""Deciding states on a Dask cluster, stream by stream, into one traces Parquet file.

A decision depends on its own stream only, so whole streams are dealt out to parts (in
order of first appearance, parts of about equal size); a worker decides a part and writes
its traces as a Parquet file into a temporary folder beside the output (one left behind by
a killed run is removed by a later one). The parts are
then merged back into input order, a row group at a time, into the output file: the same
rows, columns and row groups as `run` writes in one process, so the same file. A part
whose worker died is decided again from its states.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..io import parquet
from ..io.files import InputError, part_file, temp_folder_for
from ..io.stateset import StateSet
from ._spec import quiet, worker_count

_PARTS_PER_WORKER = 2


def _decide(states: StateSet, config: Config, path: str, chaos: bool) -> np.ndarray:
    """Decide one part and write its traces (slice by slice); the count of decisions at each level."""
    from ..engine.write import write_run

    return write_run(path, states, config, chaos=chaos)


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


def _layout(schema: Any) -> parquet.TraceLayout:
    return parquet.TraceLayout(tuple(schema.names), schema.field("t").type, schema.field("stream").type,
                               schema.field("id").type)


def _conform(batch: Any, schema: Any) -> Any:
    """A part's batch in the output's schema: its types widened, columns it lacks null."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
        else:
            column = batch.column(index)
            arrays.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class _PartReader:
    """The rows of one part file, handed out in order, k at a time."""

    def __init__(self, file: str, schema: Any) -> None:
        import pyarrow.parquet as pq

        self._batches = pq.ParquetFile(file).iter_batches(batch_size=parquet.ROW_GROUP_ROWS)
        self._schema = schema
        self._buffer = None

    def take(self, k: int) -> list[Any]:
        pieces = []
        while k > 0:
            if self._buffer is None or self._buffer.num_rows == 0:
                self._buffer = _conform(next(self._batches), self._schema)
            piece = self._buffer.slice(0, k)
            self._buffer = self._buffer.slice(piece.num_rows)
            pieces.append(piece)
            k -= piece.num_rows
        return pieces


def _merged(files: list[str], parts: list[np.ndarray], schema: Any, n: int) -> Iterator[Any]:
    """The rows of the part files in input order, a row group's worth at a time."""
    import pyarrow as pa

    readers = [_PartReader(f, schema) for f in files]
    done = [0] * len(parts)
    for start in range(0, n, parquet.ROW_GROUP_ROWS):
        stop = min(n, start + parquet.ROW_GROUP_ROWS)
        pieces, positions = [], []
        for p, index in enumerate(parts):
            end = int(np.searchsorted(index, stop))
            if end > done[p]:
                pieces.extend(readers[p].take(end - done[p]))
                positions.append(index[done[p]:end])
                done[p] = end
        table = pa.Table.from_batches(pieces, schema=schema)
        yield from table.take(np.argsort(np.concatenate(positions), kind="stable")).to_batches()


def run_on_cluster(client: Any, states: StateSet, config: Config, out: str, *, chaos: bool = False) -> np.ndarray:
    """Decide `states` under `config` on the cluster and write their traces to `out` (a
    `.parquet` file, written atomically); returns the decisions at each level. The
    workers write into a folder beside `out`, which they must see under that path."""
    if not out.lower().endswith(parquet.PARQUET_SUFFIX):
        raise ValueError(f"{out}: the cluster writes Parquet (.parquet)")
    _check_keys(states, os.fspath(out))
    parts = stream_parts(states, worker_count(client) * _PARTS_PER_WORKER)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = temp_folder_for(target)
    try:
        files = [str(part_file(folder, p)) for p in range(len(parts))]
        with quiet():
            futures = [client.submit(_decide, states.subset(index), config, file, chaos, pure=False)
                       for index, file in zip(parts, files, strict=True)]
            counts = client.gather(futures)
        layout = None
        for file in files:
            own = _layout(parquet.file_schema(file))
            layout = own if layout is None else layout.widen(own)
        assert layout is not None
        parquet.write_batches(out, layout.schema(), _merged(files, parts, layout.schema(), len(states)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return np.sum(counts, axis=0)

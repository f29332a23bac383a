"""Metric sums of trace files on a Dask cluster.

A Parquet file is cut into ranges of row groups, a plain JSONL file into ranges of
blocks, a compressed one is read whole; each range is read and checked on a worker, which
sends back its MetricSums. The sums are exact, so the figures are the bits of a reading in
one process; a bad record is reported as there, the first in file order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io import parquet
from ..io.files import DEFAULT_BLOCK_BYTES, InputError, display_name, is_plain_file
from ..learning import feedback_metrics as fm
from ..learning.feedback_metrics import MetricSums, ParquetRange
from ._spec import ClusterError, quiet, worker_count

_RANGES_PER_WORKER = 4


@dataclass(frozen=True)
class _Blocks:
    file: str
    first: int
    stop: int
    block_bytes: int


@dataclass(frozen=True)
class _Whole:
    file: str


@dataclass
class _Part:
    sums: MetricSums
    n_lines: int = 0  # JSONL ranges: lines read, to place a later range's line numbers
    error: InputError | None = None


def _sums_of_row_groups(part: ParquetRange) -> _Part:
    sums, error = fm.sums_of_parquet_range(part)
    return _Part(sums, error=error)


def _sums_of_blocks(part: _Blocks) -> _Part:
    result = fm._sums_of_range(part.file, part.first, part.stop, part.block_bytes)
    total = MetricSums()
    for sums in result.sums:
        total = total + sums
    return _Part(total, result.n_lines, result.error)


def _sums_of_whole(part: _Whole) -> _Part:
    try:
        return _Part(fm.metrics_from_traces(part.file, workers=1))
    except InputError as err:
        return _Part(MetricSums(), error=err)


def _compute(part: Any) -> _Part:
    if isinstance(part, ParquetRange):
        return _sums_of_row_groups(part)
    if isinstance(part, _Blocks):
        return _sums_of_blocks(part)
    return _sums_of_whole(part)


def _plan(path: str, n_ranges: int, block_bytes: int) -> list[Any]:
    """The ranges of one input, in reading order; an unreadable Parquet file is its own
    range, so that its error comes in its place."""
    if parquet.is_parquet(path):
        return fm.parquet_ranges(path, n_ranges)
    if not is_plain_file(path):
        return [_Whole(path)]
    n_blocks = max(1, math.ceil(os.path.getsize(path) / block_bytes))
    count = min(n_blocks, n_ranges)
    edges = np.linspace(0, n_blocks, count + 1).round().astype(int).tolist()
    return [_Blocks(path, a, b, block_bytes) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def metrics_on_cluster(client: Any, paths: Sequence[str], *,
                       block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[MetricSums]:
    """The MetricSums of each traces file or Parquet folder of `paths`, read on the cluster.

    Files are read by path on the workers, so they must see them where this process does."""
    for path in paths:
        if str(path) == "-":
            raise ClusterError("the workers read files by path; stdin (-) cannot be shared out")
        if not os.path.exists(path):
            fm.metrics_from_traces(path)  # says what is wrong with it, as without a cluster
    n_ranges = worker_count(client) * _RANGES_PER_WORKER
    plans = [_plan(os.fspath(p), n_ranges, block_bytes) for p in paths]
    with quiet():
        futures = [client.map(_compute, plan, pure=False) for plan in plans]
        results = [client.gather(f) for f in futures]
    out = []
    for path, parts in zip(paths, results, strict=True):
        total = MetricSums()
        lines_before = 0
        for part in parts:
            if part.error is not None:
                raise part.error.with_line_offset(lines_before)
            total = total + part.sums
            lines_before += part.n_lines
        if total.n == 0:
            raise InputError(display_name(path), None, None, "no traces in the file")
        out.append(total)
    return out

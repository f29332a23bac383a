"""Feedback metrics of a set of decisions (docs/learning.md §3).

- fail_safe_rate: fraction of records with level == 2;
- mean_cus: mean of `cus` over all records;
- clamp_distortion: per record, the mean over the four components of
  |final_action - raw_action| when soft_clamp is true and 0 otherwise, averaged over all
  records.

Every metric is a sum over records divided by the number of records, so MetricSums keeps
the sums: sums of shards add up to the sums of the whole (docs/learning.md §3).
The sums of floats are kept exactly (as fractions) and rounded once, when a rate is asked
for, so the figures do not depend on how the records were cut into blocks: a traces file
gives the same bits as JSONL or as Parquet, in one process or shared among workers.
No metric reads `confidence`; the records where it is null (as the original engine writes
it when no action passed its filter and its fail-safe did not fire) are counted, so that a
reader of the figures knows they are there.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import compress
from operator import attrgetter, countOf
from typing import Any

import msgspec
import numpy as np

from ..figures import FAIL_SAFE_LEVEL, N_LEVELS, Figures
from ..io import parquet
from ..io.files import (
    DEFAULT_BLOCK_BYTES,
    InputError,
    block_boundary,
    decode_block,
    display_name,
    gc_paused,
    is_plain_file,
    iter_blocks,
    usable_cpus,
)
from ..io.parquet import is_parquet
from ..io.traces import REQUIRED_FIELDS, RequiredTraceRecord, action_matrix, iter_trace_blocks

# Below this many blocks a file is read in this process: starting workers would cost more.
_MIN_BLOCKS_TO_SHARE = 4
_TASKS_PER_WORKER = 4


@dataclass(frozen=True)
class MetricSums(Figures):
    """Counts and sums over a set of decisions; add two to get those of both sets. The
    figures (fail_safe_rate, mean_cus, clamp_distortion, level_rates, loss) are those of
    figures.Figures, read from these exact sums.

    The rates are NaN for an empty set (there is no rate of nothing). `n_null_confidence`
    counts the records whose confidence is null.
    """

    n: int = 0
    n_level: tuple[int, int, int] = (0, 0, 0)
    exact_cus: Fraction = Fraction(0)
    exact_distortion: Fraction = Fraction(0)
    n_clamped: int = 0
    n_human: int = 0
    n_null_confidence: int = 0

    def merge(self, other: MetricSums) -> MetricSums:
        return MetricSums(
            n=self.n + other.n,
            n_level=tuple(a + b for a, b in zip(self.n_level, other.n_level, strict=True)),  # type: ignore[arg-type]
            exact_cus=self.exact_cus + other.exact_cus,
            exact_distortion=self.exact_distortion + other.exact_distortion,
            n_clamped=self.n_clamped + other.n_clamped,
            n_human=self.n_human + other.n_human,
            n_null_confidence=self.n_null_confidence + other.n_null_confidence,
        )

    @property
    def sum_cus(self) -> float:
        return float(self.exact_cus)

    @property
    def sum_distortion(self) -> float:
        return float(self.exact_distortion)

    def __add__(self, other: MetricSums) -> MetricSums:
        if not isinstance(other, MetricSums):
            return NotImplemented
        return self.merge(other)

    def _per_record(self, total: int | Fraction) -> float:
        # A fraction divided by an integer and rounded once: the correctly rounded rate.
        return float(Fraction(total) / self.n) if self.n else math.nan

    def _level_total(self, level: int) -> int:
        return self.n_level[level]

    def _cus_total(self) -> Fraction:
        return self.exact_cus

    def _distortion_total(self) -> Fraction:
        return self.exact_distortion

    @property
    def human_escalation_rate(self) -> float:
        return self._per_record(self.n_human)

    @property
    def soft_clamp_rate(self) -> float:
        return self._per_record(self.n_clamped)

    def to_dict(self) -> dict[str, Any]:
        """The metrics and the counts behind them, as plain JSON-ready values."""
        return {
            "n": self.n,
            "fail_safe_rate": self.fail_safe_rate,
            "mean_cus": self.mean_cus,
            "clamp_distortion": self.clamp_distortion,
            "level_rates": list(self.level_rates),
            "level_counts": list(self.n_level),
            "human_escalation_rate": self.human_escalation_rate,
            "soft_clamp_rate": self.soft_clamp_rate,
            "null_confidence": self.n_null_confidence,
        }


def sums_from_columns(
    level: np.ndarray,
    cus: np.ndarray,
    soft_clamp: np.ndarray,
    raw_action: np.ndarray,
    final_action: np.ndarray,
    human_escalation: np.ndarray,
    confidence: np.ndarray | None = None,
) -> MetricSums:
    """MetricSums of decisions given as columns (raw/final actions of shape (n, 4));
    `confidence`, when given, NaN where it is null (those records are counted)."""
    clamped = np.flatnonzero(np.asarray(soft_clamp, dtype=bool))
    n_null = 0 if confidence is None else int(np.count_nonzero(np.isnan(confidence)))
    return _sums(level, cus, np.asarray(raw_action).take(clamped, axis=0),
                 np.asarray(final_action).take(clamped, axis=0), int(np.count_nonzero(human_escalation)), n_null)


def _sums(
    level: np.ndarray,
    cus: np.ndarray,
    raw_clamped: np.ndarray,
    final_clamped: np.ndarray,
    n_human: int,
    n_null_confidence: int = 0,
) -> MetricSums:
    """The one place the metric sums are computed; the actions are those of the clamped
    records only, one row each."""
    level = np.asarray(level)
    if level.size:
        lo, hi = int(level.min()), int(level.max())
        if lo < 0 or hi >= N_LEVELS:
            raise ValueError(f"level must be 0, 1 or 2, got {lo if lo < 0 else hi}")
    n1, n2 = int(np.count_nonzero(level == 1)), int(np.count_nonzero(level == 2))
    per_record = _distortion(raw_clamped, final_clamped)
    return MetricSums(
        n=int(level.shape[0]),
        n_level=(int(level.shape[0]) - n1 - n2, n1, n2),
        exact_cus=exact_sum(cus),
        exact_distortion=exact_sum(per_record),
        n_clamped=int(per_record.shape[0]),
        n_human=n_human,
        n_null_confidence=n_null_confidence,
    )


_HALF_BITS = 26
_HALF = (1 << _HALF_BITS) - 1
_FRACTION = (1 << 52) - 1
# Each half of a 53-bit mantissa is below 2**27, so a float64 sum of up to 2**26 of them is exact.
_EXACT_CHUNK = 1 << _HALF_BITS


def exact_sum(values: np.ndarray) -> Fraction:
    """The exact sum of finite float64 values, as a fraction (no rounding at all).

    Every float is m * 2**(e - 1075) with an integer m below 2**53 read off its bits (the
    stored fraction, with the leading 1 of a normal number) and e its biased exponent (1
    for a subnormal); the m are split in two halves and added per exponent, exactly, then
    the few per-exponent totals are joined with Python integers. Exact sums add up in any
    order to the same value. Without a sign bit among the values (the usual case: CUS and
    distortions), the leading 1s are counted per exponent instead of set in each m.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size > _EXACT_CHUNK:
        return sum((exact_sum(x[i : i + _EXACT_CHUNK]) for i in range(0, x.size, _EXACT_CHUNK)), Fraction(0))
    if x.size == 0:
        return Fraction(0)
    bits = x.view(np.int64)
    if bits.min() >= 0:
        biased = bits >> 52
        if biased.max() == 0x7FF:
            raise ValueError("exact_sum: the values must be finite")
        leading = np.bincount(biased)
        leading[0] = 0  # a subnormal or zero has no leading 1
        return _joined(np.bincount(biased, weights=(bits >> _HALF_BITS) & _HALF),
                       np.bincount(biased, weights=bits & _HALF), leading)
    biased = (bits >> 52) & 0x7FF
    top = int(biased.max())
    if top == 0x7FF:
        raise ValueError("exact_sum: the values must be finite")
    mantissa = (bits & _FRACTION) | ((biased != 0).astype(np.int64) << 52)
    np.negative(mantissa, out=mantissa, where=bits < 0)
    # Floor halves: high * 2**26 + low == m, for negative m too.
    return _joined(np.bincount(biased, weights=mantissa >> _HALF_BITS), np.bincount(biased, weights=mantissa & _HALF),
                   np.zeros(top + 1, dtype=np.int64))


def _joined(high: np.ndarray, low: np.ndarray, leading: np.ndarray) -> Fraction:
    """sum over biased exponents k of (high[k] * 2**26 + low[k] + leading[k] * 2**52) *
    2**(max(k, 1) - 1075), exactly (the halves are float sums of integers, exact)."""
    total = 0
    first = None
    for k in np.flatnonzero((high != 0) | (low != 0) | (leading != 0)).tolist():
        e = max(k, 1)
        if first is None:
            first = e
        total += ((int(high[k]) << _HALF_BITS) + int(low[k]) + (int(leading[k]) << 52)) << (e - first)
    if first is None:
        return Fraction(0)
    scale = first - 1075
    return Fraction(total << scale) if scale >= 0 else Fraction(total, 1 << -scale)


def _distortion(raw: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Per clamped decision: the mean over the four components of |final - raw|, added in
    one fixed order for every record."""
    d = np.abs(np.asarray(final, dtype=np.float64) - np.asarray(raw, dtype=np.float64))
    return (((d[:, 0] + d[:, 1]) + d[:, 2]) + d[:, 3]) / 4.0


def clamp_distortions(soft_clamp: np.ndarray, raw_action: np.ndarray, final_action: np.ndarray) -> np.ndarray:
    """Each decision's clamp distortion: `_distortion` where the soft clamp acted, else 0."""
    clamped = np.asarray(soft_clamp, dtype=bool)
    out = np.zeros(clamped.shape[0])
    out[clamped] = _distortion(np.asarray(raw_action)[clamped], np.asarray(final_action)[clamped])
    return out


def _sums_of_records(records: list[RequiredTraceRecord]) -> MetricSums:
    """MetricSums of decoded records, converting actions only where the clamp acted."""
    n = len(records)
    clamped_mask = np.fromiter(map(attrgetter("soft_clamp"), records), dtype=bool, count=n)
    clamped = list(compress(records, clamped_mask))
    return _sums(
        level=np.fromiter(map(attrgetter("level"), records), dtype=np.int8, count=n),
        cus=np.fromiter(map(attrgetter("cus"), records), dtype=np.float64, count=n),
        raw_clamped=action_matrix(clamped, "raw_action"),
        final_clamped=action_matrix(clamped, "final_action"),
        n_human=sum(map(attrgetter("human_escalation"), records)),
        n_null_confidence=countOf(map(attrgetter("confidence"), records), None),
    )


def metrics_from_traces(
    path: str | os.PathLike[str], *, workers: int | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> MetricSums:
    """MetricSums of a traces file, streamed block by block (`-` = stdin, `.gz` decompressed).

    Every record is checked for the Phase 4.7.1 fields; the first bad one raises InputError.
    A large plain file is shared among `workers` processes (default: the usable CPUs), a
    Parquet input's row groups among `workers` threads. The result does not depend on the
    number of workers: each block's sums are taken alone and added in file order.
    """
    if workers is None:
        workers = usable_cpus()
    if is_parquet(path):
        return _metrics_from_parquet(path, workers)
    n_blocks = 0
    if workers > 1 and is_plain_file(path) and "fork" in multiprocessing.get_all_start_methods():
        n_blocks = math.ceil(os.path.getsize(path) / block_bytes)
    parts: list[MetricSums] | None = None
    if n_blocks >= _MIN_BLOCKS_TO_SHARE:
        try:
            parts = _shared_out(path, workers, n_blocks, block_bytes)
        except (OSError, BrokenProcessPool):  # no processes to be had here: read it alone
            parts = None
    if parts is None:
        # The collector stays off until each block's records are gone again: they hold no
        # cycles, and a collection over millions of young tuples would cost seconds.
        with gc_paused():
            blocks = iter_trace_blocks(path, RequiredTraceRecord, block_bytes=block_bytes)
            parts = [_sums_of_records(block.records) for block in blocks]
    total = MetricSums()
    for part in parts:
        total = total + part
    if total.n == 0:
        raise InputError(display_name(path), None, None, "no traces in the file")
    return total


# The columns metrics read from Parquet, and only those: what the figures are made of,
# `confidence` included (its nulls are counted), each checked value by value as the JSONL
# reader checks it. The other required columns must be there but are not read: a Parquet
# file is read by column, and reading the rest would cost half as much again.
METRIC_COLUMNS = ("level", "cus", "soft_clamp", "raw_action", "final_action", "human_escalation", "confidence")


_RANGES_PER_WORKER = 4  # Parquet row-group ranges per reading thread or worker


@dataclass(frozen=True)
class ParquetRange:
    """Row groups [first, stop) of one Parquet file: a piece of a traces file that can be
    read and checked on its own (here by a thread, or by a cluster's worker)."""

    file: str
    first: int
    stop: int


def parquet_ranges(path: str | os.PathLike[str], n_ranges: int) -> list[ParquetRange]:
    """About n_ranges ranges of whole row groups covering a traces Parquet file or folder, in
    reading order; a file without row groups, or unreadable, is a range of its own, so that
    its columns are still checked and its error comes in its place."""
    files = parquet.parquet_files(path)
    groups = []
    for file in files:
        try:
            groups.append(parquet._open(file).metadata.num_row_groups)
        except InputError:
            groups.append(0)
    per_range = max(1, math.ceil(sum(groups) / max(1, n_ranges)))
    ranges: list[ParquetRange] = []
    for file, n in zip(files, groups, strict=True):
        edges = list(range(0, n, per_range)) + [n]
        ranges.extend(ParquetRange(file, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True))
        if n == 0:
            ranges.append(ParquetRange(file, 0, 0))
    return ranges


def sums_of_parquet_range(part: ParquetRange) -> tuple[MetricSums, InputError | None]:
    """The MetricSums of one range, its METRIC_COLUMNS checked value by value; or the
    first error in it."""
    try:
        pf = parquet._open(part.file)
        schema = pf.schema_arrow
        parquet._required_present(schema, part.file, parquet.REQUIRED_COLUMNS)
        _unread_types(schema, part.file)
        columns = [c for c in METRIC_COLUMNS if schema.get_field_index(c) >= 0]
        row = sum(pf.metadata.row_group(g).num_rows for g in range(part.first))
        total = MetricSums()
        if part.stop > part.first:
            # A batch at a time, even inside a large row group; one Arrow thread per range:
            # the ranges are read side by side already.
            for batch in pf.iter_batches(batch_size=parquet.BATCH_ROWS, row_groups=range(part.first, part.stop),
                                         columns=columns, use_threads=False):
                total = total + _sums_of_batch(parquet._Batch(batch, part.file, row))
                row += batch.num_rows
        return total, None
    except InputError as err:
        return MetricSums(), err
    except (OSError, ValueError) as exc:
        return MetricSums(), InputError(part.file, None, None, f"not a readable Parquet file: {exc}")


def _unread_types(schema: Any, file: str) -> None:
    """The required columns metrics do not read are still of their kind, from the schema
    alone: numbers (`t` and the CUS and confidence figures) or booleans (`chaos`)."""
    import pyarrow as pa

    for name in REQUIRED_FIELDS:
        i = schema.get_field_index(name)
        if name in METRIC_COLUMNS or i < 0:
            continue
        kind = schema.field(i).type
        booleans = name in parquet._BOOL_COLUMNS
        if pa.types.is_null(kind) or (pa.types.is_boolean(kind) if booleans else parquet._is_number_type(kind)):
            continue
        raise InputError(file, None, name, f"a column of {kind}: expected {'booleans' if booleans else 'numbers'}")


def _sums_of_batch(b: Any) -> MetricSums:
    c = {name: parquet._trace_column(b, name, b.batch.column(i), False, False)
         for i, name in enumerate(b.batch.schema.names)}
    b.raise_first()
    return sums_from_columns(c["level"], c["cus"], c["soft_clamp"], c["raw_action"], c["final_action"],
                             c["human_escalation"], c["confidence"])


def add_ranges(path: str | os.PathLike[str], results: Iterable[tuple[MetricSums, InputError | None]]) -> MetricSums:
    """The ranges' sums added in reading order; the first range's error, in that order, is
    raised (exact sums: any order of adding gives the same figures)."""
    total = MetricSums()
    for sums, error in results:
        if error is not None:
            raise error
        total = total + sums
    if total.n == 0:
        raise InputError(display_name(path), None, None, "no traces in the file")
    return total


def _metrics_from_parquet(path: str | os.PathLike[str], workers: int) -> MetricSums:
    """MetricSums of a traces Parquet file or folder, its row groups read in ranges by
    `workers` threads (Arrow and NumPy work outside Python's lock)."""
    ranges = parquet_ranges(path, workers * _RANGES_PER_WORKER)
    if workers > 1 and len(ranges) > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(ranges))) as pool:
            return add_ranges(path, list(pool.map(sums_of_parquet_range, ranges)))
    return add_ranges(path, map(sums_of_parquet_range, ranges))


@dataclass
class _RangeResult:
    sums: list[MetricSums] = field(default_factory=list)
    n_lines: int = 0
    error: InputError | None = None


def _shared_out(path: str | os.PathLike[str], workers: int, n_blocks: int, block_bytes: int) -> list[MetricSums]:
    """Per-block sums of a plain file, its blocks handed out in contiguous ranges."""
    n_tasks = min(n_blocks, workers * _TASKS_PER_WORKER)
    edges = np.linspace(0, n_blocks, n_tasks + 1).round().astype(int).tolist()
    ranges = list(zip(edges[:-1], edges[1:], strict=True))
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=min(workers, n_tasks), mp_context=context) as pool:
        results = list(pool.map(_sums_of_range, [os.fspath(path)] * len(ranges), *zip(*ranges, strict=True),
                                [block_bytes] * len(ranges)))
    parts: list[MetricSums] = []
    lines_before = 0
    for result in results:
        if result.error is not None:
            raise result.error.with_line_offset(lines_before)
        parts.extend(result.sums)
        lines_before += result.n_lines
    return parts


def _sums_of_range(path: str, first_block: int, stop_block: int, block_bytes: int) -> _RangeResult:
    """Sums of blocks [first_block, stop_block); line numbers count from the range's start."""
    result = _RangeResult()
    decoder = msgspec.json.Decoder(RequiredTraceRecord)
    source = display_name(path)
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        start = block_boundary(stream, first_block, size, block_bytes)
        end = block_boundary(stream, stop_block, size, block_bytes)
        stream.seek(start)
        try:
            with gc_paused():
                for data in iter_blocks(stream, block_bytes=block_bytes, start=start, end=end):
                    block = decode_block(data, decoder, source, result.n_lines + 1)
                    result.n_lines += block.n_lines
                    result.sums.append(_sums_of_records(block.records))
                    del block  # free its records before the next block is decoded
        except InputError as err:
            result.error = err
    return result


__all__ = [
    "FAIL_SAFE_LEVEL", "MetricSums", "clamp_distortions", "exact_sum", "metrics_from_traces", "sums_from_columns",
]

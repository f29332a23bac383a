"""DecisionTrace files (docs/formats.md): the writer of this engine's traces and a streaming reader
for traces of any engine that writes the Phase 4.7.1 format.

The writer puts every record's keys in one fixed order, as compact JSON, one record per
line, floats in shortest round-trip form: the same decisions always give the same bytes.
The reader requires the Phase 4.7.1 fields, accepts this engine's fields when they are
there, ignores unknown fields, and stops at the first bad record with
`FILE:LINE: field: what is wrong`. As the original engine writes them, `confidence` may be
null (no action passed its filter and its fail-safe did not fire) and `chaos` may be
absent (false).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from itertools import chain, compress, repeat, starmap
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
from msgspec import UNSET

from ..errors import InputError
from . import parquet
from ._atomic import atomic_output
from ._blocks import DEFAULT_BLOCK_BYTES, DecodedBlock, decode_block, gc_paused, iter_blocks, iter_decoded_lines
from ._errors import DECODE_ERRORS
from ._open import display_name, open_binary
from ._trace_schema import (
    ABSENT_MEANS,
    ACTION_SIZE,
    FIELD_NAMES,
    REASON_CODES,
    REASONS,
    REQUIRED_FIELDS,
    TRACE_SCHEMA,
    RequiredTraceRecord,
    StateOut,
    TraceOut,
    TraceRecord,
    TraceState,
)
from .stateset import STATE_FIELDS, StateSet


@dataclass
class TraceColumns:
    """What the engine decided, one row per decision, ready to be written as traces.

    `t` holds, per record, the number to write (the state's own t, else its 0-based
    position). `delta_cus` and `delta_confidence` are NaN where the trace says null;
    `reason` holds codes into REASONS.
    """

    t: list[Any]
    cus: np.ndarray
    cus_raw: np.ndarray
    delta_cus: np.ndarray
    cus_mean: np.ndarray
    confidence: np.ndarray
    delta_confidence: np.ndarray
    raw_action: np.ndarray
    final_action: np.ndarray
    soft_clamp: np.ndarray
    human_escalation: np.ndarray
    level: np.ndarray
    reason: np.ndarray
    W: np.ndarray
    J: np.ndarray
    H: np.ndarray
    C: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


# ---------------------------------------------------------------------------- writing

def encode_traces(
    cols: TraceColumns,
    states: StateSet,
    *,
    config_id: str,
    model: str,
    chaos: bool,
    chunk_records: int = 8192,
    at: int | None = None,
) -> Iterator[bytes]:
    """The traces of `cols` (decided on `states`, row for row; with `at`, on the states
    from position `at` on) as JSON lines, in chunks."""
    n = len(cols)
    if at is None and len(states) != n:
        raise ValueError(f"{n} decisions but {len(states)} states")
    if at is not None and not 0 <= at <= len(states) - n:
        raise ValueError(f"{n} decisions from state {at} but {len(states)} states")
    at = at or 0
    encoder = msgspec.json.Encoder()
    for start in range(0, n, chunk_records):
        part = slice(start, min(start + chunk_records, n))
        with gc_paused():
            columns = decided_columns(cols, states, part, config_id=config_id, model=model, chaos=chaos, at=at)
            records = list(map(TraceOut, *(_plain(name, columns[name], part) for name in FIELD_NAMES)))
            encoded = encoder.encode_lines(records)
        yield encoded


_REASON_NAMES = np.asarray(REASONS, dtype=object)


def decided_columns(cols: TraceColumns, states: StateSet, part: slice, *, config_id: str, model: str,
                    chaos: bool, at: int = 0) -> dict[str, Any]:
    """Field -> values of the trace records `part` of a run, for every field of the schema:
    NumPy arrays for numbers (NaN for null), lists for the others; `input_repairs` is None
    when no state was repaired. With `at`, `cols` were decided on the states from position
    `at` on (row `i` of `cols` is state `at + i`)."""
    k = part.stop - part.start
    rows = slice(part.start + at, part.stop + at)
    given: dict[str, Any] = {
        "chaos": np.full(k, bool(chaos)),
        "model": [model] * k,
        "reason": _REASON_NAMES[cols.reason[part]].tolist(),
        "stream": states.streams[rows],
        "id": states.ids[rows],
        "state": states.values[rows],
        "config_id": [config_id] * k,
        "input_repairs": None if states.repairs is None else [r or None for r in states.repairs[rows]],
    }
    return {name: given[name] if name in given else getattr(cols, name)[part] for name in FIELD_NAMES}


def _plain(name: str, values: Any, part: slice) -> Iterable[Any]:
    """A column of decided_columns as the values a written record takes."""
    if name == "state":
        return starmap(StateOut, values.tolist())
    if values is None:
        return repeat(None, part.stop - part.start)
    return values.tolist() if isinstance(values, np.ndarray) else values


def trace_records(
    cols: TraceColumns, states: StateSet, *, config_id: str, model: str, chaos: bool
) -> list[dict[str, Any]]:
    """The records encode_traces writes, as plain dicts (what a reader of the file gets)."""
    plain = msgspec.json.Decoder()
    records: list[dict[str, Any]] = []
    for chunk in encode_traces(cols, states, config_id=config_id, model=model, chaos=chaos):
        records.extend(plain.decode_lines(chunk))
    return records


def write_traces(
    path: str | os.PathLike[str],
    cols: TraceColumns,
    states: StateSet,
    *,
    config_id: str,
    model: str,
    chaos: bool,
) -> None:
    """Write a traces file atomically (`-` = stdout, `.gz` compressed; Parquet for a path
    ending in `.parquet`)."""
    if str(path).lower().endswith(parquet.PARQUET_SUFFIX):
        parquet.write_traces(path, cols, states, config_id=config_id, model=model, chaos=chaos)
        return
    with atomic_output(path) as out:
        for chunk in encode_traces(cols, states, config_id=config_id, model=model, chaos=chaos):
            out.write(chunk)


# ---------------------------------------------------------------------------- reading

@dataclass
class TraceChunk:
    """Consecutive trace records as columns.

    Optional columns are None when no record of the chunk has the field; otherwise records
    without it hold NaN (numbers) or None (others). `t` holds each record's number as
    given (an integer exactly, whatever its size). `delta_cus` and `delta_confidence` are
    NaN where the trace says null. `state` is (n, 9) in STATE_FIELDS order with `has_state`
    saying which rows came with one. `confidence` is NaN where the trace says null.
    `line` is each record's line number in its file.
    """

    line: np.ndarray
    t: list[int | float]
    cus: np.ndarray
    delta_cus: np.ndarray
    cus_mean: np.ndarray
    raw_action: np.ndarray
    final_action: np.ndarray
    soft_clamp: np.ndarray
    level: np.ndarray
    confidence: np.ndarray
    delta_confidence: np.ndarray
    human_escalation: np.ndarray
    chaos: np.ndarray
    reason: list[str | None] | None = None
    cus_raw: np.ndarray | None = None
    W: np.ndarray | None = None
    J: np.ndarray | None = None
    H: np.ndarray | None = None
    C: np.ndarray | None = None
    stream: list[Any] | None = None
    id: list[Any] | None = None
    state: np.ndarray | None = None
    has_state: np.ndarray | None = None
    config_id: list[str | None] | None = None
    model: list[str | None] | None = None
    input_repairs: list[dict[str, str] | None] | None = None

    def __len__(self) -> int:
        return int(self.line.shape[0])

    def take(self, rows: np.ndarray) -> TraceChunk:
        """The records at positions `rows`, as a chunk of their own."""
        picked: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                picked[f.name] = value[rows]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in rows]
            else:
                picked[f.name] = value
        return TraceChunk(**picked)

    @classmethod
    def from_records(cls, records: list[TraceRecord], line: np.ndarray) -> TraceChunk:
        n = len(records)
        states = _optional(records, "state")
        has_state = None
        state_values = None
        if states is not None:
            has_state = np.fromiter((s is not None for s in states), dtype=bool, count=n)
            present = [s for s in states if s is not None]
            state_values = np.full((n, len(STATE_FIELDS)), np.nan)
            state_values[has_state] = _matrix(map(attrgetter(*STATE_FIELDS), present), len(present),
                                              len(STATE_FIELDS))
        columns: dict[str, Any] = {"line": line, "state": state_values, "has_state": has_state}
        for f in TRACE_SCHEMA:
            if f.name not in columns:
                columns[f.name] = _COLUMN_READERS[f.kind, f.required](records, f.name)
        return cls(**columns)

    @classmethod
    def concat(cls, chunks: list[TraceChunk]) -> TraceChunk:
        """One chunk holding the records of all `chunks`, in order."""
        if not chunks:
            raise ValueError("no chunks to join")
        sizes = [len(c) for c in chunks]
        joined: dict[str, Any] = {}
        for f in fields(cls):
            parts = [getattr(c, f.name) for c in chunks]
            if all(p is None for p in parts):
                joined[f.name] = None
            elif f.name == "has_state":
                joined[f.name] = np.concatenate(
                    [np.zeros(k, dtype=bool) if p is None else p for p, k in zip(parts, sizes, strict=True)]
                )
            elif any(isinstance(p, np.ndarray) for p in parts):
                template = next(p for p in parts if p is not None)
                joined[f.name] = np.concatenate(
                    [_missing_like(template, k) if p is None else p for p, k in zip(parts, sizes, strict=True)]
                )
            else:
                joined[f.name] = list(chain.from_iterable([None] * k if p is None else p
                                                          for p, k in zip(parts, sizes, strict=True)))
        return cls(**joined)


def _missing_like(template: np.ndarray, n: int) -> np.ndarray:
    return np.full((n, *template.shape[1:]), np.nan)


def _floats(records: list[Any], name: str) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), records), dtype=np.float64, count=len(records))


def _floats_or_nan(records: list[Any], name: str) -> np.ndarray:
    """A field that may be null, NaN where it is (the common case, no null, stays fast)."""
    try:
        return _floats(records, name)
    except TypeError:
        return np.array(list(map(attrgetter(name), records)), dtype=np.float64)


def _bools(records: list[Any], name: str) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), records), dtype=bool, count=len(records))


def _matrix(rows: Iterable[Iterable[float]], n: int, width: int) -> np.ndarray:
    """An (n, width) float64 array from n rows of `width` numbers each."""
    return np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * width).reshape(n, width)


def action_matrix(records: list[Any], name: str) -> np.ndarray:
    """The (n, 4) array of one action field (`raw_action`, `final_action`) of decoded records."""
    return _matrix(map(attrgetter(name), records), len(records), ACTION_SIZE)


def _optional(records: list[Any], name: str) -> list[Any] | None:
    """The field of every record (None where absent), or None when no record has it."""
    values = list(map(attrgetter(name), records))
    absent = values.count(UNSET)
    if absent == len(values):
        return None
    return [None if v is UNSET else v for v in values] if absent else values


def _optional_floats(records: list[Any], name: str) -> np.ndarray | None:
    values = _optional(records, name)
    return None if values is None else np.array(values, dtype=np.float64)


def _levels(records: list[Any], name: str) -> np.ndarray:
    return np.fromiter(map(attrgetter(name), records), dtype=np.int8, count=len(records))


def _values(records: list[Any], name: str) -> list[Any]:
    return list(map(attrgetter(name), records))


def _actions(records: list[Any], name: str) -> np.ndarray:
    return action_matrix(records, name)


# (kind, required) -> how a field's column is built from decoded records. A required
# number that may be null reads as NaN there; an optional field is None when no record of
# the chunk has it. `state` is read apart (a matrix and which rows have one).
_COLUMN_READERS: dict[tuple[str, bool], Any] = {
    ("t", True): _values,
    ("unit", True): _floats_or_nan,
    ("number", True): _floats_or_nan,
    ("action", True): _actions,
    ("bool", True): _bools,
    ("level", True): _levels,
    ("unit", False): _optional_floats,
    ("number", False): _optional_floats,
    ("text", False): _optional,
    ("key", False): _optional,
    ("repairs", False): _optional,
}


def iter_trace_blocks(
    path: str | os.PathLike[str],
    record_type: type[msgspec.Struct] = TraceRecord,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[DecodedBlock]:
    """The decoded records of a traces file, block by block (see files.iter_blocks)."""
    source = display_name(path)
    decoder = msgspec.json.Decoder(record_type)
    first_line = 1
    with open_binary(path) as stream:
        for data in iter_blocks(stream, block_bytes=block_bytes):
            block = decode_block(data, decoder, source, first_line)
            first_line += block.n_lines
            yield block


def iter_trace_chunks(
    path: str | os.PathLike[str], *, chunk_lines: int = 65536, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[TraceChunk]:
    """The records of a traces file as column chunks of at most `chunk_lines` records.

    Memory stays bounded by one block of the file and its chunks, however long the file.
    Parquet (a `.parquet` file or a folder) gives chunks of one record batch each, `line`
    then being each record's 1-based row in the whole data set.
    """
    if parquet.is_parquet(path):
        yield from parquet.trace_chunks(path)
        return
    for block in iter_trace_blocks(path, TraceRecord, block_bytes=block_bytes):
        for start in range(0, len(block.records), chunk_lines):
            stop = start + chunk_lines
            with gc_paused():
                chunk = TraceChunk.from_records(block.records[start:stop], block.lines[start:stop])
            yield chunk


def read_traces(path: str | os.PathLike[str]) -> TraceChunk:
    """All records of a (small) traces file as one chunk; an empty file is an InputError."""
    chunks = list(iter_trace_chunks(path))
    if not chunks:
        raise InputError(display_name(path), None, None, "no traces in the file")
    return chunks[0] if len(chunks) == 1 else TraceChunk.concat(chunks)


@dataclass(frozen=True)
class TraceStates:
    """What a traces file says about the states it decided (for replaying them).

    `states` holds the records that carry a `state`, in file order, with their stream, id
    and t; `missing` counts the records without one and `first_missing` is the line of
    the first of those (None when every record has a state). `lines` holds the line of
    each state's record."""

    states: StateSet
    n_records: int
    missing: int
    first_missing: int | None
    lines: np.ndarray | None = None


def read_trace_states(path: str | os.PathLike[str], *, block_bytes: int = DEFAULT_BLOCK_BYTES,
                      keys: bool = True, spill: bool = False,
                      digest: parquet.DatasetDigest | None = None) -> TraceStates:
    """The states of a traces file, every record checked like read_traces; streamed, so
    memory holds the states (nine numbers, stream, id and t each), never the records.
    `keys=False`, `spill=True` and `digest` (Parquet only; see parquet.read_trace_states):
    t and id are checked but not kept; the values are kept in a temporary file, not in
    memory; the SHA-256 of the very bytes read."""
    if parquet.is_parquet(path):
        return parquet.read_trace_states(path, keys=keys, spill=spill, digest=digest)
    values: list[np.ndarray] = []
    streams: list[Any] = []
    ids: list[Any] = []
    times: list[Any] = []
    lines: list[np.ndarray] = []
    n_records = missing = 0
    first_missing = None
    for block in iter_trace_blocks(path, TraceRecord, block_bytes=block_bytes):
        with gc_paused():
            states = list(map(attrgetter("state"), block.records))
            has = np.fromiter((s is not UNSET for s in states), dtype=bool, count=len(states))
            if not has.all():
                missing += int(np.count_nonzero(~has))
                if first_missing is None:
                    first_missing = int(block.lines[np.argmin(has)])
            kept = list(compress(block.records, has))
            lines.append(np.asarray(block.lines)[has])
            values.append(_matrix(map(attrgetter(*STATE_FIELDS), compress(states, has)), len(kept),
                                  len(STATE_FIELDS)))
            streams.extend(None if x is UNSET else x for x in map(attrgetter("stream"), kept))
            ids.extend(None if x is UNSET else x for x in map(attrgetter("id"), kept))
            times.extend(map(attrgetter("t"), kept))
        n_records += len(block.records)
    matrix = np.concatenate(values) if values else np.empty((0, len(STATE_FIELDS)))
    kept_lines = np.concatenate(lines) if lines else np.empty(0, dtype=np.int64)
    return TraceStates(StateSet(matrix, streams, times, ids), n_records, missing, first_missing, kept_lines)


def read_trace_records(path: str | os.PathLike[str], keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every record as a plain dict, checked like read_traces, unknown fields kept.

    With `keys`, each dict holds only those of its fields (a long file then costs memory
    for what is used, not for every field of every record)."""
    if parquet.is_parquet(path):
        return parquet.read_trace_records(path, keys)
    source = display_name(path)
    checker = msgspec.json.Decoder(TraceRecord)
    plain = msgspec.json.Decoder()
    wanted = None if keys is None else tuple(keys)
    out: list[dict[str, Any]] = []
    first_line = 1
    with open_binary(path) as stream:
        for data in iter_blocks(stream):
            block = decode_block(data, checker, source, first_line)
            first_line += block.n_lines
            # Every non-blank line has just passed as one record, so the block splits alike;
            # a field the check skips unread (an unknown one) may still not decode.
            try:
                records = plain.decode_lines(data)
            except DECODE_ERRORS:
                records = [r for _, r in iter_decoded_lines(bytes(data), plain, source, first_line - block.n_lines)]
            if wanted is not None:
                records = [{k: r[k] for k in wanted if k in r} for r in records]
            out.extend(records)
    return out


__all__ = [
    "ABSENT_MEANS",
    "ACTION_SIZE",
    "REASONS",
    "REASON_CODES",
    "REQUIRED_FIELDS",
    "RequiredTraceRecord",
    "TraceChunk",
    "TraceColumns",
    "TraceRecord",
    "TraceState",
    "TraceStates",
    "action_matrix",
    "decided_columns",
    "encode_traces",
    "iter_trace_blocks",
    "iter_trace_chunks",
    "read_trace_records",
    "read_trace_states",
    "read_traces",
    "trace_records",
    "write_traces",
]

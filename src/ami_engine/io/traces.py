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
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import UNSET, UnsetType

from . import parquet
from .files import (
    DECODE_ERRORS,
    DEFAULT_BLOCK_BYTES,
    DecodedBlock,
    InputError,
    atomic_output,
    decode_block,
    display_name,
    gc_paused,
    iter_blocks,
    iter_decoded_lines,
    open_binary,
)
from .stateset import STATE_FIELDS, StateSet

# Rules that set a decision's level (docs/engine.md §8-10), in the order of their codes.
REASONS: tuple[str, ...] = (
    "normal",
    "no_clear_leader",
    "drift",
    "j_critical",
    "h_critical",
    "low_confidence",
    "divergence",
    "clamp_violation",
    "no_valid_candidate",
)
REASON_CODES: dict[str, int] = {name: code for code, name in enumerate(REASONS)}

# The fields of the Phase 4.7.1 format, in this engine's key order. Every one must be
# present when reading, except those of ABSENT_MEANS.
REQUIRED_FIELDS: tuple[str, ...] = (
    "t",
    "cus",
    "delta_cus",
    "cus_mean",
    "raw_action",
    "final_action",
    "soft_clamp",
    "level",
    "confidence",
    "delta_confidence",
    "human_escalation",
    "chaos",
)
# Phase 4.7.1 fields that a record may leave out, and the value that absence means.
ABSENT_MEANS: dict[str, Any] = {"chaos": False}
ACTION_SIZE = 4


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

_StateOut = msgspec.defstruct("_StateOut", [(name, float) for name in STATE_FIELDS], gc=False)


class _TraceOut(msgspec.Struct, omit_defaults=True, gc=False):
    """One written record; the field order here is the key order of the file."""

    t: Any
    cus: float
    cus_raw: float
    # NaN is written as null by msgspec: exactly what a missing delta means in a trace.
    delta_cus: float
    cus_mean: float
    raw_action: list[float]
    final_action: list[float]
    soft_clamp: bool
    level: int
    confidence: float
    delta_confidence: float
    human_escalation: bool
    chaos: bool
    model: str
    reason: str
    W: float
    J: float
    H: float
    C: float
    stream: Any
    id: Any
    state: Any
    config_id: str
    input_repairs: dict[str, str] | None = None


def encode_traces(
    cols: TraceColumns,
    states: StateSet,
    *,
    config_id: str,
    model: str,
    chaos: bool,
    chunk_records: int = 8192,
) -> Iterator[bytes]:
    """The traces of `cols` (decided on `states`, row for row) as JSON lines, in chunks."""
    n = len(cols)
    if len(states) != n:
        raise ValueError(f"{n} decisions but {len(states)} states")
    encoder = msgspec.json.Encoder()
    reason_names = np.asarray(REASONS, dtype=object)
    repairs = states.repairs if states.repairs is not None else repeat(None, n)
    repairs = [r or None for r in repairs]
    for start in range(0, n, chunk_records):
        part = slice(start, min(start + chunk_records, n))
        with gc_paused():
            records = list(
                map(
                    _TraceOut,
                    cols.t[part],
                    cols.cus[part].tolist(),
                    cols.cus_raw[part].tolist(),
                    cols.delta_cus[part].tolist(),
                    cols.cus_mean[part].tolist(),
                    cols.raw_action[part].tolist(),
                    cols.final_action[part].tolist(),
                    cols.soft_clamp[part].tolist(),
                    cols.level[part].tolist(),
                    cols.confidence[part].tolist(),
                    cols.delta_confidence[part].tolist(),
                    cols.human_escalation[part].tolist(),
                    repeat(bool(chaos)),
                    repeat(model),
                    reason_names[cols.reason[part]].tolist(),
                    cols.W[part].tolist(),
                    cols.J[part].tolist(),
                    cols.H[part].tolist(),
                    cols.C[part].tolist(),
                    states.streams[part],
                    states.ids[part],
                    starmap(_StateOut, states.values[part].tolist()),
                    repeat(config_id),
                    repairs[part],
                )
            )
            encoded = encoder.encode_lines(records)
        yield encoded


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

_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Action = tuple[float, float, float, float]

TraceState = msgspec.defstruct("TraceState", [(name, _Unit) for name in STATE_FIELDS], gc=False)


class RequiredTraceRecord(msgspec.Struct, gc=False):
    """The Phase 4.7.1 fields of a record; every other key is skipped unread.

    `confidence` is None where the trace says null: the original engine writes that for a
    decision where no action passed its filter and its fail-safe did not fire. No metric
    reads it; the invariants that involve it cannot be checked on such a record."""

    t: int | float
    cus: _Unit
    delta_cus: float | None
    cus_mean: _Unit
    raw_action: _Action
    final_action: _Action
    soft_clamp: bool
    level: Literal[0, 1, 2]
    confidence: _Unit | None
    delta_confidence: float | None
    human_escalation: bool
    chaos: bool = ABSENT_MEANS["chaos"]


class TraceRecord(RequiredTraceRecord, gc=False):
    """A whole record: the required fields and those this engine adds, each optional."""

    model: str | UnsetType = UNSET
    reason: str | UnsetType = UNSET
    cus_raw: _Unit | UnsetType = UNSET
    W: float | UnsetType = UNSET
    J: float | UnsetType = UNSET
    H: float | UnsetType = UNSET
    C: float | UnsetType = UNSET
    stream: str | int | None | UnsetType = UNSET
    id: str | int | None | UnsetType = UNSET
    state: TraceState | UnsetType = UNSET  # type: ignore[valid-type]
    config_id: str | UnsetType = UNSET
    input_repairs: dict[str, Literal["filled", "clipped", "dropped"]] | UnsetType = UNSET


@dataclass
class TraceChunk:
    """Consecutive trace records as columns.

    Optional columns are None when no record of the chunk has the field; otherwise records
    without it hold NaN (numbers) or None (others). `delta_cus` and `delta_confidence` are
    NaN where the trace says null. `state` is (n, 9) in STATE_FIELDS order with `has_state`
    saying which rows came with one. `confidence` is NaN where the trace says null.
    `line` is each record's line number in its file.
    """

    line: np.ndarray
    t: np.ndarray
    t_values: list[int | float]
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
        t_values = list(map(attrgetter("t"), records))
        return cls(
            line=line,
            t=np.array(t_values, dtype=np.float64),
            t_values=t_values,
            cus=_floats(records, "cus"),
            delta_cus=np.array(list(map(attrgetter("delta_cus"), records)), dtype=np.float64),
            cus_mean=_floats(records, "cus_mean"),
            raw_action=action_matrix(records, "raw_action"),
            final_action=action_matrix(records, "final_action"),
            soft_clamp=_bools(records, "soft_clamp"),
            level=np.fromiter(map(attrgetter("level"), records), dtype=np.int8, count=n),
            confidence=_floats_or_nan(records, "confidence"),
            delta_confidence=np.array(list(map(attrgetter("delta_confidence"), records)), dtype=np.float64),
            human_escalation=_bools(records, "human_escalation"),
            chaos=_bools(records, "chaos"),
            reason=_optional(records, "reason"),
            cus_raw=_optional_floats(records, "cus_raw"),
            W=_optional_floats(records, "W"),
            J=_optional_floats(records, "J"),
            H=_optional_floats(records, "H"),
            C=_optional_floats(records, "C"),
            stream=_optional(records, "stream"),
            id=_optional(records, "id"),
            state=state_values,
            has_state=has_state,
            config_id=_optional(records, "config_id"),
            model=_optional(records, "model"),
            input_repairs=_optional(records, "input_repairs"),
        )

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


def read_trace_states(path: str | os.PathLike[str], *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> TraceStates:
    """The states of a traces file, every record checked like read_traces; streamed, so
    memory holds the states (nine numbers, stream, id and t each), never the records."""
    if parquet.is_parquet(path):
        return parquet.read_trace_states(path)
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
    "TraceStates",
    "action_matrix",
    "encode_traces",
    "iter_trace_blocks",
    "iter_trace_chunks",
    "read_trace_records",
    "read_trace_states",
    "read_traces",
    "trace_records",
    "write_traces",
]

"""The strict reader and the writer of states files (docs/engine.md §1, docs/formats.md "States").

One JSON object per line: the nine state fields, optional `stream`, `t` and `id`, and in
regression files `expect_level_min`. Anything else is an InputError naming the line, the
field and the value; nothing is skipped. Missing fields are filled with 0.5 and
out-of-range values clipped into [0, 1] only when the caller asks, and each such repair
is recorded per state.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from operator import attrgetter
from typing import Any, Literal

import msgspec
import numpy as np
from msgspec import UNSET, UnsetType

from .files import (
    InputError,
    atomic_output,
    decode_block,
    display_name,
    explain_validation,
    iter_decoded_lines,
    read_bytes,
)
from .stateset import STATE_FIELDS, StateSet

FILL_VALUE = 0.5
FILLED, CLIPPED = "filled", "clipped"
_Where = Callable[[int], tuple[str, int | None]]


@functools.cache
def _record_type(fill_missing: bool, allow_expect_level: bool) -> type[msgspec.Struct]:
    """The msgspec type of one states line under the given options."""
    fields: list[Any]
    if fill_missing:
        fields = [(name, float | UnsetType, UNSET) for name in STATE_FIELDS]
    else:
        fields = [(name, float) for name in STATE_FIELDS]
    fields += [
        ("stream", str | int | None, None),
        ("t", int | float | UnsetType, UNSET),
        ("id", str | int | None, None),
    ]
    if allow_expect_level:
        fields.append(("expect_level_min", Literal[0, 1, 2], 0))
    return msgspec.defstruct("StateRecord", fields, forbid_unknown_fields=True, gc=False)


class _Reader:
    """Turns decoded records into a StateSet, checking what msgspec's types cannot say."""

    def __init__(self, fill_missing: bool, clip: bool, allow_expect_level: bool) -> None:
        self.fill_missing = fill_missing
        self.clip = clip
        self.allow_expect_level = allow_expect_level
        self.record_type = _record_type(fill_missing, allow_expect_level)

    def build(self, records: list[Any], where: _Where) -> StateSet:
        values, repairs = self._values(records, where)
        t = list(map(attrgetter("t"), records))
        missing_t = t.count(UNSET)
        if missing_t == len(t):
            t = [None] * len(t)
        elif missing_t:
            t = [None if x is UNSET else x for x in t]
        expect = None
        if self.allow_expect_level:
            expect = np.fromiter(map(attrgetter("expect_level_min"), records), dtype=np.int8, count=len(records))
        return StateSet(
            values=values,
            streams=list(map(attrgetter("stream"), records)),
            t=t,
            ids=list(map(attrgetter("id"), records)),
            repairs=repairs,
            expect_level_min=expect,
        )

    def _values(self, records: list[Any], where: _Where) -> tuple[np.ndarray, list[dict[str, str] | None] | None]:
        n, width = len(records), len(STATE_FIELDS)
        rows = map(attrgetter(*STATE_FIELDS), records)
        repairs: list[dict[str, str] | None] = [None] * n
        try:
            values = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * width).reshape(n, width)
        except (TypeError, ValueError):  # UNSET among the values: fields to fill
            values = np.empty((n, width), dtype=np.float64)
            for i, row in enumerate(map(attrgetter(*STATE_FIELDS), records)):
                missing = [j for j, v in enumerate(row) if v is UNSET]
                if missing:
                    row = [FILL_VALUE if v is UNSET else v for v in row]
                    repairs[i] = {STATE_FIELDS[j]: FILLED for j in missing}
                values[i] = row
        bad = ~np.isfinite(values)
        if not self.clip:
            bad |= (values < 0.0) | (values > 1.0)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            value = float(values[i, j])
            problem = "outside [0, 1]" if np.isfinite(value) else "not a finite number"
            raise InputError(*where(int(i)), STATE_FIELDS[j], problem, value)
        if self.clip:
            outside = (values < 0.0) | (values > 1.0)
            for i, j in np.argwhere(outside):
                repairs[i] = {**(repairs[i] or {}), STATE_FIELDS[j]: CLIPPED}
            np.clip(values, 0.0, 1.0, out=values)
        if repairs.count(None) == n:
            return values, None
        return values, [None if r is None else {f: r[f] for f in STATE_FIELDS if f in r} for r in repairs]

    @contextlib.contextmanager
    def regression_hint(self) -> Iterator[None]:
        """Say why `expect_level_min` is refused where it is not allowed."""
        try:
            yield
        except InputError as err:
            if self.allow_expect_level or err.field != "expect_level_min" or err.problem != "unknown field":
                raise
            raise InputError(err.source, err.line, err.field, "allowed only in regression files") from None

    @staticmethod
    def check_t_finite(t: list[Any], where: _Where) -> None:
        """JSON cannot spell a non-finite t (msgspec refuses it); records in memory can."""
        for i, x in enumerate(t):
            if isinstance(x, float) and not math.isfinite(x):
                raise InputError(*where(i), "t", "not a finite number", x)


def read_states(
    path: str | os.PathLike[str],
    *,
    fill_missing: bool = False,
    clip: bool = False,
    allow_expect_level: bool = False,
) -> StateSet:
    """All states of a states JSONL file (`-` = stdin, `.gz` decompressed), strictly checked."""
    reader = _Reader(fill_missing, clip, allow_expect_level)
    with reader.regression_hint():
        return _read_states(path, reader)


def _read_states(path: str | os.PathLike[str], reader: _Reader) -> StateSet:
    source = display_name(path)
    data = read_bytes(path)
    decoder = msgspec.json.Decoder(reader.record_type)
    try:
        block = decode_block(data, decoder, source)
    except InputError:
        # The first line that does not parse stops the reading; an earlier line may still
        # hold a bad value, and the first problem in the file is the one to report.
        earlier: list[tuple[int, Any]] = []
        with contextlib.suppress(InputError):
            earlier.extend(iter_decoded_lines(data, decoder, source))
        if earlier:
            lines, records = zip(*earlier, strict=True)
            reader.build(list(records), lambda i: (source, lines[i]))
        raise
    if not block.records:
        raise InputError(source, None, None, "no states in the file")
    lines = block.lines.tolist()
    return reader.build(block.records, lambda i: (source, lines[i]))


def states_from_records(
    records: Iterable[dict[str, Any]],
    *,
    fill_missing: bool = False,
    clip: bool = False,
    allow_expect_level: bool = False,
) -> StateSet:
    """The same checks as read_states for states given in memory; errors name `record INDEX`."""
    reader = _Reader(fill_missing, clip, allow_expect_level)
    with reader.regression_hint():
        return _states_from_records(list(records), reader)


def _states_from_records(records: list[dict[str, Any]], reader: _Reader) -> StateSet:
    try:
        structs = msgspec.convert(records, list[reader.record_type])
    except msgspec.ValidationError:
        structs = []
        for i, record in enumerate(records):
            try:
                structs.append(msgspec.convert(_plain_numbers(record), reader.record_type))
            except msgspec.ValidationError as exc:
                if structs:
                    reader.build(structs, _record_where)
                raise explain_validation(str(exc), record, f"record {i}", None) from None
    if not structs:
        raise InputError("records", None, None, "no states given")
    states = reader.build(structs, _record_where)
    reader.check_t_finite(states.t, _record_where)
    return states


def _record_where(i: int) -> tuple[str, int | None]:
    return f"record {i}", None


def _plain_numbers(record: Any) -> Any:
    """NumPy scalars as Python numbers (a numpy bool stays a bool, so it is still refused)."""
    if not isinstance(record, dict):
        return record
    return {
        k: v.item() if isinstance(v, np.integer | np.floating) else v
        for k, v in record.items()
    }


def encode_states(states: StateSet, *, chunk_records: int = 8192) -> Iterator[bytes]:
    """The states as JSON lines, in chunks: the nine fields in STATE_FIELDS order, then
    `stream`, `t` and `id` where the state has them."""
    encoder = msgspec.json.Encoder()
    rows = states.values.tolist()
    for start in range(0, len(rows), chunk_records):
        stop = start + chunk_records
        records = []
        for row, stream, t, sid in zip(
            rows[start:stop], states.streams[start:stop], states.t[start:stop], states.ids[start:stop], strict=True
        ):
            record: dict[str, Any] = dict(zip(STATE_FIELDS, row, strict=True))
            for key, value in (("stream", stream), ("t", t), ("id", sid)):
                if value is not None:
                    record[key] = value
            records.append(record)
        yield encoder.encode_lines(records)


def write_states(path: str | os.PathLike[str], states: StateSet) -> None:
    """Write a states JSONL file atomically (`-` = stdout, `.gz` compressed)."""
    with atomic_output(path) as out:
        for chunk in encode_states(states):
            out.write(chunk)

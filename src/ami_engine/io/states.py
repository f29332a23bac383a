"""The strict reader and the writer of states files (docs/engine.md §1, docs/formats.md "States").

One JSON object per line: the nine state fields, optional `stream`, `t` and `id`, and in
regression files `expect_level_min`. Anything else is an InputError naming the line, the
field and the value; nothing is skipped. Missing fields are filled with 0.5,
out-of-range values clipped into [0, 1] and unknown keys dropped only when the caller
asks, and each such repair is recorded per state.
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

from ..errors import InputError
from . import parquet
from ._atomic import atomic_output
from ._blocks import decode_block, iter_decoded_lines
from ._errors import explain_validation
from ._open import display_name, read_bytes
from ._repeated_keys import refuse_repeated_keys
from .stateset import STATE_FIELDS, StateSet

FILL_VALUE = 0.5
UNKNOWN_HINT = "--drop-unknown leaves such keys out"
FILLED, CLIPPED, DROPPED = "filled", "clipped", "dropped"
_Where = Callable[[int], tuple[str, int | None]]


@functools.cache
def _record_type(fill_missing: bool, allow_expect_level: bool, drop_unknown: bool = False) -> type[msgspec.Struct]:
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
    return msgspec.defstruct("StateRecord", fields, forbid_unknown_fields=not drop_unknown, gc=False)


def _dropped_keys(records: list[Any], known: frozenset[str]) -> list[list[str]]:
    """Per record (a dict of its keys), the keys a states line may not have, sorted."""
    return [sorted(k for k in r if k not in known) if isinstance(r, dict) else [] for r in records]


class _Reader:
    """Turns decoded records into a StateSet, checking what msgspec's types cannot say."""

    def __init__(self, fill_missing: bool, clip: bool, allow_expect_level: bool, drop_unknown: bool = False,
                 int64: bool = False) -> None:
        self.fill_missing = fill_missing
        self.clip = clip
        self.allow_expect_level = allow_expect_level
        self.drop_unknown = drop_unknown
        self.int64 = int64
        self.record_type = _record_type(fill_missing, allow_expect_level, drop_unknown)
        self.known_keys = frozenset(_record_type(False, allow_expect_level).__struct_fields__)

    def build(self, records: list[Any], where: _Where, dropped: list[list[str]] | None = None) -> StateSet:
        """The StateSet of decoded records; `dropped` names, per record, the unknown keys
        the decoder left out (recorded as repairs)."""
        if self.int64:
            self._check_parquet_integers(records, where)
        values, repairs = self._values(records, where)
        if dropped is not None and any(dropped):
            repairs = [{**(r or {}), **dict.fromkeys(keys, DROPPED)} if keys else r
                       for r, keys in zip(repairs or [None] * len(records), dropped, strict=True)]
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

    def _check_parquet_integers(self, records: list[Any], where: _Where) -> None:
        """An integer stream, t or id that Parquet cannot hold (beyond 64 bits; a t beyond
        2**53 when another t is a float) is refused at its record (a bad value in an
        earlier record is reported first)."""
        found = []
        for name in ("stream", "t", "id"):
            values = list(map(attrgetter(name), records))
            floats = name == "t" and any(type(v) is float for v in values)
            hit = parquet.first_unwritable(values, floats=floats)
            if hit is not None:
                found.append((hit[0], name, hit[1]))
        if found:
            i, name, problem = min(found)
            self._values(records[:i], where)
            raise InputError(*where(i), name, problem, getattr(records[i], name))

    def _values(self, records: list[Any], where: _Where) -> tuple[np.ndarray, list[dict[str, str] | None] | None]:
        n, width = len(records), len(STATE_FIELDS)
        rows = map(attrgetter(*STATE_FIELDS), records)
        filled = None
        try:
            values = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * width).reshape(n, width)
        except (TypeError, ValueError):  # UNSET among the values: fields to fill
            values = np.empty((n, width), dtype=np.float64)
            filled = np.zeros((n, width), dtype=bool)
            for i, row in enumerate(map(attrgetter(*STATE_FIELDS), records)):
                filled[i] = [v is UNSET for v in row]
                values[i] = [FILL_VALUE if v is UNSET else v for v in row]
        return self.check_values(values, filled, where)

    def check_values(
        self, values: np.ndarray, filled: np.ndarray | None, where: _Where
    ) -> tuple[np.ndarray, list[dict[str, str] | None] | None]:
        """Check the (n, 9) state values, fill the cells `filled` marks (when the reader
        fills) and clip (when it clips); the values and each state's repairs, or None."""
        n = values.shape[0]
        repairs: list[dict[str, str] | None] = [None] * n
        if filled is not None and filled.any():
            values = np.where(filled, FILL_VALUE, values)
            for i in np.flatnonzero(filled.any(axis=1)).tolist():
                repairs[i] = {STATE_FIELDS[j]: FILLED for j in np.flatnonzero(filled[i]).tolist()}
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
        """Say why `expect_level_min` is refused where it is not allowed, and, outside
        regression files (which are kept strict), how other unknown keys can be left out."""
        try:
            yield
        except InputError as err:
            if err.problem != "unknown field" or self.allow_expect_level:
                raise
            if err.field == "expect_level_min":
                raise InputError(err.source, err.line, err.field, "allowed only in regression files") from None
            err.problem = f"unknown field; {UNKNOWN_HINT}"
            err.args = (err._message(),)
            raise

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
    drop_unknown: bool = False,
    spill: bool = False,
    digest: parquet.DatasetDigest | None = None,
    int64: bool = False,
) -> StateSet:
    """All states of a states JSONL file (`-` = stdin, `.gz` decompressed) or of Parquet
    (a `.parquet` file or a folder of them), strictly checked.

    With `drop_unknown`, keys that are not part of a states line are left out, and each
    state's repairs name them as "dropped". `spill` (Parquet only): the values are kept in
    a temporary file, not in memory (io.spill). `digest` (Parquet only): gets the SHA-256
    of the very bytes read. `int64`: the states are to be written to Parquet, so an
    integer stream, t or id beyond 64 bits is refused at its line (JSONL holds any)."""
    reader = _Reader(fill_missing, clip, allow_expect_level, drop_unknown, int64)
    if parquet.is_parquet(path):
        return parquet.read_states(path, fill_missing=fill_missing, clip=clip,
                                   allow_expect_level=allow_expect_level, check_values=reader.check_values,
                                   spill=spill, digest=digest, int64=int64)
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
    dropped = None
    if reader.drop_unknown:
        # Every non-blank line has just passed as one object, so the two readings align.
        keys = decode_block(data, msgspec.json.Decoder(dict[str, msgspec.Raw]), source).records
        dropped = _dropped_keys(keys, reader.known_keys)
    states = reader.build(block.records, lambda i: (source, lines[i]), dropped)
    refuse_repeated_keys(data, block.lines, source, known_total=_keys_known(states, each=False),
                         known_each=lambda: _keys_known(states, each=True),
                         colons_in_strings=lambda: None if reader.drop_unknown else _colons_in_strings(states))
    return states


def _colons_in_strings(states: StateSet) -> int:
    """The colons in the text values of `states` (stream, id): a states line's only strings
    besides its keys, whose names have none."""
    return "".join([v for values in (states.streams, states.ids) for v in values if type(v) is str]).count(":")


def _keys_known(states: StateSet, *, each: bool) -> Any:
    """The distinct keys the lines of `states` are known to have given, in all or (`each`)
    per state: the nine fields, `stream`, `t` and `id` where not None, `expect_level_min`
    where not 0, and the keys dropped less the fields filled. A null or a default may
    have been given too: this is a lower bound."""
    n = len(states)
    optional = (states.streams, states.t, states.ids)
    known: Any
    if each:
        known = np.full(n, len(STATE_FIELDS), dtype=np.int64)
        for values in optional:
            known += np.fromiter((v is not None for v in values), dtype=bool, count=n)
    else:
        known = len(STATE_FIELDS) * n + sum(n - values.count(None) for values in optional)
    if states.expect_level_min is not None:
        given = states.expect_level_min != 0
        known = known + (given if each else int(np.count_nonzero(given)))
    if states.repairs is not None:
        changes = np.array([sum((v == DROPPED) - (v == FILLED) for v in r.values()) if r else 0
                            for r in states.repairs], dtype=np.int64)
        known = known + (changes if each else int(changes.sum()))
    return known


def states_from_records(
    records: Iterable[dict[str, Any]],
    *,
    fill_missing: bool = False,
    clip: bool = False,
    allow_expect_level: bool = False,
    drop_unknown: bool = False,
) -> StateSet:
    """The same checks as read_states for states given in memory; errors name `record INDEX`."""
    reader = _Reader(fill_missing, clip, allow_expect_level, drop_unknown)
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
    dropped = _dropped_keys(records, reader.known_keys) if reader.drop_unknown else None
    states = reader.build(structs, _record_where, dropped)
    reader.check_t_finite(states.t, _record_where)
    _check_text(states.streams, "stream")
    _check_text(states.ids, "id")
    return states


def _check_text(values: list[Any], field: str) -> None:
    """Strings given in memory that no file could hold (a lone UTF-16 surrogate, which
    UTF-8 cannot encode) are refused as a file's would be, not left to fail on writing."""
    for text in {v for v in values if type(v) is str}:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            i = next(i for i, v in enumerate(values) if type(v) is str and v == text)
            raise InputError(*_record_where(i), field,
                             f"not valid Unicode text (a lone surrogate): {ascii(text)}") from None


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
    """Write a states JSONL file atomically (`-` = stdout, `.gz` compressed), or Parquet
    for a path ending in `.parquet`."""
    if str(path).lower().endswith(parquet.PARQUET_SUFFIX):
        parquet.write_states(path, states)
        return
    with atomic_output(path) as out:
        for chunk in encode_states(states):
            out.write(chunk)

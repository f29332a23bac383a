"""States and DecisionTraces as Parquet (docs/formats.md, Parquet): one file, or a folder of them.

A folder is read as one data set: its `.parquet` files in sorted path order (hive-style
partition folders such as `day=2026-11-29/` sort by their value, `hour=9/` before
`hour=10/`), hidden files skipped, linked folders followed. The columns are those of the
JSONL forms: `state` a struct of the nine fields, actions fixed-size lists of four
float64, the nullable fields nullable; an integer `t` is kept exactly. Reading is as strict
as for JSONL: a bad value stops the reading with `FILE row N: column: what is wrong`, where
N counts the rows of that file from 1. Only the columns a caller asks for are read, a
record batch at a time, so memory is bounded by a batch whatever the size of the data.
Files are written with page checksums, and a page whose checksum does not match is an
error naming its file (files of other writers, without checksums, are read as they are).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._atomic import file_target, temp_path_for
from ._errors import os_input_error
from ._open import not_regular
from ._pinned import DatasetDigest, pinned
from ._trace_schema import (
    ACTION_SIZE,
    FIELD_NAMES,
    FIELDS,
    REPAIRS,
    REQUIRED_COLUMNS,
    TRACE_SCHEMA,
    arrow_nullable,
    arrow_type,
    names_of,
)
from .spill import RowSpill, spilled
from .stateset import STATE_FIELDS, Nones, StateSet

PARQUET_SUFFIX = ".parquet"
BATCH_ROWS = 65536
ROW_GROUP_ROWS = 65536
_COMPRESSION = "snappy"  # decodes faster than zstd, for 10% more bytes

# Trace columns in the key order of the JSONL writer (the trace schema's order).
TRACE_COLUMNS: tuple[str, ...] = FIELD_NAMES
_UNIT_COLUMNS = names_of("unit")
_FLOAT_COLUMNS = names_of("unit", "number")
_BOOL_COLUMNS = names_of("bool")
_TEXT_COLUMNS = names_of("text")
_KEY_COLUMNS = names_of("key")
STATE_EXTRA_COLUMNS: tuple[str, ...] = ("stream", "t", "id", "expect_level_min")


def _pa() -> Any:
    import pyarrow

    return pyarrow


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """True for a `.parquet` file or a folder (a folder of Parquet files is one data set);
    False for anything that is not a path (stdin read into memory)."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    text = os.fspath(path)
    return text.lower().endswith(PARQUET_SUFFIX) or (text != "-" and os.path.isdir(text))


def parquet_files(path: str | os.PathLike[str]) -> list[str]:
    """The Parquet files of `path`: itself, or those under the folder in reading order
    (_reading_order). Linked folders are followed like linked files; a folder reached a
    second time by its real path (a link back up the tree, or two links to one folder)
    is an error, as is a folder that cannot be listed: nothing is read twice or left out.

    Each must be a regular file: this first look refuses a FIFO or a device by name before
    Parquet's reader could wait on it; io._pinned looks again at the descriptor read."""
    text = os.fspath(path)
    if not os.path.isdir(text):
        if not os.path.exists(text):
            raise InputError(text, None, None, "no such file")
        _check_regular(text)
        return [text]
    found = []
    reached: dict[str, str] = {}

    def unlistable(exc: OSError) -> None:
        raise InputError(exc.filename or text, None, None, f"cannot be listed: {exc.strerror}")

    for root, dirs, files in os.walk(text, onerror=unlistable, followlinks=True):
        real = os.path.realpath(root)
        if real in reached:
            raise InputError(text, None, None, f"the folder {root} is {reached[real]} again (through a link); "
                                               "a data set reads each folder once")
        reached[real] = root
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found.extend(os.path.join(root, f) for f in files
                     if f.lower().endswith(PARQUET_SUFFIX) and not f.startswith((".", "_")))
    if not found:
        raise InputError(text, None, None, "no .parquet files in the folder")
    for file in found:
        _check_regular(file)
    return sorted(found, key=lambda f: _reading_order(os.path.relpath(f, text)))


_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _reading_order(relative: str) -> tuple[tuple[Any, ...], ...]:
    """The sort key of a file's path within its data set, part by part: a `key=NUMBER`
    part (a hive partition of a numeric value: `hour=9`, `x=-1.5`) by its key, then its
    value as a number; any other part by its text. Ties (`hour=9`, `hour=09`) go by the
    text, so the order is total and the same on every system."""
    key = []
    for part in Path(relative).parts:
        name, eq, value = part.partition("=")
        if eq and _NUMBER.fullmatch(value):
            key.append((name, 0, Decimal(value), part))
        else:
            key.append((part, 1, Decimal(0), part))
    return tuple(key)


def _check_regular(file: str) -> None:
    try:
        problem = not_regular(os.stat(file).st_mode, file)
    except OSError as exc:
        raise os_input_error(exc, file) from None
    if problem is not None:
        raise problem


def dataset_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes; of a folder of Parquet files, of each file's relative path
    and digest in reading order (so a renamed, added or changed part changes it)."""
    text = os.fspath(path)
    if not os.path.isdir(text):
        with pinned(text, digest=True) as held:
            return str(held.sha256)
    found = DatasetDigest(text)
    files = parquet_files(text)
    found.expect(files)
    for file in files:
        with pinned(file, digest=True) as held:
            found.add(file, str(held.sha256))
    return found.hexdigest()


def _open(file: str, name: str | None = None) -> Any:
    """The Parquet file `file` (read by that name; `name`, if given, is the one to show)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(file, page_checksum_verification=True)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
        raise InputError(name or file, None, None, f"not a readable Parquet file: {exc}") from None


def file_schema(path: str | os.PathLike[str]) -> Any:
    """The Arrow schema of the first file of `path`."""
    return _open(parquet_files(path)[0]).schema_arrow


# ---------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Problem:
    row: int  # 0-based within the batch
    column: str
    problem: str
    value: Any = None


class _Batch:
    """One record batch of one file being checked: its columns turned into NumPy arrays,
    with the first problem of each column remembered, so that the earliest row is reported."""

    def __init__(self, batch: Any, file: str, first_row: int) -> None:
        self.batch = batch
        self.file = file
        self.first_row = first_row
        self.n = batch.num_rows
        self.problems: list[_Problem] = []

    def column(self, name: str) -> Any | None:
        index = self.batch.schema.get_field_index(name)
        return None if index < 0 else self.batch.column(index)

    def note(self, mask: np.ndarray, column: str, problem: str, values: Any = None) -> bool:
        """Remember the first row of `mask` as a problem of `column`; True when there was one."""
        bad = np.flatnonzero(mask)
        if bad.size == 0:
            return False
        i = int(bad[0])
        value = None
        if values is not None:
            value = values[i].as_py() if hasattr(values, "type") else values[i]
            if isinstance(value, np.generic):
                value = value.item()
        self.problems.append(_Problem(i, column, problem, value))
        return True

    def note_at(self, row: int, column: str, problem: str, value: Any = None) -> None:
        """Remember `row` (0-based within the batch) as a problem of `column`."""
        self.problems.append(_Problem(row, column, problem, value))

    def type_problem(self, arr: Any, column: str, expected: str) -> None:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        row = int(np.argmax(valid)) if valid.any() else 0
        value = arr[row].as_py() if valid.any() else None
        self.problems.append(_Problem(row, column, f"expected {expected}, found a column of {arr.type}", value))

    def raise_first(self) -> None:
        if not self.problems:
            return
        first = min(self.problems, key=lambda p: p.row)
        source = f"{self.file} row {self.first_row + first.row + 1}"
        if first.value is None:
            raise InputError(source, None, first.column, first.problem)
        raise InputError(source, None, first.column, first.problem, first.value)


def _nulls(arr: Any) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _is_number_type(t: Any) -> bool:
    pa = _pa()
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _floats(b: _Batch, arr: Any, name: str, *, nullable: bool, unit: bool) -> np.ndarray:
    """A number column as float64, NaN where null (allowed only when `nullable`)."""
    pa = _pa()
    if pa.types.is_null(arr.type):
        if not nullable:
            b.note(np.ones(len(arr), dtype=bool), name, "missing (null)")
        return np.full(len(arr), np.nan)
    if not _is_number_type(arr.type):
        b.type_problem(arr, name, "numbers")
        return np.full(len(arr), np.nan)
    null = _nulls(arr)
    if null.any() and not nullable:
        b.note(null, name, "missing (null)")
    if arr.type != pa.float64():
        arr = arr.cast(pa.float64())
    values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
    if null.any():
        values = values.copy()
        values[null] = np.nan
    # The common case, every value present and fine, costs two passes over the column.
    finite = np.isfinite(values)
    all_finite = bool(finite.all())
    if null.any() or not all_finite:
        if b.note(~null & ~finite, name, "not a finite number", values):
            return values
    if unit:
        checked = values if all_finite else values[finite]
        if checked.size and (checked.min() < 0.0 or checked.max() > 1.0):
            b.note(finite & ((values < 0.0) | (values > 1.0)), name, "outside [0, 1]", values)
    return values


def _bools(b: _Batch, arr: Any, name: str) -> np.ndarray:
    pa = _pa()
    if not pa.types.is_boolean(arr.type):
        b.type_problem(arr, name, "true or false")
        return np.zeros(len(arr), dtype=bool)
    if arr.null_count:
        b.note(_nulls(arr), name, "missing (null)")
        arr = arr.fill_null(False)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _level(b: _Batch, arr: Any, *, any_level: bool) -> np.ndarray:
    pa = _pa()
    if not pa.types.is_integer(arr.type):
        b.type_problem(arr, "level", "integers")
        return np.zeros(len(arr), dtype=np.int8)
    if arr.null_count:
        b.note(_nulls(arr), "level", "missing (null)")
        arr = arr.fill_null(0)
    values = np.asarray(arr.to_numpy(zero_copy_only=False))
    if values.dtype == np.int8 and (any_level or (values.size == 0 or (values.min() >= 0 and values.max() <= 2))):
        return values
    values = values.astype(np.int64)
    if any_level:
        b.note((values < -128) | (values > 127), "level", "not a small integer", values)
    else:
        b.note(~np.isin(values, (0, 1, 2)), "level", "not one of the allowed values (0, 1, 2)", values)
    return np.clip(values, -128, 127).astype(np.int8)


def _action(b: _Batch, arr: Any, name: str) -> np.ndarray:
    """An action column as an (n, 4) float64 array."""
    pa = _pa()
    n = len(arr)
    if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type)
            or pa.types.is_large_list(arr.type)) or not _is_number_type(arr.type.value_type):
        b.type_problem(arr, name, f"lists of {ACTION_SIZE} numbers")
        return np.full((n, ACTION_SIZE), np.nan)
    null = _nulls(arr)
    b.note(null, name, "missing (null)")
    if not (pa.types.is_fixed_size_list(arr.type) and arr.type.list_size == ACTION_SIZE):
        import pyarrow.compute as pc

        lengths = np.asarray(pc.list_value_length(arr).fill_null(ACTION_SIZE).to_numpy(zero_copy_only=False))
        if b.note(lengths != ACTION_SIZE, name, f"expected {ACTION_SIZE} numbers", arr):
            return np.full((n, ACTION_SIZE), np.nan)
    if null.any():
        arr = arr.fill_null(pa.scalar([0.0] * ACTION_SIZE, type=arr.type))
    if pa.types.is_fixed_size_list(arr.type):  # its values in place (flatten() would load Arrow's compute module)
        flat = arr.values.slice(arr.offset * ACTION_SIZE, n * ACTION_SIZE)
    else:
        flat = arr.flatten()
    if flat.type != pa.float64():
        flat = flat.cast(pa.float64())
    values = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(n, ACTION_SIZE)
    if flat.null_count or not np.isfinite(values).all():
        bad_element = ~np.isfinite(values)
        if flat.null_count:
            bad_element |= _nulls(flat).reshape(n, ACTION_SIZE)
        b.note(bad_element.any(axis=1), name, "not a finite number", arr)
    return values


def _keys(b: _Batch, arr: Any, name: str, *, as_list: bool = True) -> Any:
    """A `stream` or `id` column: strings or integers, None where null; checked, and given
    as a list, or (as_list=False) as the Arrow array itself."""
    pa = _pa()
    t = arr.type
    if not (pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        b.type_problem(arr, name, "strings or integers")
        return [None] * len(arr)
    return arr.to_pylist() if as_list else arr


def _is_text_type(t: Any) -> bool:
    pa = _pa()
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _texts(b: _Batch, arr: Any, name: str, *, as_list: bool = True) -> Any:
    """A text column: checked, and given as a list (None where null), or (as_list=False)
    as the Arrow array itself."""
    pa = _pa()
    if not (pa.types.is_null(arr.type) or _is_text_type(arr.type)):
        b.type_problem(arr, name, "strings")
        return [None] * len(arr)
    return arr.to_pylist() if as_list else arr


def _t(b: _Batch, arr: Any, *, nullable: bool = False, as_list: bool = True) -> Any:
    """The `t` column: numbers (finite), kept as given: an integer column's values exactly,
    never through float64, which rounds beyond 2**53 (epoch nanoseconds are beyond it).
    Given as a list of Python numbers, or (as_list=False) as the Arrow array itself."""
    pa = _pa()
    if pa.types.is_integer(arr.type):
        if arr.null_count and not nullable:
            b.note(_nulls(arr), "t", "missing (null)")
    else:
        _floats(b, arr, "t", nullable=nullable, unit=False)
    if not as_list:
        return arr
    if not _is_number_type(arr.type):
        return [None] * len(arr)
    return arr.to_pylist()


def _state(b: _Batch, arr: Any, name: str = "state") -> tuple[np.ndarray, np.ndarray]:
    """A struct column of the nine state fields: (n, 9) values and which rows have a state."""
    pa = _pa()
    n = len(arr)
    values = np.full((n, len(STATE_FIELDS)), np.nan)
    if pa.types.is_null(arr.type):
        return values, np.zeros(n, dtype=bool)
    if not pa.types.is_struct(arr.type):
        b.type_problem(arr, name, "a struct of the nine state fields")
        return values, np.zeros(n, dtype=bool)
    has = ~_nulls(arr)
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    parts = dict(zip(names, arr.flatten(), strict=True))
    for j, field in enumerate(STATE_FIELDS):
        if field not in parts:
            b.note(has, f"{name}.{field}", "missing")
            continue
        column = _floats(b, parts[field], f"{name}.{field}", nullable=True, unit=True)
        b.note(has & np.isnan(column) & _nulls(parts[field]), f"{name}.{field}", "missing (null)")
        values[:, j] = column
    return values, has


def _repairs(b: _Batch, arr: Any, *, as_list: bool = True) -> Any:
    """The `input_repairs` column: maps of field names to one of REPAIRS, checked on the
    Arrow arrays; given as a list of dicts (None where null), or (as_list=False) as the
    Arrow array itself."""
    pa = _pa()
    if pa.types.is_null(arr.type):
        return [None] * len(arr) if as_list else arr
    if not (pa.types.is_map(arr.type) and _is_text_type(arr.type.key_type) and _is_text_type(arr.type.item_type)):
        b.type_problem(arr, "input_repairs", "a map of field names to " + " or ".join(f'"{r}"' for r in REPAIRS))
        return [None] * len(arr)
    import pyarrow.compute as pc

    # The entries of this array's rows: a slice of the items of the whole array it may be
    # a slice of, from its first offset to its last.
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    items = arr.items.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    allowed = np.asarray(pc.is_in(items, value_set=pa.array(REPAIRS, type=items.type)).fill_null(False)
                         .to_numpy(zero_copy_only=False), dtype=bool)
    if not allowed.all():
        row = int(np.searchsorted(offsets, offsets[0] + np.argmin(allowed), side="right")) - 1
        b.note_at(row, "input_repairs", f"not one of the allowed values ({', '.join(REPAIRS)})",
                  dict(arr[row].as_py()))
    if not as_list:
        return arr
    return [None if row is None else dict(row) for row in arr.to_pylist()]


# ---------------------------------------------------------------------------- reading


@dataclass
class Block:
    """Checked columns of consecutive rows of one file: `rows` are their 1-based rows in
    that file, `index` their 0-based positions in the whole data set."""

    file: str
    rows: np.ndarray
    index: np.ndarray
    columns: dict[str, Any]

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _iter_batches(path: str | os.PathLike[str], wanted: Callable[[Any], list[str]],
                  batch_rows: int, digest: DatasetDigest | None = None) -> Iterator[tuple[str, int, int, Any]]:
    """(file, first row in file, first index in data set, batch) of the columns `wanted`
    chooses from each file's schema, in order. Each file is held open while it is read
    (io._pinned): what is read is one version of it; `digest` gets each file's SHA-256,
    taken from the same descriptor."""
    import pyarrow.dataset as ds

    at = 0
    files = parquet_files(path)
    if digest is not None:
        digest.expect(files)
    for file in files:
        with pinned(file, digest=digest is not None) as held:
            schema = _open(held.source, file).schema_arrow
            columns = wanted(schema, file)
            row = 0
            try:
                fragment = next(iter(ds.dataset(held.source, format="parquet").get_fragments()))
                # A little read-ahead keeps the reading busy while a batch is checked, and memory
                # bounded by a few batches. No pre-buffering: it holds every column chunk of the
                # file at once (883 MB of a 10-million-row traces file), and is no faster here.
                batches = fragment.to_batches(columns=columns, batch_size=batch_rows, use_threads=True,
                                              batch_readahead=2, fragment_readahead=1,
                                              fragment_scan_options=ds.ParquetFragmentScanOptions(
                                                  pre_buffer=False, page_checksum_verification=True))
                for batch in batches:
                    yield file, row, at, batch
                    row += batch.num_rows
                    at += batch.num_rows
            except (OSError, ValueError) as exc:
                raise InputError(file, None, None, f"not a readable Parquet file: {exc}") from None
        if digest is not None:
            digest.add(file, str(held.sha256))


def _required_present(schema: Any, file: str, required: Iterable[str]) -> None:
    for name in required:
        if schema.get_field_index(name) < 0:
            raise InputError(file, None, name, "missing column")


def iter_trace_blocks(
    path: str | os.PathLike[str],
    columns: Sequence[str] | None = None,
    *,
    any_level: bool = False,
    batch_rows: int = BATCH_ROWS,
    as_lists: bool = True,
    digest: DatasetDigest | None = None,
) -> Iterator[Block]:
    """Checked trace columns, a batch at a time. `columns` chooses which to read (default
    all the DecisionTrace columns there are); the required ones must be present in every
    file whether read or not, and those read are checked value by value.
    `as_lists=False`: the columns of Python values (`t`, `stream`, `id`, the texts and
    `input_repairs`) come as their checked Arrow arrays, not as lists: no Python object
    per row. `digest`: gets the SHA-256 of the very bytes read (see _iter_batches)."""
    want = tuple(TRACE_COLUMNS if columns is None else columns)
    unknown = [c for c in want if c not in TRACE_COLUMNS]
    if unknown:
        raise ValueError(f"unknown trace columns {unknown}")

    def choose(schema: Any, file: str) -> list[str]:
        _required_present(schema, file, REQUIRED_COLUMNS)
        return [c for c in want if schema.get_field_index(c) >= 0]

    for file, first_row, first_index, batch in _iter_batches(path, choose, batch_rows, digest):
        b = _Batch(batch, file, first_row)
        cols: dict[str, Any] = {}
        for name in batch.schema.names:
            cols[name] = _trace_column(b, name, batch.column(batch.schema.get_field_index(name)), any_level,
                                       as_lists)
        b.raise_first()
        if "chaos" in want and "chaos" not in cols:
            cols["chaos"] = np.zeros(b.n, dtype=bool)
        if "state" in cols:
            cols["state"], cols["has_state"] = cols["state"]
        rows = np.arange(first_row + 1, first_row + 1 + b.n, dtype=np.int64)
        yield Block(file, rows, np.arange(first_index, first_index + b.n, dtype=np.int64), cols)


def _trace_column(b: _Batch, name: str, arr: Any, any_level: bool, as_lists: bool = True) -> Any:
    if name == "t":
        return _t(b, arr, as_list=as_lists)
    if name in _FLOAT_COLUMNS:
        return _floats(b, arr, name, nullable=arrow_nullable(FIELDS[name]), unit=name in _UNIT_COLUMNS)
    if name in _BOOL_COLUMNS:
        return _bools(b, arr, name)
    if name == "level":
        return _level(b, arr, any_level=any_level)
    if name in ("raw_action", "final_action"):
        return _action(b, arr, name)
    if name in _KEY_COLUMNS:
        return _keys(b, arr, name, as_list=as_lists)
    if name in _TEXT_COLUMNS:
        return _texts(b, arr, name, as_list=as_lists)
    if name == "state":
        return _state(b, arr)
    if name == "input_repairs":
        return _repairs(b, arr, as_list=as_lists)
    raise AssertionError(name)


def trace_chunks(path: str | os.PathLike[str], *, any_level: bool = False,
                 batch_rows: int = BATCH_ROWS) -> Iterator[Any]:
    """The records of a traces Parquet file or folder as TraceChunks; `line` holds each
    record's 1-based position in the whole data set."""
    from .traces import TraceChunk

    for block in iter_trace_blocks(path, any_level=any_level, batch_rows=batch_rows):
        c = block.columns
        yield TraceChunk(line=block.index + 1, **{name: c.get(name) for name in (*TRACE_COLUMNS, "has_state")})


def chunk_records(chunk: Any, columns: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The records of a TraceChunk as dicts in the JSONL writer's key order: a null delta
    or confidence is written as null, `stream` and `id` are kept where the column is, and
    every other optional field only where the record has it."""
    wanted = present_columns(chunk) if columns is None else tuple(columns)
    n = len(chunk)
    lists: dict[str, list[Any]] = {}
    for name in wanted:
        value = getattr(chunk, name, None)
        if value is None:
            continue
        if name == "state":
            rows = np.asarray(chunk.state).tolist()
            lists[name] = [dict(zip(STATE_FIELDS, r, strict=True)) if h else None
                           for r, h in zip(rows, chunk.has_state.tolist(), strict=True)]
        elif isinstance(value, np.ndarray):
            plain = value.tolist()
            if value.dtype.kind == "f":
                plain = _nan_as_none(plain, value)
            lists[name] = plain
        else:
            lists[name] = list(value)
    keep_null = {f.name for f in TRACE_SCHEMA if f.nullable}
    names = list(lists)
    records = []
    for i in range(n):
        record = {}
        for name in names:
            v = lists[name][i]
            if v is not None or name in keep_null:
                record[name] = v
        records.append(record)
    return records


def _nan_as_none(plain: list[Any], values: np.ndarray) -> list[Any]:
    null = np.isnan(values)
    if values.ndim != 1 or not null.any():
        return plain
    return [None if m else v for v, m in zip(plain, null.tolist(), strict=True)]


def read_trace_records(path: str | os.PathLike[str], keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every record of a traces Parquet file or folder as a dict, checked (only `keys`)."""
    wanted = None if keys is None else tuple(keys)
    out: list[dict[str, Any]] = []
    for chunk in trace_chunks(path):
        records = chunk_records(chunk)
        if wanted is not None:
            records = [{k: r[k] for k in wanted if k in r} for r in records]
        out.extend(records)
    return out


_PREALLOCATE_ROWS = 1 << 25  # 33.5M states, 2.4 GB


def read_trace_states(path: str | os.PathLike[str], *, keys: bool = True, spill: bool = False,
                      digest: DatasetDigest | None = None) -> Any:
    """The states a traces Parquet file or folder carries (see traces.read_trace_states).

    Every column of every record is read and checked, as for JSONL (a bad `level` or
    `cus` refuses the file as it refuses it for `metrics`), without a Python object per
    row but the states' stream, t and id. `keys=False`: the states' t and id are checked
    but not kept (None each): at millions of rows they take more memory than the states'
    values. trace_keys reads them back for the rows that need them.
    `spill=True`: the states' values are written to a temporary file as they are read, and
    mapped from it (spill.RowSpill), not held in memory. `digest`: gets the SHA-256 of the
    very bytes read (a DatasetDigest)."""
    if spill:
        found, values = spilled(len(STATE_FIELDS), lambda sink: _read_trace_states(path, keys, sink, digest))
        return dataclasses.replace(found, states=dataclasses.replace(found.states, values=values))
    return _read_trace_states(path, keys, None, digest)


def _read_trace_states(path: str | os.PathLike[str], keys: bool, sink: RowSpill | None,
                       digest: DatasetDigest | None) -> Any:
    """read_trace_states, the values written to `sink` when given (then not in the result)."""
    streams, ids, times, rows = [], [], [], []
    labels: dict[tuple[type, Any], Any] = {}
    n_records = missing = 0
    first_missing = None
    # Filled in place, sized by the row count the files' footers give (no second copy of the
    # states); a footer is not trusted for more than _PREALLOCATE_ROWS, nor the rows read to
    # match it: the matrix grows if more come.
    matrix = np.empty((0 if sink is not None else min(max(count_rows(path), 0), _PREALLOCATE_ROWS),
                       len(STATE_FIELDS)))
    filled = 0
    for block in iter_trace_blocks(path, as_lists=False, digest=digest):
        c = block.columns
        n = len(block)
        has = c["has_state"] if "state" in c else np.zeros(n, dtype=bool)
        k = int(np.count_nonzero(has))
        if k < n:
            missing += n - k
            if first_missing is None:
                first_missing = int(block.index[np.argmin(has)]) + 1
        if "state" in c and sink is not None:
            sink.add(c["state"][has])
            filled += k
        elif "state" in c:
            if filled + k > matrix.shape[0]:
                grown = np.empty((max(filled + k, matrix.shape[0] * 3 // 2), len(STATE_FIELDS)))
                grown[:filled] = matrix[:filled]
                matrix = grown
            matrix[filled:filled + k] = c["state"][has]
            filled += k
        keep = range(n) if k == n else np.flatnonzero(has).tolist()
        rows.append(block.index[has] + 1)
        column = c.get("stream")
        if column is None:
            streams.extend([None] * len(keep))
        else:  # each distinct label made once, then handed out by index
            streams.extend(_shared_labels(column, labels, None if k == n else has))
        if keys:
            column = c.get("id")
            if column is None:
                ids.extend([None] * len(keep))
            else:
                ids.extend(_kept(column.to_pylist(), keep, k == n))
            times.extend(_kept(c["t"].to_pylist(), keep, k == n))
        n_records += n
    if sink is None:
        matrix = matrix[:filled] if filled == matrix.shape[0] else matrix[:filled].copy()
    else:  # the caller maps the rows written
        matrix = np.empty((filled, 0))
    lines = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    _release_batches()
    from .traces import TraceStates

    if not keys:
        times, ids = Nones(len(matrix)), Nones(len(matrix))
    return TraceStates(StateSet(matrix, streams, times, ids), n_records, missing, first_missing, lines)


def _kept(values: list[Any], keep: Iterable[int], every: bool) -> list[Any]:
    return values if every else [values[i] for i in keep]


def _shared_labels(column: Any, labels: dict[tuple[type, Any], Any], has: np.ndarray | None) -> list[Any]:
    """The labels of an Arrow `stream` column (at the rows `has`, or all), one object per
    distinct label in `labels` (keyed by type and value: "1" and 1 differ), None where null:
    what the list path gives, without a Python object made per row."""
    pa = _pa()
    if pa.types.is_null(column.type):
        n = len(column) if has is None else int(np.count_nonzero(has))
        return [None] * n
    encoded = column.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    shared = np.empty(len(distinct) + 1, dtype=object)  # the last one: None, for nulls
    for i, value in enumerate(distinct):
        shared[i] = labels.setdefault((type(value), value), value)
    index = encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
    return shared[index if has is None else index[has]].tolist()


def trace_keys(path: str | os.PathLike[str], rows: np.ndarray, *,
               digest: DatasetDigest | None = None) -> tuple[list[Any], list[Any]]:
    """The t and id of the records at these row positions (0-based, across the data set's
    files in order, ascending), each checked as read_trace_states checks it. `digest`: gets
    the SHA-256 of the very bytes read."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0):
        raise ValueError("rows: expected ascending, distinct positions >= 0")
    times: list[Any] = []
    ids: list[Any] = []
    for block in iter_trace_blocks(path, ("t", "id"), digest=digest):
        first, stop = int(block.index[0]) if len(block) else 0, int(block.index[-1]) + 1 if len(block) else 0
        lo, hi = np.searchsorted(rows, [first, stop])
        if lo == hi:
            continue
        where = (rows[lo:hi] - first).tolist()
        t_values, column = block.columns["t"], block.columns.get("id")
        times.extend(t_values[i] for i in where)
        ids.extend(None if column is None else column[i] for i in where)
    _release_batches()
    if len(times) != rows.size:
        raise ValueError(f"rows: {rows.size} asked for, {len(times)} in the data set")
    return times, ids


def _release_batches() -> None:
    """Hand the memory Arrow kept for the batches read back to the system (a whole data
    set's worth: hundreds of MB at millions of rows), once the states are copied out."""
    _pa().default_memory_pool().release_unused()


def write_traces(path: str | os.PathLike[str], cols: Any, states: StateSet, *, config_id: str, model: str,
                 chaos: bool) -> None:
    """The engine's decisions (TraceColumns on `states`) as a traces Parquet file."""
    n = len(cols)
    if len(states) != n:
        raise ValueError(f"{n} decisions but {len(states)} states")
    write_decided(path, lambda: [(slice(0, n), cols)], states, config_id=config_id, model=model, chaos=chaos)


def write_decided(path: str | os.PathLike[str], decided: Callable[[], Iterable[tuple[slice, Any]]],
                  states: StateSet, *, config_id: str, model: str, chaos: bool) -> None:
    """The engine's decisions as a traces Parquet file, taken slice by slice: `decided()`
    gives consecutive slices of `states` from the first, each with its TraceColumns. The
    file is the same bytes however the decisions are sliced, as long as every slice but
    the last is a whole number of row groups. `decided` is called again when a later
    slice needs a wider layout than the first."""
    from .traces import TraceChunk, decided_columns

    def chunks() -> Iterator[Any]:
        at = 0
        for whole, cols in decided():
            if len(cols) != whole.stop - whole.start:
                raise ValueError(f"{len(cols)} decisions for the {whole.stop - whole.start} states {whole}")
            if whole.start != at or whole.start % ROW_GROUP_ROWS:
                raise ValueError(f"slice {whole} does not begin the row group of {ROW_GROUP_ROWS} rows at {at}")
            at = whole.stop
            for start in range(0, max(len(cols), 1), ROW_GROUP_ROWS):
                part = slice(start, min(start + ROW_GROUP_ROWS, len(cols)))
                k = part.stop - part.start
                c = decided_columns(cols, states, part, config_id=config_id, model=model, chaos=chaos,
                                    at=whole.start)
                yield TraceChunk(line=np.arange(part.start, part.stop) + whole.start + 1,
                                 has_state=np.ones(k, dtype=bool), **c)
        if at != len(states):
            raise ValueError(f"decisions for the first {at} of {len(states)} states only")

    write_trace_chunks(path, chunks, source=os.fspath(path))


def count_rows(path: str | os.PathLike[str]) -> int:
    return sum(_open(f).metadata.num_rows for f in parquet_files(path))


def read_states(
    path: str | os.PathLike[str],
    *,
    fill_missing: bool = False,
    clip: bool = False,
    allow_expect_level: bool = False,
    check_values: Callable[..., tuple[np.ndarray, list[dict[str, str] | None] | None]],
    spill: bool = False,
    digest: DatasetDigest | None = None,
    int64: bool = False,
) -> StateSet:
    """All states of a Parquet states file or folder, checked like a states JSONL file.

    `check_values(values, filled, where)` is the states reader's own check of the nine
    fields (ranges, fill and clip), so that both forms follow one rule. `spill=True`: the
    values are kept in a temporary file as they are read (spill.RowSpill), not in memory.
    `digest`: gets the SHA-256 of the very bytes read (a DatasetDigest). `int64`: an
    integer stream, t or id beyond 64 bits (a uint64 column's) is refused, as it cannot
    be written to Parquet again (as traces or states)."""
    if not spill:
        return _read_states(path, fill_missing, allow_expect_level, check_values, None, digest, int64)
    found, values = spilled(len(STATE_FIELDS), lambda sink: _read_states(path, fill_missing, allow_expect_level,
                                                                         check_values, sink, digest, int64))
    return dataclasses.replace(found, values=values)


def _read_states(path: str | os.PathLike[str], fill_missing: bool, allow_expect_level: bool,
                 check_values: Callable[..., Any], sink: RowSpill | None, digest: DatasetDigest | None,
                 int64: bool) -> StateSet:
    """read_states, the values written to `sink` when given (then not in the result)."""
    known = set(STATE_FIELDS) | set(STATE_EXTRA_COLUMNS)

    def choose(schema: Any, file: str) -> list[str]:
        for name in schema.names:
            if name not in known:
                raise InputError(file, None, name, "unknown field")
            if name == "expect_level_min" and not allow_expect_level:
                raise InputError(file, None, name, "allowed only in regression files")
        if not fill_missing:
            _required_present(schema, file, STATE_FIELDS)
        return list(schema.names)

    values_parts, streams, times, ids, expect, repairs_parts = [], [], [], [], [], []
    any_repair = False
    n_rows = 0
    for file, first_row, _first_index, batch in _iter_batches(path, choose, BATCH_ROWS, digest):
        b = _Batch(batch, file, first_row)
        values = np.full((b.n, len(STATE_FIELDS)), np.nan)
        filled = np.zeros((b.n, len(STATE_FIELDS)), dtype=bool)
        for j, name in enumerate(STATE_FIELDS):
            arr = b.column(name)
            if arr is None:
                filled[:, j] = True
                continue
            values[:, j] = _floats(b, arr, name, nullable=fill_missing, unit=False)
            filled[:, j] = _nulls(arr) if fill_missing else False
        arr = b.column("t")
        if arr is not None:
            t_values = _t(b, arr, nullable=True)
        else:
            t_values = [None] * b.n
        stream = b.column("stream")
        sid = b.column("id")
        level = b.column("expect_level_min")
        b.raise_first()
        stream_values = [None] * b.n if stream is None else _keys(b, stream, "stream")
        id_values = [None] * b.n if sid is None else _keys(b, sid, "id")
        if level is not None:
            level_values = _level(b, level, any_level=False) if _pa().types.is_integer(level.type) else None
            if level_values is None:
                b.type_problem(level, "expect_level_min", "integers")
        else:
            level_values = np.zeros(b.n, dtype=np.int8)
        if int64:
            for name, column in (("stream", stream_values), ("t", t_values), ("id", id_values)):
                found = first_unwritable(column)
                if found is not None:
                    b.note_at(found[0], name, found[1], column[found[0]])
        b.raise_first()
        first = first_row

        def where(i: int, file: str = file, first: int = first) -> tuple[str, int | None]:
            return f"{file} row {first + i + 1}", None

        checked, repairs = check_values(values, filled, where)
        if sink is None:
            values_parts.append(checked)
        else:
            sink.add(checked)
        n_rows += len(checked)
        repairs_parts.append(repairs if repairs is not None else [None] * b.n)
        any_repair |= repairs is not None
        streams.extend(stream_values)
        ids.extend(id_values)
        times.extend(t_values)
        expect.append(level_values)
    n = n_rows
    if not n:
        raise InputError(os.fspath(path), None, None, "no states in the file")
    if all(t is None for t in times):
        times = [None] * n
    _release_batches()
    return StateSet(
        values=np.concatenate(values_parts) if sink is None else np.empty((n, 0)),
        streams=streams,
        t=times,
        ids=ids,
        repairs=[r for part in repairs_parts for r in part] if any_repair else None,
        expect_level_min=np.concatenate(expect) if allow_expect_level else None,
    )


# ---------------------------------------------------------------------------- writing


_MIXED = "mixes strings and integers; a Parquet column holds one type (make them all strings or all integers)"
_BEYOND_64_BITS = "an integer beyond 64 bits cannot be written to Parquet; write JSONL"
_BEYOND_FLOAT = ("an integer beyond 2**53 cannot be written exactly into a float64 column (another record's t is "
                 "a float); write JSONL")
_INT64 = range(-(1 << 63), 1 << 63)  # `in` a range: a constant-time test of an int
_FLOAT_EXACT = range(-(1 << 53), (1 << 53) + 1)  # the integers Arrow writes into float64 as they are


def first_unwritable(values: Iterable[Any], *, floats: bool = False) -> tuple[int, str] | None:
    """The position of the first integer of a `t`, `stream` or `id` column that Parquet
    cannot hold exactly, and why: beyond 64 bits, or (`floats`: the column is float64, as
    `t` is when any record's t is a float) beyond 2**53. None when every one fits (JSONL
    holds integers of any size)."""
    fits = _FLOAT_EXACT if floats else _INT64
    i = next((i for i, v in enumerate(values) if type(v) is int and v not in fits), None)
    return None if i is None else (i, _BEYOND_FLOAT if floats else _BEYOND_64_BITS)


def _exact_array(values: Sequence[Any], kind: Any, name: str, where: Callable[[int], tuple[str, int | None]]) -> Any:
    """`values` of `t`, `stream` or `id` as an Arrow array of `kind`, each exactly; an
    integer the column cannot hold is an InputError at `where(i)`, not Arrow's overflow."""
    pa = _pa()
    try:
        return pa.array(values, type=kind)
    except (OverflowError, pa.ArrowInvalid):
        found = first_unwritable(values, floats=kind == pa.float64())
        if found is None:
            raise
    i, problem = found
    raise InputError(*where(i), name, problem, values[i])


class _KeyConflict(Exception):
    """A `stream` or `id` column would need both strings and integers."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _first_of_other_type(values: Sequence[Any], kind: type | None) -> int:
    """The position of the first value whose type differs from `kind` (or from the first)."""
    for i, v in enumerate(values):
        if v is None:
            continue
        if kind is None:
            kind = type(v)
        elif type(v) is not kind:
            return i
    return 0


def _key_type(values: Iterable[Any], name: str) -> Any:
    """The Arrow type of a `stream` or `id` column: integers, strings, or nothing at all."""
    pa = _pa()
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pa.null()
    if kinds == {int}:
        return pa.int64()
    if kinds == {str}:
        return pa.string()
    raise _KeyConflict(name)


def _t_type(values: Iterable[Any]) -> Any:
    pa = _pa()
    kinds = {type(v) for v in values if v is not None}
    return pa.int64() if kinds <= {int} else pa.float64()


@dataclass(frozen=True)
class TraceLayout:
    """Which optional columns a traces Parquet file has, and the types of those that vary."""

    columns: tuple[str, ...]
    t: Any
    stream: Any
    id: Any

    def schema(self) -> Any:
        pa = _pa()
        varying = {"t": self.t, "stream": self.stream, "id": self.id}
        fields = []
        for name in self.columns:
            f = FIELDS[name]
            kind = varying[name] if name in varying else arrow_type(f)
            fields.append(pa.field(name, kind, nullable=arrow_nullable(f)))
        return pa.schema(fields)

    def widen(self, other: TraceLayout) -> TraceLayout:
        """The layout that holds both, or an InputError for a column whose types conflict."""
        pa = _pa()
        columns = tuple(c for c in TRACE_COLUMNS if c in self.columns or c in other.columns)
        t = pa.float64() if pa.float64() in (self.t, other.t) else pa.int64()
        keys = []
        for name, a, b in (("stream", self.stream, other.stream), ("id", self.id, other.id)):
            if pa.types.is_null(a) or a == b:
                keys.append(b)
            elif pa.types.is_null(b):
                keys.append(a)
            else:
                raise _KeyConflict(name)
        return TraceLayout(columns, t, keys[0], keys[1])


def trace_layout(chunk: Any) -> TraceLayout:
    """The layout of a TraceChunk (the optional columns it has values for), with one type
    per varying column (a stream or id column of mixed types cannot be a Parquet column)."""
    return TraceLayout(present_columns(chunk), _t_type(chunk.t),
                       _key_type(chunk.stream or (), "stream"), _key_type(chunk.id or (), "id"))


def present_columns(chunk: Any) -> tuple[str, ...]:
    """The columns a TraceChunk has values for: the required ones, and each optional one
    that some record has."""
    present = []
    for name in TRACE_COLUMNS:
        value = getattr(chunk, name, None)
        if FIELDS[name].required:
            present.append(name)
        elif value is not None and (not isinstance(value, list) or name in _KEY_COLUMNS
                                    or any(v is not None for v in value)):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and np.isnan(value).all():
                continue
            present.append(name)
    return tuple(present)


def _float_array(values: np.ndarray) -> Any:
    pa = _pa()
    values = np.asarray(values, dtype=np.float64)
    null = np.isnan(values)
    return pa.array(values, type=pa.float64(), mask=null if null.any() else None)


def trace_batch(chunk: Any, layout: TraceLayout, source: str = "traces") -> Any:
    """A TraceChunk as an Arrow record batch of `layout` (NaN written as null). `source`
    names the records in messages (an integer `t`, `stream` or `id` the column cannot
    hold), with each one's `line`."""
    pa = _pa()
    schema = layout.schema()
    n = len(chunk)
    arrays = []

    def where(i: int) -> tuple[str, int | None]:
        return source, int(chunk.line[i])

    for field in schema:
        name = field.name
        value = getattr(chunk, name, None)
        if name in ("t", *_KEY_COLUMNS):
            arr = _exact_array(value if value is not None else [None] * n, field.type, name, where)
        elif name in _FLOAT_COLUMNS:
            arr = _float_array(value) if value is not None else pa.nulls(n, pa.float64())
        elif name in _BOOL_COLUMNS:
            arr = pa.array(np.asarray(value, dtype=bool))
        elif name == "level":
            arr = pa.array(np.asarray(value, dtype=np.int8))
        elif name in ("raw_action", "final_action"):
            flat = pa.array(np.ascontiguousarray(value, dtype=np.float64).ravel())
            arr = pa.FixedSizeListArray.from_arrays(flat, ACTION_SIZE)
        elif name == "state":
            has = chunk.has_state if chunk.has_state is not None else np.zeros(n, dtype=bool)
            values = np.nan_to_num(chunk.state) if chunk.state is not None else np.zeros((n, len(STATE_FIELDS)))
            children = [pa.array(values[:, j]) for j in range(len(STATE_FIELDS))]
            arr = pa.StructArray.from_arrays(children, fields=list(field.type),
                                             mask=pa.array(~has) if not has.all() else None)
        elif name == "input_repairs":
            rows = value if value is not None else [None] * n
            arr = pa.array([None if r is None else list(r.items()) for r in rows], type=field.type)
        else:  # model, reason, config_id
            arr = pa.array(value if value is not None else [None] * n, type=field.type)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass
class _Rows:
    """Record batches cut into row groups of exactly ROW_GROUP_ROWS rows (the last shorter),
    so that the same rows give the same file however they arrived."""

    pending: list[Any]
    size: int = 0

    def add(self, batch: Any) -> Iterator[Any]:
        pa = _pa()
        self.pending.append(batch)
        self.size += batch.num_rows
        while self.size >= ROW_GROUP_ROWS:
            table = pa.Table.from_batches(self.pending).combine_chunks()
            yield table.slice(0, ROW_GROUP_ROWS)
            rest = table.slice(ROW_GROUP_ROWS)
            self.pending = rest.to_batches() if rest.num_rows else []
            self.size = rest.num_rows

    def finish(self) -> Iterator[Any]:
        if self.size:
            yield _pa().Table.from_batches(self.pending).combine_chunks()


def write_batches(path: str | os.PathLike[str], schema: Any, batches: Iterable[Any]) -> None:
    """Write record batches to a Parquet file atomically: a temporary file beside it,
    renamed into place only when everything was written."""
    import pyarrow.parquet as pq

    target = file_target(path)
    if target.is_dir():
        raise InputError(str(path), None, None, "is a folder; give a .parquet file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target)
    try:
        with pq.ParquetWriter(temp, schema, compression=_COMPRESSION, write_statistics=True,
                              write_page_checksum=True) as writer:
            rows = _Rows([])
            for batch in batches:
                for table in rows.add(batch):
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            for table in rows.finish():
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_trace_chunks(path: str | os.PathLike[str], chunks: Callable[[], Iterable[Any]],
                       source: str = "traces") -> None:
    """Write TraceChunks as a traces Parquet file. `chunks` is called again when a later
    chunk needs a wider layout than the first (another optional column, float times).
    `source` names the input in messages (a `stream` or `id` of two types)."""
    layout: TraceLayout | None = None
    while True:
        try:
            _write_with_layout(path, chunks, layout, source)
            return
        except _WiderLayout as wider:
            layout = wider.layout


class _WiderLayout(Exception):
    def __init__(self, layout: TraceLayout) -> None:
        self.layout = layout


def _write_with_layout(path: str | os.PathLike[str], chunks: Callable[[], Iterable[Any]],
                       layout: TraceLayout | None, source: str) -> None:
    given = iter(chunks())
    first = next(given, None)
    if first is None:
        raise InputError(source, None, None, "no records to write")
    layout = _layout_of(first, layout, source)

    def batches() -> Iterator[Any]:
        for chunk in _chain_first(first, given):
            needed = _layout_of(chunk, layout, source)
            if needed != layout:
                raise _WiderLayout(needed)
            yield trace_batch(chunk, layout, source)

    write_batches(path, layout.schema(), batches())


def _layout_of(chunk: Any, before: TraceLayout | None, source: str) -> TraceLayout:
    """The layout that holds `before` and `chunk`; a key of two types names its first record."""
    pa = _pa()
    try:
        own = trace_layout(chunk)
        return own if before is None else before.widen(own)
    except _KeyConflict as conflict:
        values = getattr(chunk, conflict.name) or []
        kind = None if before is None else {pa.int64(): int, pa.string(): str}.get(getattr(before, conflict.name))
        line = int(chunk.line[_first_of_other_type(values, kind)])
        raise InputError(source, line, conflict.name, _MIXED, values[_first_of_other_type(values, kind)]) from None


def _chain_first(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def write_states(path: str | os.PathLike[str], states: StateSet, *, with_expect_level: bool = False) -> None:
    """A StateSet as a states Parquet file: the nine fields, then stream, t, id where any
    state has them (and expect_level_min for a regression suite). A value no Parquet
    column can hold is an InputError naming the state (`state I`, 0-based); a reader
    asked for integers of 64 bits (states.read_states) names its line instead."""
    pa = _pa()
    arrays = [pa.array(states.values[:, j]) for j in range(len(STATE_FIELDS))]
    fields = [pa.field(f, pa.float64(), nullable=False) for f in STATE_FIELDS]
    try:
        key_types = _key_type(states.streams, "stream"), _key_type(states.ids, "id")
    except _KeyConflict as conflict:
        values = states.streams if conflict.name == "stream" else states.ids
        i = _first_of_other_type(values, None)
        raise InputError(f"state {i}", None, conflict.name, _MIXED, values[i]) from None
    for name, values, kind in (("stream", states.streams, key_types[0]),
                               ("t", states.t, _t_type(states.t)),
                               ("id", states.ids, key_types[1])):
        if any(v is not None for v in values):
            arrays.append(_exact_array(values, kind, name, lambda i: (f"state {i}", None)))
            fields.append(pa.field(name, kind))
    if with_expect_level and states.expect_level_min is not None:
        arrays.append(pa.array(np.asarray(states.expect_level_min, dtype=np.int8)))
        fields.append(pa.field("expect_level_min", pa.int8(), nullable=False))
    schema = pa.schema(fields)
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    write_batches(path, schema, [batch])


__all__ = [
    "Block",
    "PARQUET_SUFFIX",
    "REQUIRED_COLUMNS",
    "TRACE_COLUMNS",
    "TraceLayout",
    "count_rows",
    "file_schema",
    "is_parquet",
    "iter_trace_blocks",
    "parquet_files",
    "chunk_records",
    "read_states",
    "read_trace_records",
    "read_trace_states",
    "trace_keys",
    "trace_batch",
    "trace_chunks",
    "trace_layout",
    "write_batches",
    "write_states",
    "write_trace_chunks",
    "write_traces",
]

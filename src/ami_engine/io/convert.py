"""`ami-engine convert`: states and DecisionTraces between JSONL (`.jsonl`, `.jsonl.gz`) and
Parquet (a `.parquet` file, or a folder of them to read), each direction by extension.

Whether a file holds states or traces is read from it: traces have a `final_action`.
Traces are streamed chunk by chunk, so a file of any length converts in bounded memory;
states are read whole, as every command reads them. Both are checked as strictly as any
reader checks them, and nothing is written when a record is bad. The DecisionTrace
fields (docs/formats.md) are kept; other fields of foreign traces are not carried over.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from ..errors import InputError
from . import parquet
from ._atomic import atomic_output, overwrites_input
from ._open import display_name, open_binary

STATES, TRACES = "states", "traces"


@dataclass(frozen=True)
class Converted:
    kind: str  # "states" or "traces"
    records: int
    target: str


def kind_of(path: str | os.PathLike[str]) -> str:
    """`traces` when the data has `final_action`, else `states`."""
    if parquet.is_parquet(path):
        return TRACES if "final_action" in parquet.file_schema(path).names else STATES
    with open_binary(path) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except ValueError as exc:
                raise InputError(display_name(path), number, None, f"invalid JSON: {exc}") from None
            return TRACES if isinstance(first, dict) and "final_action" in first else STATES
    raise InputError(display_name(path), None, None, "no records in the file")


def convert(source: str, target: str) -> Converted:
    """Convert `source` into `target`; the format of each is told by its name."""
    if overwrites_input(target, {"source": source}) is not None:
        raise InputError(target, None, None, "is the file being converted (or inside it); give another output")
    if target == "-" and parquet.is_parquet(target):
        raise InputError(target, None, None, "Parquet cannot be written to stdout")
    with _seekable(source) as readable:
        kind = kind_of(readable)
        if kind == TRACES:
            n = _convert_traces(readable, target)
        else:
            n = _convert_states(readable, target)
    return Converted(kind, n, target)


@contextmanager
def _seekable(source: str) -> Iterator[str]:
    """A path that can be read more than once (stdin is copied to a temporary file)."""
    if source != "-":
        yield source
        return
    handle, name = tempfile.mkstemp(prefix="ami-engine-stdin.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out)
        yield name
    finally:
        Path(name).unlink(missing_ok=True)


def _writes_parquet(target: str) -> bool:
    return target != "-" and target.lower().endswith(parquet.PARQUET_SUFFIX)


def _convert_traces(source: str, target: str) -> int:
    from .traces import iter_trace_chunks

    count = 0

    def chunks() -> Iterator[object]:
        nonlocal count
        count = 0
        for chunk in iter_trace_chunks(source):
            count += len(chunk)
            yield chunk

    if _writes_parquet(target):
        parquet.write_trace_chunks(target, chunks, source=display_name(source))
    else:
        encoder = msgspec.json.Encoder()
        with atomic_output(target) as out:
            for chunk in chunks():
                out.write(encoder.encode_lines(parquet.chunk_records(chunk)))
            if count == 0:
                raise InputError(display_name(source), None, None, "no traces in the file")
    return count


def _convert_states(source: str, target: str) -> int:
    from .states import encode_states, read_states

    states = read_states(source, allow_expect_level=True, int64=_writes_parquet(target))
    expect = states.expect_level_min
    regression = expect is not None and bool(np.any(expect))
    if _writes_parquet(target):
        parquet.write_states(target, states, with_expect_level=regression)
        return len(states)
    with atomic_output(target) as out:
        if not regression:
            for chunk in encode_states(states):
                out.write(chunk)
        else:
            plain = msgspec.json.Decoder()
            encoder = msgspec.json.Encoder()
            records = [r for chunk in encode_states(states) for r in plain.decode_lines(chunk)]
            for record, level in zip(records, expect.tolist(), strict=True):
                record["expect_level_min"] = level
            out.write(encoder.encode_lines(records))
    return len(states)


__all__ = ["Converted", "convert", "kind_of"]

"""The file formats of docs/formats.md: states, DecisionTraces, history, in JSONL or Parquet.

Readers are strict (a bad record is an InputError naming file, line and field) and
writers deterministic (the same records give the same bytes), every output atomic.
The names below are the io layer's public ones; they load on first use, so that importing
one format does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module of this package that defines it
_PUBLIC: dict[str, str] = {
    "InputError": "ami_engine.errors",
    "STATE_FIELDS": ".stateset",
    "StateSet": ".stateset",
    "read_states": ".states",
    "states_from_records": ".states",
    "write_states": ".states",
    "TraceChunk": ".traces",
    "TraceColumns": ".traces",
    "TraceRecord": ".traces",
    "TraceStates": ".traces",
    "encode_traces": ".traces",
    "iter_trace_chunks": ".traces",
    "read_trace_records": ".traces",
    "read_trace_states": ".traces",
    "read_traces": ".traces",
    "write_traces": ".traces",
    "TRACE_SCHEMA": "._trace_schema",
    "TraceField": "._trace_schema",
    "read_history": ".history",
    "is_parquet": ".parquet",
    "InMemoryFile": "._open",
    "open_binary": "._open",
    "read_once": "._open",
    "atomic_output": "._atomic",
    "write_outputs": "._atomic",
    "keep_freed_memory": "._blocks",
}

if TYPE_CHECKING:
    from ..errors import InputError
    from ._atomic import atomic_output, write_outputs
    from ._blocks import keep_freed_memory
    from ._open import InMemoryFile, open_binary, read_once
    from ._trace_schema import TRACE_SCHEMA, TraceField
    from .history import read_history
    from .parquet import is_parquet
    from .states import read_states, states_from_records, write_states
    from .stateset import STATE_FIELDS, StateSet
    from .traces import (
        TraceChunk,
        TraceColumns,
        TraceRecord,
        TraceStates,
        encode_traces,
        iter_trace_chunks,
        read_trace_records,
        read_trace_states,
        read_traces,
        write_traces,
    )


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "InMemoryFile",
    "InputError",
    "STATE_FIELDS",
    "StateSet",
    "TRACE_SCHEMA",
    "TraceChunk",
    "TraceColumns",
    "TraceField",
    "TraceRecord",
    "TraceStates",
    "atomic_output",
    "encode_traces",
    "is_parquet",
    "iter_trace_chunks",
    "keep_freed_memory",
    "open_binary",
    "read_history",
    "read_once",
    "read_states",
    "read_trace_records",
    "read_trace_states",
    "read_traces",
    "states_from_records",
    "write_outputs",
    "write_states",
    "write_traces",
]

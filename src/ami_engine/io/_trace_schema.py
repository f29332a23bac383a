"""The DecisionTrace record (docs/formats.md), field by field: the one place that says
which fields a trace has, in which order they are written, what each holds, which may be
null and which a reader requires.

The JSONL writer's key order, the strict JSONL reader's record types, the column reader,
the required-field list and the Parquet schema are all read from TRACE_SCHEMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from .stateset import STATE_FIELDS

# Rules that set a decision's level (docs/engine.md §8-10), in the order of their codes:
# the values of the `reason` field.
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
ACTION_SIZE = 4
# What `input_repairs` may say was done to a state field.
REPAIRS: tuple[str, ...] = ("filled", "clipped", "dropped")

_REQUIRED = object()


@dataclass(frozen=True)
class TraceField:
    """One field of a trace record.

    `kind` says what it holds: "t" (a number, written as given), "unit" (a number in
    [0, 1]), "number", "action" (ACTION_SIZE numbers), "bool", "level" (0, 1 or 2),
    "text", "key" (a string, an integer or null), "state" (the nine state fields) or
    "repairs" (state field -> one of REPAIRS). `nullable`: null is one of its values.
    `required`: a Phase 4.7.1 field, which a reader needs (unless `absent_means` says
    what its absence stands for). `always_written`: the writer puts it in every record
    (else only where it has a value).
    """

    name: str
    kind: str
    required: bool = False
    nullable: bool = False
    absent_means: Any = _REQUIRED
    always_written: bool = True

    @property
    def may_be_absent(self) -> bool:
        """A reader accepts a record without it."""
        return not self.required or self.absent_means is not _REQUIRED


def _req(name: str, kind: str, *, nullable: bool = False, absent_means: Any = _REQUIRED) -> TraceField:
    return TraceField(name, kind, required=True, nullable=nullable, absent_means=absent_means)


# In the writer's key order.
TRACE_SCHEMA: tuple[TraceField, ...] = (
    _req("t", "t"),
    _req("cus", "unit"),
    TraceField("cus_raw", "unit"),
    _req("delta_cus", "number", nullable=True),
    _req("cus_mean", "unit"),
    _req("raw_action", "action"),
    _req("final_action", "action"),
    _req("soft_clamp", "bool"),
    _req("level", "level"),
    # Null where the original engine found no action passing its filter and its fail-safe
    # did not fire; no metric reads it.
    _req("confidence", "unit", nullable=True),
    _req("delta_confidence", "number", nullable=True),
    _req("human_escalation", "bool"),
    _req("chaos", "bool", absent_means=False),
    TraceField("model", "text"),
    TraceField("reason", "text"),
    TraceField("W", "number"),
    TraceField("J", "number"),
    TraceField("H", "number"),
    TraceField("C", "number"),
    TraceField("stream", "key", nullable=True),
    TraceField("id", "key", nullable=True),
    TraceField("state", "state"),
    TraceField("config_id", "text"),
    TraceField("input_repairs", "repairs", always_written=False),
)
FIELDS: dict[str, TraceField] = {f.name: f for f in TRACE_SCHEMA}
FIELD_NAMES: tuple[str, ...] = tuple(FIELDS)

# The Phase 4.7.1 fields, in the key order; every one must be present when reading,
# except those of ABSENT_MEANS.
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in TRACE_SCHEMA if f.required)
ABSENT_MEANS: dict[str, Any] = {f.name: f.absent_means for f in TRACE_SCHEMA if f.required and f.may_be_absent}
# Columns a Parquet file of traces must have.
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in TRACE_SCHEMA if not f.may_be_absent)


def names_of(*kinds: str) -> frozenset[str]:
    """The fields of the given kinds."""
    return frozenset(f.name for f in TRACE_SCHEMA if f.kind in kinds)


# ------------------------------------------------------------------- JSONL: msgspec types

_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_Action = tuple[float, float, float, float]

# The nine fields and no other: a key the engine does not read is refused, as in a states
# file, not dropped on the way to a replay.
TraceState = msgspec.defstruct("TraceState", [(name, _Unit) for name in STATE_FIELDS], gc=False,
                               forbid_unknown_fields=True)

_READ_TYPES: dict[str, Any] = {
    "t": int | float,
    "unit": _Unit,
    "number": float,
    "action": _Action,
    "bool": bool,
    "level": Literal[0, 1, 2],
    "text": str,
    "key": str | int,
    "state": TraceState,
    "repairs": dict[str, Literal[REPAIRS]],  # type: ignore[valid-type]
}


def _read_type(f: TraceField) -> Any:
    kind = _READ_TYPES[f.kind]
    return kind | None if f.nullable else kind


def _required_spec(f: TraceField) -> tuple[Any, ...]:
    if f.absent_means is _REQUIRED:
        return (f.name, _read_type(f))
    return (f.name, _read_type(f), f.absent_means)


StateOut = msgspec.defstruct("StateOut", [(name, float) for name in STATE_FIELDS], gc=False)

_WRITE_TYPES: dict[str, Any] = {
    "t": Any,
    "unit": float,
    # NaN is written as null by msgspec: exactly what a missing delta means in a trace.
    "number": float,
    "action": list[float],
    "bool": bool,
    "level": int,
    "text": str,
    "key": Any,
    "state": Any,
    "repairs": dict[str, str],
}


def _write_spec(f: TraceField) -> tuple[Any, ...]:
    if f.always_written:
        return (f.name, _WRITE_TYPES[f.kind])
    return (f.name, _WRITE_TYPES[f.kind] | None, None)


def record_types() -> tuple[type[msgspec.Struct], type[msgspec.Struct], type[msgspec.Struct]]:
    """(required record, whole record, written record) as msgspec Structs.

    The required record holds the Phase 4.7.1 fields and skips every other key unread;
    the whole record adds this engine's fields, each optional (UNSET when absent); the
    written record has every field in the key order, those not always written omitted
    when None."""
    required = msgspec.defstruct(
        "RequiredTraceRecord", [_required_spec(f) for f in TRACE_SCHEMA if f.required], gc=False,
        module=__name__,
    )
    whole = msgspec.defstruct(
        "TraceRecord",
        [(f.name, _read_type(f) | UnsetType, UNSET) for f in TRACE_SCHEMA if not f.required],
        bases=(required,), gc=False, module=__name__,
    )
    written = msgspec.defstruct(
        "_TraceOut", [_write_spec(f) for f in TRACE_SCHEMA], omit_defaults=True, gc=False, module=__name__,
    )
    return required, whole, written


RequiredTraceRecord, TraceRecord, TraceOut = record_types()
RequiredTraceRecord.__doc__ = "The Phase 4.7.1 fields of a trace record; every other key is skipped unread."
TraceRecord.__doc__ = "A whole trace record: the required fields and those this engine adds, each optional."


# --------------------------------------------------------------------- Parquet: Arrow types


def arrow_type(f: TraceField) -> Any:
    """The Arrow type of a field's column; None for "t" and "key", whose type follows the
    values of the file (integers or floats; strings, integers or null)."""
    import pyarrow as pa

    types = {
        "unit": pa.float64(),
        "number": pa.float64(),
        "action": pa.list_(pa.float64(), ACTION_SIZE),
        "bool": pa.bool_(),
        "level": pa.int8(),
        "text": pa.string(),
        "state": pa.struct([pa.field(name, pa.float64(), nullable=False) for name in STATE_FIELDS]),
        "repairs": pa.map_(pa.string(), pa.string()),
    }
    return types.get(f.kind)


def arrow_nullable(f: TraceField) -> bool:
    """Whether a Parquet column of the field may hold nulls: all but the required,
    non-null ones."""
    return not f.required or f.nullable


__all__ = [
    "ABSENT_MEANS",
    "ACTION_SIZE",
    "FIELDS",
    "FIELD_NAMES",
    "REASONS",
    "REASON_CODES",
    "REPAIRS",
    "REQUIRED_COLUMNS",
    "REQUIRED_FIELDS",
    "RequiredTraceRecord",
    "StateOut",
    "TRACE_SCHEMA",
    "TraceField",
    "TraceOut",
    "TraceRecord",
    "TraceState",
    "arrow_nullable",
    "arrow_type",
    "names_of",
]

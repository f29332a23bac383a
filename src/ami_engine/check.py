"""Invariants 1-5 of docs/engine.md §13 over trace records, against a config's thresholds.

Works on the engine's own columns (TraceColumns), on trace files of any engine that writes
the format (read as TraceChunks) and on records held in memory as dicts. Scores W/J/H/C
are optional in foreign traces; invariant 2 then checks what the record has. Values
within TOLERANCE of a threshold are not violations (docs/engine.md, introduction: such
comparisons may fall either way between implementations). Invariant 6, determinism, is a
property of two runs, not of one record: the gate checks it.

A record whose `confidence` is null (the original engine writes such records when no
action passed its filter and its fail-safe did not fire) breaks no invariant by that
alone, but the invariants that read confidence (2, its confidence part, and 5) cannot be
judged on it: it is reported as a Finding of its own kind, for information, never as a
violation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np

from .config import Config
from .io import parquet
from .io.files import InputError, display_name, gc_paused
from .io.parquet import is_parquet
from .io.traces import TraceChunk, TraceRecord, iter_trace_blocks

TOLERANCE = 1e-9

# number -> (name, rule as docs/engine.md §13 states it)
INVARIANTS: dict[int, tuple[str, str]] = {
    1: ("in_range", "final_action in [0, 1]^4; level in {0, 1, 2}"),
    2: ("kept_action_within_thresholds",
        "level < 2 implies J >= J_MIN, H <= H_MAX, C_MIN <= C <= C_MAX, J >= J_CRITICAL, H <= H_CRITICAL, "
        "confidence >= CONFIDENCE_ESCALATION_FORCE (values of final_action)"),
    3: ("fail_safe_iff_escalation", "level == 2 iff human_escalation; then final_action == SAFE_ACTION"),
    4: ("clamp_only_at_level_1", "soft_clamp implies level == 1; level == 0 implies final_action == raw_action"),
    5: ("low_confidence_escalates", "confidence < CONFIDENCE_ESCALATION_FORCE implies human_escalation"),
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant in one record.

    `line` is the record's 1-based line in its file, or its 0-based index for records and
    columns held in memory.
    """

    line: int
    invariant: int
    field: str
    detail: str

    @property
    def name(self) -> str:
        return INVARIANTS[self.invariant][0]

    @property
    def rule(self) -> str:
        return INVARIANTS[self.invariant][1]

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "invariant": self.invariant, "name": self.name, "rule": self.rule,
                "field": self.field, "detail": self.detail}

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: invariant {self.invariant} ({self.name}): {self.field}: {self.detail}"


# kind -> what a finding of that kind means
FINDINGS: dict[str, str] = {
    "null_confidence": "confidence is null; invariants 2 (its confidence part) and 5 cannot be judged on this record",
}


@dataclass(frozen=True)
class Finding:
    """A record worth knowing about that breaks no invariant (see FINDINGS); `line` as in
    Violation."""

    line: int
    kind: str
    field: str

    @property
    def detail(self) -> str:
        return FINDINGS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "kind": self.kind, "field": self.field, "detail": self.detail}

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: finding ({self.kind}): {self.field}: {self.detail}"


@dataclass(frozen=True)
class TraceCheck:
    """What checking a traces file found: the broken invariants and the findings."""

    violations: list[Violation]
    findings: list[Finding]
    configs: dict[str | None, Config] = dataclasses.field(default_factory=dict)  # the configs judged against, by id


def findings_of_columns(cols: Any, lines: np.ndarray | None = None) -> list[Finding]:
    """The findings in a block of records given as columns (a null confidence is NaN there)."""
    conf = np.asarray(cols.confidence, dtype=np.float64)
    where = np.arange(conf.shape[0]) if lines is None else np.asarray(lines)
    return [Finding(int(where[i]), "null_confidence", "confidence") for i in np.flatnonzero(np.isnan(conf))]


def _as_floats(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def _g(x: float) -> str:
    return f"{x:.12g}"


def check_columns(cols: Any, config: Config, lines: np.ndarray | None = None) -> list[Violation]:
    """Every violation in a block of records given as columns (TraceColumns or TraceChunk).

    Each rule is one mask over the whole block; only the records that break a rule are
    visited, to word the detail. `lines` numbers the records (default: their 0-based index).
    """
    level = np.asarray(cols.level, dtype=np.int64)
    final = np.asarray(cols.final_action, dtype=np.float64)
    raw = np.asarray(cols.raw_action, dtype=np.float64)
    human = np.asarray(cols.human_escalation, dtype=bool)
    soft = np.asarray(cols.soft_clamp, dtype=bool)
    conf = np.asarray(cols.confidence, dtype=np.float64)
    where = np.arange(level.shape[0]) if lines is None else np.asarray(lines)
    safe = np.asarray(config["SAFE_ACTION"], dtype=np.float64)
    force = config["CONFIDENCE_ESCALATION_FORCE"]
    tol = TOLERANCE
    kept = level < 2
    found: list[tuple[int, int, str, str]] = []

    def add(mask: np.ndarray, invariant: int, field: str, detail: Callable[[int], str]) -> None:
        found.extend((int(i), invariant, field, detail(int(i))) for i in np.flatnonzero(mask))

    # 1. ranges
    add(np.any((final < -tol) | (final > 1 + tol) | np.isnan(final), axis=1), 1, "final_action",
        lambda i: f"{final[i].tolist()} is outside [0, 1]^4")
    add(~np.isin(level, (0, 1, 2)), 1, "level", lambda i: f"{level[i]} is not 0, 1 or 2")

    # 2. a kept action (level 0 or 1) passes the filter, the hard floors and the confidence force
    lower = {"J": ("J_MIN", "J_CRITICAL"), "C": ("C_MIN",)}
    upper = {"H": ("H_MAX", "H_CRITICAL"), "C": ("C_MAX",)}
    for score in ("J", "H", "C"):
        values = _as_floats(getattr(cols, score, None))
        if values is None:  # a foreign trace without scores
            continue
        for param in lower.get(score, ()):
            limit = config[param]
            add(kept & (values < limit - tol), 2, score,
                lambda i, v=values, s=score, p=param, x=limit: f"level {level[i]} with {s} {_g(v[i])} < {p} {x}")
        for param in upper.get(score, ()):
            limit = config[param]
            add(kept & (values > limit + tol), 2, score,
                lambda i, v=values, s=score, p=param, x=limit: f"level {level[i]} with {s} {_g(v[i])} > {p} {x}")
    low_confidence = conf < force - tol
    add(kept & low_confidence, 2, "confidence",
        lambda i: f"level {level[i]} with confidence {_g(conf[i])} < CONFIDENCE_ESCALATION_FORCE {force}")

    # 3. fail-safe <=> human escalation, and the fail-safe action is SAFE_ACTION
    add((level == 2) != human, 3, "human_escalation",
        lambda i: f"level {level[i]} with human_escalation {str(bool(human[i])).lower()}")
    add((level == 2) & np.any(np.abs(final - safe) > tol, axis=1), 3, "final_action",
        lambda i: f"level 2 with final_action {final[i].tolist()} != SAFE_ACTION {safe.tolist()}")

    # 4. the clamp belongs to level 1; level 0 acts as decided
    add(soft & (level != 1), 4, "soft_clamp", lambda i: f"soft_clamp true with level {level[i]}")
    add((level == 0) & np.any(np.abs(final - raw) > tol, axis=1), 4, "final_action",
        lambda i: f"level 0 with final_action {final[i].tolist()} != raw_action {raw[i].tolist()}")

    # 5. low confidence always reaches a person
    add(low_confidence & ~human, 5, "human_escalation",
        lambda i: f"confidence {_g(conf[i])} < CONFIDENCE_ESCALATION_FORCE {force} without human escalation")

    found.sort(key=lambda v: (v[0], v[1]))
    return [Violation(int(where[i]), invariant, field, detail) for i, invariant, field, detail in found]


class _CheckedRecord(TraceRecord, gc=False):
    """A trace record as the reader takes it, except that any small integer level is read,
    so that a level outside {0, 1, 2} is reported as a broken invariant 1, not bad input."""

    level: Annotated[int, msgspec.Meta(ge=-128, le=127)]


def check_trace_file(path: str | os.PathLike[str], config: Config) -> list[Violation]:
    """Every violation in a traces file, each with its line number, block by block. A file
    without records is bad input, as for every reader of traces."""
    return check_traces(path, config).violations


def _trace_chunks(path: str | os.PathLike[str]) -> Iterator[TraceChunk]:
    """The records of a traces file as chunks; for Parquet, `line` is each record's row in
    the whole data set."""
    if is_parquet(path):
        yield from parquet.trace_chunks(path, any_level=True)
        return
    for block in iter_trace_blocks(path, _CheckedRecord):
        if block.records:
            with gc_paused():
                chunk = TraceChunk.from_records(block.records, np.asarray(block.lines))
            yield chunk


def check_traces(path: str | os.PathLike[str], resolve: Config | Callable[[str | None, int], Config]
                 ) -> TraceCheck:
    """Every violation and every finding in a traces file, each with its line number (for
    Parquet, the record's row in the whole data set). `resolve` is the config every record
    is judged against, or gives the config that produced a record from its `config_id`:
    `resolve(config_id, line)` (None for a record without one; `line` is the first record
    with it), raising when there is none. A file without records is bad input."""
    out: list[Violation] = []
    notes: list[Finding] = []
    used: dict[str | None, Config] = {}
    n_records = 0
    for chunk in _trace_chunks(path):
        n_records += len(chunk)
        notes.extend(findings_of_columns(chunk, lines=chunk.line))
        if isinstance(resolve, Config):
            used[resolve.config_id] = resolve
            out.extend(check_columns(chunk, resolve, lines=chunk.line))
            continue
        ids = chunk.config_id or [None] * len(chunk)
        groups: dict[str | None, list[int]] = {}
        for i, key in enumerate(ids):
            groups.setdefault(key if isinstance(key, str) else None, []).append(i)
        for key, rows in groups.items():
            if key not in used:
                used[key] = resolve(key, int(chunk.line[rows[0]]))
            part = chunk if len(groups) == 1 else chunk.take(np.asarray(rows))
            out.extend(check_columns(part, used[key], lines=part.line))
    if not n_records:
        raise InputError(display_name(path), None, None, "no traces in the file")
    out.sort(key=lambda v: (v.line, v.invariant))
    return TraceCheck(out, notes, used)


def check_records(records: Iterable[Mapping[str, Any]], config: Config) -> list[Violation]:
    """Every violation in trace records held in memory (dicts as in a traces file),
    numbered by their 0-based index."""
    decoded = []
    for i, record in enumerate(records):
        try:
            decoded.append(msgspec.convert(record, _CheckedRecord))
        except msgspec.ValidationError as exc:
            raise InputError(f"record {i}", None, None, str(exc)) from None
    if not decoded:
        return []
    return check_columns(TraceChunk.from_records(decoded, np.arange(len(decoded))), config)

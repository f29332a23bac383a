"""Invariants of ENGINE.md section 13 over trace records, against a config's thresholds.

Works on the engine's own columns (TraceColumns) and on trace files of any engine of the
format (TraceChunk): scores W/J/H/C are optional in foreign traces, and invariant 2 then
checks what the record has. Values within TOLERANCE of a threshold are not violations
(ENGINE.md section 12: such comparisons may fall either way between implementations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config
from .io.traces import iter_trace_chunks

TOLERANCE = 1e-9

INVARIANTS = {
    1: "final_action in [0, 1]^4 and level in {0, 1, 2}",
    2: "level < 2 implies the final action passes the filter, the hard floors and the confidence force",
    3: "level == 2 iff human_escalation, and then final_action == SAFE_ACTION",
    4: "soft_clamp implies level == 1; level == 0 implies final_action == raw_action",
    5: "confidence < CONFIDENCE_ESCALATION_FORCE implies human_escalation",
}


@dataclass(frozen=True)
class Violation:
    line: int  # line in the file (or 0-based index for in-memory columns)
    invariant: int
    field: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "invariant": self.invariant, "rule": INVARIANTS[self.invariant],
                "field": self.field, "detail": self.detail}

    def format(self, source: str) -> str:
        return f"{source}:{self.line}: invariant {self.invariant}: {self.field}: {self.detail}"


def _rows(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask)


def check_columns(cols: Any, config: Config, lines: np.ndarray | None = None) -> list[Violation]:
    """Violations in one block of records (columns as in TraceColumns / TraceChunk)."""
    n = len(cols.level)
    where = np.arange(n) if lines is None else lines
    level = np.asarray(cols.level)
    final = np.asarray(cols.final_action, dtype=np.float64)
    raw = np.asarray(cols.raw_action, dtype=np.float64)
    human = np.asarray(cols.human_escalation, dtype=bool)
    soft = np.asarray(cols.soft_clamp, dtype=bool)
    conf = np.asarray(cols.confidence, dtype=np.float64)
    safe = np.asarray(config["SAFE_ACTION"])
    tol = TOLERANCE
    found: list[tuple[int, int, str, str]] = []

    def add(mask: np.ndarray, invariant: int, field: str, detail) -> None:
        for i in _rows(mask):
            found.append((int(i), invariant, field, detail(i)))

    add(np.any((final < -tol) | (final > 1 + tol), axis=1), 1, "final_action",
        lambda i: f"{final[i].tolist()} is outside [0, 1]^4")
    add(~np.isin(level, (0, 1, 2)), 1, "level", lambda i: f"{level[i]} is not 0, 1 or 2")

    below = level < 2
    scores = {name: getattr(cols, name, None) for name in ("J", "H", "C")}
    bounds = [
        ("J", lambda v: v < config["J_MIN"] - tol, f"< J_MIN {config['J_MIN']}"),
        ("J", lambda v: v < config["J_CRITICAL"] - tol, f"< J_CRITICAL {config['J_CRITICAL']}"),
        ("H", lambda v: v > config["H_MAX"] + tol, f"> H_MAX {config['H_MAX']}"),
        ("H", lambda v: v > config["H_CRITICAL"] + tol, f"> H_CRITICAL {config['H_CRITICAL']}"),
        ("C", lambda v: v < config["C_MIN"] - tol, f"< C_MIN {config['C_MIN']}"),
        ("C", lambda v: v > config["C_MAX"] + tol, f"> C_MAX {config['C_MAX']}"),
    ]
    for name, broken, text in bounds:
        values = scores[name]
        if values is None:
            continue
        values = np.asarray(values, dtype=np.float64)
        add(below & ~np.isnan(values) & broken(values), 2, name,
            lambda i, v=values, t=text, nm=name: f"level {level[i]} with {nm} {v[i]:.12g} {t}")
    force = config["CONFIDENCE_ESCALATION_FORCE"]
    add(below & (conf < force - tol), 2, "confidence",
        lambda i: f"level {level[i]} with confidence {conf[i]:.12g} < CONFIDENCE_ESCALATION_FORCE {force}")

    add((level == 2) != human, 3, "human_escalation",
        lambda i: f"level {level[i]} with human_escalation {bool(human[i])}")
    add((level == 2) & np.any(np.abs(final - safe) > tol, axis=1), 3, "final_action",
        lambda i: f"level 2 with final_action {final[i].tolist()} != SAFE_ACTION {safe.tolist()}")

    add(soft & (level != 1), 4, "soft_clamp", lambda i: f"soft_clamp with level {level[i]}")
    add((level == 0) & np.any(np.abs(final - raw) > tol, axis=1), 4, "final_action",
        lambda i: f"level 0 with final_action {final[i].tolist()} != raw_action {raw[i].tolist()}")

    add((conf < force - tol) & ~human, 5, "human_escalation",
        lambda i: f"confidence {conf[i]:.12g} < {force} without human escalation")

    found.sort(key=lambda v: (v[0], v[1]))
    return [Violation(int(where[i]), inv, field, detail) for i, inv, field, detail in found]


def check_trace_file(path: str, config: Config) -> list[Violation]:
    """Every violation in a traces file, with its line number."""
    out: list[Violation] = []
    for chunk in iter_trace_chunks(path):
        out.extend(check_columns(chunk, config, lines=chunk.line))
    return out

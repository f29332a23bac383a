"""One decision laid open: why did the engine choose this action and this level?

The figures shown are computed by the engine's own compiled rules; the decision itself
(level, reason, final action, CUS) is the trace the engine writes for that state. The
decision is given as one state, or picked from a file by line or id: a states file (each
record is a state) or a traces file (each record carries its `state`). Either way, the
earlier states of the file are decided first, so that the stream's drift history is the
one the picked decision had.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import Config
from .engine import ActionSpace
from .engine import rules as R
from .engine.scores import score_action, selection_score
from .io import parquet
from .io.files import InputError, display_name, open_binary
from .io.stateset import STATE_FIELDS, StateSet


def explain_decision(state_row: np.ndarray, config: Config, trace: dict[str, Any]) -> dict[str, Any]:
    """Every action's scores, the candidates, the distinct scores and the rule that fired.

    `state_row` holds the nine fields in STATE_FIELDS order; `trace` is the engine's
    trace record of this decision (with its stream history already applied)."""
    space = ActionSpace.of(config)
    cfg = np.asarray(config.kernel_row(), dtype=np.float64)
    rows = []
    for a, action in enumerate(space.actions):
        W, J, H, C = score_action(state_row, *action)
        S = selection_score(W, J, H, C, space.score_weights)
        conf, margin = R.confidence(W, J, H, C, cfg)
        rows.append({"index": a, "action": action.tolist(), "W": W, "J": J, "H": H, "C": C, "S": S,
                     "candidate": bool(R.is_candidate(J, H, C, cfg)), "margin": margin, "confidence": conf,
                     "fails": _fails(J, H, C, cfg)})
    candidates = sorted((r for r in rows if r["candidate"]), key=lambda r: (-r["S"], r["index"]))
    for rank, r in enumerate(candidates, start=1):
        r["rank"] = rank
    distinct: list[float] = []
    for r in candidates:
        if not distinct or R.is_distinct(r["S"], distinct[-1]):
            distinct.append(r["S"])
    out: dict[str, Any] = {
        "state": dict(zip(STATE_FIELDS, map(float, state_row))),
        "config_id": config.config_id,
        "n_actions": len(rows),
        "n_candidates": len(candidates),
        "candidates": candidates,
        "rejected_by": _rejection_counts(rows),
        "distinct_scores": distinct,
        "trace": trace,
    }
    if candidates:
        # The engine's own walk over the candidates (section 5 and 7): the selected action,
        # DE_norm and AS_norm exactly as the direct path computes them.
        m = len(candidates)
        best, _, de, as_ = R.selection(np.array([r["S"] for r in candidates]),
                                       np.array([r["index"] for r in candidates], dtype=np.int64),
                                       np.full(1, np.nan), np.arange(m, dtype=np.int64), m, cfg)
        if len(distinct) >= 2:
            out["softmax"] = _softmax(distinct, config["DE_TEMPERATURE"])
        out["DE_norm"] = float(de)
        out["AS"] = distinct[0] - distinct[1] if len(distinct) >= 2 else None
        out["AS_norm"] = float(as_)
        out["selected"] = rows[best]
    else:
        out["no_candidate"] = no_candidate_text(config, trace)
    out["rule"] = _rule_text(trace, config, out.get("AS_norm"))
    return out


def no_candidate_text(config: Config, trace: dict[str, Any]) -> str:
    """What happens when no action passes the filter, in words."""
    return (f"no action passed the candidate filter (J >= J_MIN {config['J_MIN']:g}, H <= H_MAX "
            f"{config['H_MAX']:g}, C_MIN {config['C_MIN']:g} <= C <= C_MAX {config['C_MAX']:g}); "
            f"the engine escapes to the fail-safe: level {trace['level']}, reason {trace['reason']}, "
            f"human escalation {str(trace['human_escalation']).lower()}, action taken {trace['final_action']} "
            f"(SAFE_ACTION)")


# --------------------------------------------------------------- picking a decision


@dataclass(frozen=True)
class PickedDecision:
    """A decision picked from a file.

    `states` holds the file's states up to and including the picked one (the history its
    stream had), `index` the picked state's position there. `kind` is "states" or
    "traces"; for a traces file `recorded` holds what the file says was decided (level,
    reason, final_action, config_id, where the record has them)."""

    states: StateSet
    index: int
    source: str
    line: int
    kind: str
    recorded: dict[str, Any] | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.source, "line": self.line, "kind": self.kind}
        if self.recorded is not None:
            out["recorded"] = self.recorded
        if self.note is not None:
            out["note"] = self.note
        return out


def pick_decision(path: str | os.PathLike[str], *, line: int | None = None, record_id: str | None = None,
                  drop_unknown: bool = False) -> PickedDecision:
    """The decision on `line` (1-based) or of the record whose `id` is `record_id`, from a
    states file or a traces file (told apart by their first record)."""
    if (line is None) == (record_id is None):
        raise ValueError("give exactly one of line or record_id")
    if is_traces_file(path):
        return _pick_from_traces(path, line, record_id)
    return _pick_from_states(path, line, record_id, drop_unknown)


def is_traces_file(path: str | os.PathLike[str]) -> bool:
    """True when the first record of the file is a DecisionTrace rather than a state (for
    Parquet: when it has the trace columns)."""
    if _parquet(path):
        return "final_action" in parquet.file_schema(path).names
    with open_binary(path) as stream:
        for raw in stream:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except ValueError:
                    return False  # the reader of states says what is wrong with it
                return isinstance(first, dict) and ("final_action" in first or "state" in first)
    return False


def _matching_ids(ids: list[Any], wanted: str) -> list[int]:
    """Positions whose id is `wanted`, as a string or as the integer it spells."""
    return [i for i, v in enumerate(ids)
            if v == wanted or (isinstance(v, int) and not isinstance(v, bool) and str(v) == wanted)]


def _one_id(ids: list[Any], lines: list[int], wanted: str, source: str, among: str) -> int:
    found = _matching_ids(ids, wanted)
    if not found:
        raise InputError(source, None, "id", f"no {among} has id {wanted}")
    if len(found) > 1:
        shown = ", ".join(str(lines[i]) for i in found[:10])
        raise InputError(source, None, "id", f"id {wanted} is on several lines ({shown}); pick one with --line")
    return found[0]


def _parquet(path: Any) -> bool:
    return parquet.is_parquet(path)


def _nonblank_lines(path: str | os.PathLike[str]) -> list[int]:
    """The lines that hold a record (for Parquet, every row, numbered from 1)."""
    if _parquet(path):
        return list(range(1, parquet.count_rows(path) + 1))
    with open_binary(path) as stream:
        return [number for number, raw in enumerate(stream, start=1) if raw.strip()]


def _pick_from_states(path, line, record_id, drop_unknown) -> PickedDecision:
    from .io.states import read_states

    source = display_name(path)
    states = read_states(path, drop_unknown=drop_unknown)
    lines = _nonblank_lines(path)
    if record_id is not None:
        index = _one_id(states.ids, lines, record_id, source, "state")
    else:
        try:
            index = lines.index(line)
        except ValueError:
            problem = "past the end of the file" if not lines or line > lines[-1] else "a blank line"
            raise InputError(source, line, None, f"no state there ({problem})") from None
    return PickedDecision(states.subset(np.arange(index + 1)), index, source, lines[index], "states")


def _pick_from_traces(path, line, record_id) -> PickedDecision:
    from .io.traces import read_trace_states

    source = display_name(path)
    found = read_trace_states(path)
    lines = found.lines.tolist()
    if record_id is not None:
        index = _one_id(found.states.ids, lines, record_id, source, "record that carries a `state`")
    else:
        try:
            index = lines.index(line)
        except ValueError:
            raise InputError(source, line, "state", _no_state_problem(path, line)) from None
    note = None
    if found.missing:
        note = (f"{found.missing} of {found.n_records} records carry no `state`: their decisions are not part of "
                "the drift history replayed here")
    return PickedDecision(found.states.subset(np.arange(index + 1)), index, source, lines[index], "traces",
                          _recorded(path, lines[index]), note)


def _record_at(path: str | os.PathLike[str], line: int) -> Any:
    """The decoded trace record on `line` (for Parquet, the row), or None when no record is
    there."""
    from .io.traces import TraceRecord, iter_trace_blocks

    if _parquet(path):
        records = parquet.read_trace_records(path, keys=("level", "final_action", "reason", "config_id"))
        if not 1 <= line <= len(records):
            return None
        from types import SimpleNamespace

        from msgspec import UNSET

        record = records[line - 1]
        return SimpleNamespace(**{k: record.get(k, UNSET) for k in ("level", "final_action", "reason", "config_id")})

    for block in iter_trace_blocks(path, TraceRecord):
        at = np.flatnonzero(np.asarray(block.lines) == line)
        if at.size:
            return block.records[int(at[0])]
    return None


def _no_state_problem(path: str | os.PathLike[str], line: int) -> str:
    if _record_at(path, line) is None:
        return "no trace record on this line (blank or past the end of the file)"
    return ("this record carries no `state`, so its decision cannot be decided again (traces that should be "
            "explained or replayed must log the state decided on)")


def _recorded(path: str | os.PathLike[str], line: int) -> dict[str, Any]:
    from msgspec import UNSET

    record = _record_at(path, line)
    out = {"level": record.level, "final_action": list(record.final_action)}
    for name in ("reason", "config_id"):
        value = getattr(record, name)
        if value is not UNSET:
            out[name] = value
    return out


def _softmax(distinct: list[float], temperature: float) -> list[float]:
    """The probabilities p_i of section 7 over the distinct scores, for display."""
    weights = [math.exp((d - distinct[0]) / temperature) for d in distinct]
    z = sum(weights)
    return [w / z for w in weights]


_INF = math.inf
# Each bound of the candidate filter on its own: the engine's filter with the other three
# bounds open (J_MIN, H_MAX, C_MIN, C_MAX offsets into the config row).
_BOUNDS = (
    ("J < J_MIN", lambda cfg: (cfg[R.J_MIN], _INF, -_INF, _INF)),
    ("H > H_MAX", lambda cfg: (-_INF, cfg[R.H_MAX], -_INF, _INF)),
    ("C < C_MIN", lambda cfg: (-_INF, _INF, cfg[R.C_MIN], _INF)),
    ("C > C_MAX", lambda cfg: (-_INF, _INF, -_INF, cfg[R.C_MAX])),
)


def _fails(J: float, H: float, C: float, cfg: np.ndarray) -> list[str]:
    """The bounds of the candidate filter that an action fails, each asked of the engine's
    filter alone."""
    return [name for name, bounds in _BOUNDS if not R.candidate_filter(J, H, C, *bounds(cfg))]


def _rejection_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        for f in r["fails"]:
            counts[f] = counts.get(f, 0) + 1
    return counts


_RULES = {
    "normal": "level 0: no rule fired; the selected action is taken as it is",
    "no_clear_leader": "level 1: AS_norm {AS_norm} < AS_SOFT_THRESHOLD {AS_SOFT_THRESHOLD}; the action is soft-clamped",
    "drift": "level 1: delta_cus {delta_cus} > DELTA_CUS_THRESHOLD {DELTA_CUS_THRESHOLD} "
             "or cus_mean {cus_mean} > CUS_MEAN_THRESHOLD {CUS_MEAN_THRESHOLD}; the action is soft-clamped",
    "j_critical": "level 2: J of the selected action < J_CRITICAL {J_CRITICAL}",
    "h_critical": "level 2: H of the selected action > H_CRITICAL {H_CRITICAL}",
    "low_confidence": "level 2: confidence {confidence} < CONFIDENCE_ESCALATION_FORCE {CONFIDENCE_ESCALATION_FORCE}",
    "divergence": "level 2: divergence |confidence - (1 - DE_norm)| > DIVERGENCE_HARD_THRESHOLD "
                  "{DIVERGENCE_HARD_THRESHOLD}",
    "clamp_violation": "level 2: the soft-clamped action broke the filter, a hard floor or the confidence force",
    "no_valid_candidate": "level 2: no action passes the filter (J >= J_MIN {J_MIN}, H <= H_MAX {H_MAX}, "
                          "C_MIN {C_MIN} <= C <= C_MAX {C_MAX})",
}


def _rule_text(trace: dict[str, Any], config: Config, as_norm: float | None) -> str:
    fmt = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in config.values.items()}
    for k in ("delta_cus", "cus_mean", "confidence"):
        v = trace.get(k)
        fmt[k] = "null" if v is None else f"{v:.4g}"
    fmt["AS_norm"] = "null" if as_norm is None else f"{as_norm:.4g}"
    return f"{trace['reason']}: " + _RULES[trace["reason"]].format(**fmt)

"""One decision laid open: why did the engine choose this action and this level?

The figures shown are computed by the engine's own compiled rules; the decision itself
(level, reason, final action, CUS) is the trace the engine writes for that state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import Config
from .engine import ActionSpace
from .engine import kernel as K
from .engine.scores import score_action, selection_score
from .io.stateset import STATE_FIELDS


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
        conf, margin = K.confidence_and_margin(W, J, H, C, cfg)
        rows.append({"index": a, "action": action.tolist(), "W": W, "J": J, "H": H, "C": C, "S": S,
                     "candidate": bool(K.is_candidate(J, H, C, cfg)), "margin": margin, "confidence": conf,
                     "fails": _fails(J, H, C, config)})
    candidates = sorted((r for r in rows if r["candidate"]), key=lambda r: (-r["S"], r["index"]))
    distinct: list[float] = []
    for r in candidates:
        if not distinct or r["S"] < distinct[-1] - K.TIE:
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
        T = config["DE_TEMPERATURE"]
        if len(distinct) >= 2:
            top = distinct[0]
            weights = [math.exp((d - top) / T) for d in distinct]
            z = sum(weights)
            p = [w / z for w in weights]
            entropy = -sum(pi * math.log(pi) for pi in p if pi > 0)
            out["softmax"] = p
            out["DE_norm"] = entropy / math.log(len(distinct))
            out["AS"] = distinct[0] - distinct[1]
            out["AS_norm"] = 1 - math.exp(-config["UNCERTAINTY_AS_LAMBDA"] * out["AS"])
        else:
            out["DE_norm"], out["AS"], out["AS_norm"] = 0.0, None, 1.0
        ties = [r for r in candidates if r["S"] >= candidates[0]["S"] - K.TIE]
        out["selected"] = min(ties, key=lambda r: r["index"])
    out["rule"] = _rule_text(trace, config, out.get("AS_norm"))
    return out


def _fails(J: float, H: float, C: float, config: Config) -> list[str]:
    fails = []
    if J < config["J_MIN"]:
        fails.append("J < J_MIN")
    if H > config["H_MAX"]:
        fails.append("H > H_MAX")
    if C < config["C_MIN"]:
        fails.append("C < C_MIN")
    if C > config["C_MAX"]:
        fails.append("C > C_MAX")
    return fails


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

"""The needless fail-safes a suggestion removes (docs/learning.md §8): which baseline
fail-safes it decides without one, why the baseline escalated them, and where they lie."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..check import check_columns
from ..config import Config
from ..engine import REASONS, run
from ..io.stateset import STATE_FIELDS, StateSet


def needless_fail_safes(states: StateSet, baseline: Config, suggestion: Config, bins: int = 10) -> dict[str, Any]:
    """docs/learning.md §8: the decisions that are L2 under the baseline and not under the
    suggestion, by the baseline's reason and by state region."""
    base = run(states, baseline)
    sugg = run(states, suggestion)
    base_l2 = base.level == 2
    removed = base_l2 & (sugg.level < 2)
    still = base_l2 & (sugg.level == 2)
    by_reason = {REASONS[r]: int(np.sum(removed & (base.reason == r))) for r in range(len(REASONS))}
    by_reason = {k: v for k, v in by_reason.items() if v}
    edges = np.linspace(0.0, 1.0, bins + 1)
    fields, histograms, contrasts = [], {}, []
    values = states.values
    for j, name in enumerate(STATE_FIELDS):
        col = values[:, j]
        mean_all = float(col.mean())
        mean_removed = float(col[removed].mean()) if removed.any() else None
        mean_still = float(col[still].mean()) if still.any() else None
        fields.append({"field": name, "mean_needless": mean_removed, "mean_all": mean_all,
                       "mean_still_l2": mean_still})
        histograms[name] = {"edges": [float(e) for e in edges],
                            "all": np.histogram(col, edges)[0].tolist(),
                            "needless": np.histogram(col[removed], edges)[0].tolist()}
        if mean_removed is not None:
            spread = float(col.std()) or 1.0
            contrasts.append(((mean_removed - mean_all) / spread, name, mean_removed, mean_all))
    contrasts.sort(key=lambda c: -abs(c[0]))
    summary = [
        f"{name} is {'high' if z > 0 else 'low'} (mean {m:.2f} vs {a:.2f} over all states)"
        for z, name, m, a in contrasts[:3] if abs(z) >= 0.1
    ]
    n_removed = int(removed.sum())
    broken = {v.line for v in check_columns(sugg, suggestion)}
    return {
        "definition": NEEDLESS_DEFINITION,
        "meet_invariants": int(n_removed - sum(1 for i in broken if removed[i])),
        "margins": {"J_minus_J_MIN": _spread(sugg.J[removed] - suggestion["J_MIN"]),
                    "H_MAX_minus_H": _spread(suggestion["H_MAX"] - sugg.H[removed])},
        "count": n_removed,
        "baseline_l2": int(base_l2.sum()),
        "n": len(states),
        "rate": n_removed / len(states),
        "by_reason": by_reason,
        "new_level": {"0": int(np.sum(removed & (sugg.level == 0))), "1": int(np.sum(removed & (sugg.level == 1)))},
        "fields": fields,
        "histograms": histograms,
        "summary": summary,
        "_mask": removed,
    }


NEEDLESS_DEFINITION = (
    "A baseline fail-safe is needless when the suggestion decides the same state without a fail-safe and "
    "that decision meets every invariant of the engine under the learned thresholds, which stay inside "
    "their safety bounds: its final action has J >= J_MIN, H <= H_MAX, C_MIN <= C <= C_MAX, J >= J_CRITICAL, "
    "H <= H_CRITICAL and a confidence of at least CONFIDENCE_ESCALATION_FORCE.")


def _spread(x: np.ndarray) -> dict[str, float] | dict[str, str]:
    """min, 10th percentile, median and max of a margin (how close decisions sit to a bound)."""
    if not x.size:
        return {"n": 0}
    q = np.quantile(x, [0.0, 0.1, 0.5, 1.0])
    return {"n": int(x.size), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "max": float(q[3])}

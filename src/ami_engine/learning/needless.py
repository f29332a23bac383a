"""The needless fail-safes a suggestion removes (docs/learning.md §8): which baseline
fail-safes it decides without one, why the baseline escalated them, and where they lie."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..check import check_columns
from ..config import Config
from ..engine import REASONS
from ..engine.parts import PART_DECISIONS, run_parts
from ..io.stateset import STATE_FIELDS, StateSet


def needless_fail_safes(states: StateSet, baseline: Config, suggestion: Config, bins: int = 10,
                        part_decisions: int = PART_DECISIONS) -> dict[str, Any]:
    """docs/learning.md §8: the decisions that are L2 under the baseline and not under the
    suggestion, by the baseline's reason and by state region.

    Both configs run over parts of whole streams (engine/parts.py, about `part_decisions`
    each); only the masks, the counts and the margins of the needless decisions are kept
    from each part, so the figures are exactly those of one run over all the states."""
    n = len(states)
    base_l2, removed, still = (np.zeros(n, dtype=bool) for _ in range(3))
    reasons = np.zeros(len(REASONS), dtype=np.int64)
    new_level = np.zeros(2, dtype=np.int64)
    j_margins, h_margins = [], []
    broken_removed = 0
    for pos, (base, sugg) in run_parts(states, [baseline, suggestion], part_decisions):
        l2 = base.level == 2
        gone = l2 & (sugg.level < 2)
        base_l2[pos], removed[pos], still[pos] = l2, gone, l2 & (sugg.level == 2)
        reasons += np.bincount(base.reason[gone], minlength=len(REASONS))[:len(REASONS)]
        new_level += [int(np.sum(gone & (sugg.level == 0))), int(np.sum(gone & (sugg.level == 1)))]
        j_margins.append(sugg.J[gone] - suggestion["J_MIN"])
        h_margins.append(suggestion["H_MAX"] - sugg.H[gone])
        broken_removed += sum(1 for i in {v.line for v in check_columns(sugg, suggestion)} if gone[i])
    by_reason = {REASONS[r]: int(reasons[r]) for r in range(len(REASONS))}
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
    return {
        "definition": NEEDLESS_DEFINITION,
        "meet_invariants": int(n_removed - broken_removed),
        "margins": {"J_minus_J_MIN": _spread(np.concatenate(j_margins)),
                    "H_MAX_minus_H": _spread(np.concatenate(h_margins))},
        "count": n_removed,
        "baseline_l2": int(base_l2.sum()),
        "n": n,
        "rate": n_removed / n,
        "by_reason": by_reason,
        "new_level": {"0": int(new_level[0]), "1": int(new_level[1])},
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

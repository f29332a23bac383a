"""The needless fail-safes a suggestion removes (docs/learning.md §8): which baseline
fail-safes it decides without one, why the baseline escalated them, and where they lie.

The figures are tallied from both configs' decisions part by part (NeedlessTally), so they
can come from any passes that decide every state under both: the one of
needless_fail_safes, or the passes learning makes anyway (learning/offline_loop.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..check import check_columns
from ..config import Config
from ..engine import REASONS
from ..engine.parts import PART_DECISIONS, run_parts
from ..io.spill import column
from ..io.stateset import STATE_FIELDS, StateSet
from .shards import Observer, Reading


class BaselineLevels:
    """The baseline's level and reason of each of n decisions, filled part by part."""

    def __init__(self, n: int) -> None:
        self.level = np.zeros(n, dtype=np.int8)
        self.reason = np.zeros(n, dtype=np.int8)
        self.added = 0

    def add(self, positions: np.ndarray, level: np.ndarray, reason: np.ndarray) -> None:
        """The baseline's levels and reasons at these positions (each position added once)."""
        self.level[positions] = level
        self.reason[positions] = reason
        self.added += int(positions.size)


@dataclass(frozen=True)
class NeedlessPart:
    """What the needless figures need of some decisions under the baseline and a
    suggestion (needless_part): small enough to send back from where they were made."""

    base_l2: np.ndarray  # per decision: the baseline fails safe
    removed: np.ndarray  # ... and the suggestion does not
    still: np.ndarray  # ... and the suggestion does too
    reasons: np.ndarray  # the baseline's reasons of the removed ones, counted
    new_level: tuple[int, int]  # the removed ones at level 0 and 1 under the suggestion
    j_margins: np.ndarray  # J - J_MIN of the removed ones
    h_margins: np.ndarray  # H_MAX - H of the removed ones
    broken: int  # removed ones whose decision breaks an invariant


def needless_part(base_level: np.ndarray, base_reason: np.ndarray, sugg: Any, params: Any) -> NeedlessPart:
    """The part of the needless figures given by some decisions: the baseline's levels and
    reasons, the suggestion's columns (TraceColumns) on the same states, and the
    suggestion's parameters (a Config, or its to_dict())."""
    l2 = base_level == 2
    gone = l2 & (sugg.level < 2)
    broken = sum(1 for i in {v.line for v in check_columns(sugg, params)} if gone[i])
    return NeedlessPart(
        base_l2=l2, removed=gone, still=l2 & (sugg.level == 2),
        reasons=np.bincount(base_reason[gone], minlength=len(REASONS))[:len(REASONS)],
        new_level=(int(np.sum(gone & (sugg.level == 0))), int(np.sum(gone & (sugg.level == 1)))),
        j_margins=sugg.J[gone] - params["J_MIN"], h_margins=params["H_MAX"] - sugg.H[gone], broken=broken)


class NeedlessTally:
    """The needless fail-safes of `suggestion` over n decisions, tallied from the parts of
    the decisions added (each decision once, in any order and any parts): the figures are
    those of one pass over all of them."""

    def __init__(self, n: int, suggestion: Config) -> None:
        self.suggestion = suggestion
        self.seen = np.zeros(n, dtype=bool)
        self.base_l2, self.removed, self.still = (np.zeros(n, dtype=bool) for _ in range(3))
        self.reasons = np.zeros(len(REASONS), dtype=np.int64)
        self.new_level = np.zeros(2, dtype=np.int64)
        self.j_margins: list[np.ndarray] = []
        self.h_margins: list[np.ndarray] = []
        self.broken_removed = 0

    def add(self, positions: np.ndarray, base_level: np.ndarray, base_reason: np.ndarray, sugg: Any) -> None:
        """The decisions at `positions`: the baseline's levels and reasons there, and the
        suggestion's columns (TraceColumns) on the same states."""
        self.add_part(positions, needless_part(base_level, base_reason, sugg, self.suggestion))

    def add_part(self, positions: np.ndarray, part: NeedlessPart) -> None:
        """The decisions at `positions`, as needless_part gave them."""
        self.seen[positions] = True
        self.base_l2[positions], self.removed[positions], self.still[positions] = part.base_l2, part.removed, part.still
        self.reasons += part.reasons
        self.new_level += part.new_level
        self.j_margins.append(part.j_margins)
        self.h_margins.append(part.h_margins)
        self.broken_removed += part.broken

    def figures(self, states: StateSet, bins: int = 10) -> dict[str, Any]:
        """docs/learning.md §8, once every decision of `states` has been added."""
        n = len(states)
        if self.seen.shape[0] != n or not self.seen.all():
            raise ValueError(f"needless fail-safes: {int(self.seen.sum())} of {n} decisions tallied")
        removed, still = self.removed, self.still
        by_reason = {REASONS[r]: int(self.reasons[r]) for r in range(len(REASONS))}
        by_reason = {k: v for k, v in by_reason.items() if v}
        # The histograms' equal bins over [0, 1] (the states' range), counted by NumPy's
        # uniform-bin path: the same counts as against these edges, without sorting.
        edges = np.linspace(0.0, 1.0, bins + 1)
        fields, histograms, contrasts = [], {}, []
        for j, name in enumerate(STATE_FIELDS):
            col = column(states.values, j)
            mean_all = float(col.mean())
            mean_removed = float(col[removed].mean()) if removed.any() else None
            mean_still = float(col[still].mean()) if still.any() else None
            fields.append({"field": name, "mean_needless": mean_removed, "mean_all": mean_all,
                           "mean_still_l2": mean_still})
            histograms[name] = {"edges": [float(e) for e in edges],
                                "all": np.histogram(col, bins, (0.0, 1.0))[0].tolist(),
                                "needless": np.histogram(col[removed], bins, (0.0, 1.0))[0].tolist()}
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
            "meet_invariants": int(n_removed - self.broken_removed),
            "margins": {"J_minus_J_MIN": _spread(np.concatenate(self.j_margins or [np.empty(0)])),
                        "H_MAX_minus_H": _spread(np.concatenate(self.h_margins or [np.empty(0)]))},
            "count": n_removed,
            "baseline_l2": int(self.base_l2.sum()),
            "n": n,
            "rate": n_removed / n,
            "by_reason": by_reason,
            "new_level": {"0": int(self.new_level[0]), "1": int(self.new_level[1])},
            "fields": fields,
            "histograms": histograms,
            "summary": summary,
            "_mask": removed,
        }


class TrainingWatch:
    """Needless tallies taken from the decisions learning makes anyway on the training
    shards: the baseline's (its levels, from its pass over all of them) and the finalists'
    (on the top rung), so that only the held-out states remain to be decided for the
    suggestion's needless fail-safes. Tallies are kept while they fit `budget` bytes."""

    def __init__(self, n: int, shard_positions: list[np.ndarray], budget: int) -> None:
        self.n, self.positions, self.budget = n, shard_positions, budget
        self.base = BaselineLevels(n)
        self.tallies: dict[str, NeedlessTally] = {}
        self.n_train = sum(int(p.size) for p in shard_positions)

    @staticmethod
    def bytes_needed(n: int, n_train: int, n_configs: int) -> int:
        """The most the tallies of n_configs finalists take: four masks over all the n
        states, and two margins per removed training decision at most."""
        return n_configs * (4 * n + 16 * n_train)

    def baseline(self) -> Reading:
        """What to read off the baseline's pass over the training shards: its levels."""
        def take(shard: int, parts: list[Any]) -> None:
            where = self.positions[shard]
            for pos, level, reason in parts:
                self.base.add(where[pos], level, reason)
        return Reading(_levels, lambda shard: None, take)

    def finalists(self, configs: list[Config]) -> Reading | None:
        """What to read off the finalists' pass over the training shards (after the
        baseline's): each one's needless part against the baseline; None when their
        tallies would not fit what is left of the budget."""
        need = self.bytes_needed(self.n, self.n_train, len(configs))
        if need > self.budget or self.base.added != self.n_train:
            return None
        self.budget -= need
        tallies = [NeedlessTally(self.n, c) for c in configs]
        for config, tally in zip(configs, tallies, strict=True):
            self.tallies.setdefault(config.config_id, tally)
        params = [c.to_dict() for c in configs]

        def args(shard: int) -> tuple:
            where = self.positions[shard]
            return params, self.base.level[where], self.base.reason[where]

        def take(shard: int, parts: list[Any]) -> None:
            where = self.positions[shard]
            for pos, each in parts:
                for tally, part in zip(tallies, each, strict=True):
                    tally.add_part(where[pos], part)
        return Reading(_needless_parts, args, take)

    def tally(self, config: Config) -> NeedlessTally | None:
        """The config's tally, if it was a watched finalist."""
        return self.tallies.get(config.config_id)

    def held_out(self, config: Config, positions: np.ndarray) -> Observer | None:
        """The observer of [config, baseline]'s decisions on the held-out states (at these
        positions of the data), for the config's tally; None when it has none."""
        tally = self.tally(config)
        if tally is None:
            return None

        def seen(pos: np.ndarray, columns: list[Any]) -> None:
            sugg, base = columns
            tally.add(positions[pos], base.level, base.reason, sugg)
        return seen


def _levels(positions: np.ndarray, columns: list[Any], _: None) -> tuple:
    """Reading.read of the baseline's pass: its levels and reasons."""
    return positions, columns[0].level, columns[0].reason


def _needless_parts(positions: np.ndarray, columns: list[Any], args: tuple) -> tuple:
    """Reading.read of the finalists' pass: each one's needless part against the
    baseline's levels and reasons on the shard, given as `args`."""
    params, level, reason = args
    return positions, [needless_part(level[positions], reason[positions], cols, p)
                       for cols, p in zip(columns, params, strict=True)]


def needless_fail_safes(states: StateSet, baseline: Config, suggestion: Config, bins: int = 10,
                        part_decisions: int = PART_DECISIONS) -> dict[str, Any]:
    """docs/learning.md §8: the decisions that are L2 under the baseline and not under the
    suggestion, by the baseline's reason and by state region.

    Both configs run over parts of whole streams (engine/parts.py, about `part_decisions`
    each); only the masks, the counts and the margins of the needless decisions are kept
    from each part, so the figures are exactly those of one run over all the states."""
    tally = NeedlessTally(len(states), suggestion)
    for pos, (base, sugg) in run_parts(states, [baseline, suggestion], part_decisions):
        tally.add(pos, base.level, base.reason, sugg)
    return tally.figures(states, bins)


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

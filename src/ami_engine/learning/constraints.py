"""The search-time constraints: the gate checks that need no held-out data, vectorised
over many candidate configs.

`learn` applies these as constraints while it searches; the gate applies the same functions
to one config. Figures come from the engine's per-config sums (engine.sums.EngineSums).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..engine import EngineSums, ScoreTable, run
from ..io.stateset import StateSet
from ..io.traces import TraceColumns
from .bounds import fail_safe_rate_lower, mean_upper


@dataclass(frozen=True)
class CriticalFloor:
    """On the critical set: fail-safe rate >= factor x baseline's, and mean H of the final
    actions <= baseline's + margin. A factor of 0 turns the floor off (figures still shown).

    `anchor`: a trusted config (the baseline's yardstick, gate/yardstick.py) whose figures
    set the floor too, the stricter of the two: a baseline chosen with loose thresholds
    cannot lower the floor below its yardstick's."""

    factor: float = 0.25
    margin: float = 0.02
    anchor: Config | None = None

    def references(self, baseline: Config) -> list[Config]:
        """The configs whose figures set the floor: the baseline, and the anchor when it is
        another config. Their sums, in this order, are the `baseline_sums` of the methods."""
        if self.anchor is None or self.anchor.config_id == baseline.config_id:
            return [baseline]
        return [baseline, self.anchor]

    def passes(self, sums: EngineSums, baseline_sums: EngineSums) -> np.ndarray:
        """Per config of `sums`, whether it keeps the floor set by the references' sums."""
        if self.factor == 0:
            return np.ones(len(sums), dtype=bool)
        min_rate, max_h = self.thresholds(baseline_sums)
        return (sums.fail_safe_rate >= min_rate) & (sums.mean_H <= max_h)

    def certified(self, sums: EngineSums, baseline_sums: EngineSums, delta: float) -> np.ndarray:
        """The floor judged on one-sided bounds at 1 - delta instead of point estimates: the
        Clopper-Pearson lower bound of the fail-safe rate and the Chernoff-Hoeffding upper
        bound of the mean H, the very bounds of the gate's certificate."""
        if self.factor == 0:
            return np.ones(len(sums), dtype=bool)
        min_rate, max_h = self.thresholds(baseline_sums)
        return ((fail_safe_rate_lower(sums.n_fail_safe, sums.n, delta) >= min_rate)
                & (mean_upper(sums.sum_H, sums.n, delta) <= max_h))

    def thresholds(self, baseline_sums: EngineSums) -> tuple[float, float]:
        """(lowest fail-safe rate, highest mean H) a config may have, from the references'
        sums (see references): the highest of their rates, the lowest of their mean H."""
        return (float(self.factor * np.max(baseline_sums.fail_safe_rate)),
                float(np.min(baseline_sums.mean_H) + self.margin))


def critical_tallies(cols: TraceColumns) -> tuple[int, int, float]:
    """(decisions, fail-safes, sum of the final actions' H) of one config's run: what the
    critical floor and its bounds are computed from."""
    return len(cols.level), int(np.count_nonzero(cols.level == 2)), float(np.sum(cols.H, dtype=np.float64))


def regression_failures(states: StateSet, config: Config, table: ScoreTable | None = None) -> list[int]:
    """Positions of regression states whose level falls below their `expect_level_min`."""
    if states.expect_level_min is None:
        raise ValueError("regression suite: its states carry no expect_level_min")
    cols = table.run(config) if table is not None else run(states, config)
    return [int(i) for i in np.flatnonzero(cols.level < states.expect_level_min)]

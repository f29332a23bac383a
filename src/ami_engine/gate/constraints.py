"""The gate checks that need no held-out data, vectorised over many candidate configs.

`learn` applies these as constraints while it searches; `gate` applies the same functions
to one config. Figures come from the engine's per-config sums (engine.kernel.S_*).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..engine import ScoreTable, run
from ..engine import kernel as K
from ..io.stateset import StateSet
from ..io.traces import TraceColumns


@dataclass(frozen=True)
class CriticalFloor:
    """On the critical set: fail-safe rate >= factor x baseline's, and mean H of the final
    actions <= baseline's + margin. A factor of 0 turns the floor off (figures still shown)."""

    factor: float = 0.25
    margin: float = 0.02

    def figures(self, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fail-safe rate, mean H) per row of sums."""
        n = sums[:, K.S_N]
        return sums[:, K.S_L2] / n, sums[:, K.S_H_FINAL] / n

    def passes(self, sums: np.ndarray, baseline_sums: np.ndarray) -> np.ndarray:
        rate, mean_h = self.figures(sums)
        base_rate, base_h = self.figures(baseline_sums[None, :])
        if self.factor == 0:
            return np.ones(len(rate), dtype=bool)
        return (rate >= self.factor * base_rate[0]) & (mean_h <= base_h[0] + self.margin)

    def certified(self, sums: np.ndarray, baseline_sums: np.ndarray, delta: float) -> np.ndarray:
        """The floor judged on one-sided bounds at 1 - delta instead of point estimates: the
        Clopper-Pearson lower bound of the fail-safe rate and the Chernoff-Hoeffding upper
        bound of the mean H, the very bounds of the gate's certificate."""
        from .certificate import fail_safe_rate_lower, mean_upper

        if self.factor == 0:
            return np.ones(len(sums), dtype=bool)
        min_rate, max_h = self.thresholds(baseline_sums)
        n = sums[:, K.S_N]
        return ((fail_safe_rate_lower(sums[:, K.S_L2], n, delta) >= min_rate)
                & (mean_upper(sums[:, K.S_H_FINAL], n, delta) <= max_h))

    def thresholds(self, baseline_sums: np.ndarray) -> tuple[float, float]:
        base_rate, base_h = self.figures(baseline_sums[None, :])
        return float(self.factor * base_rate[0]), float(base_h[0] + self.margin)


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

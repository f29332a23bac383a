"""The feedback figures of a set of decisions (docs/learning.md §3), each defined once.

Every figure is a count or a sum over the decisions divided by their number. The engine's
per-config sums (engine.sums.EngineSums) and the exact sums of a traces file
(learning.feedback_metrics.MetricSums) both read their figures here. Nothing here imports
the engine, so that reading a traces file's figures does not load it.
"""

from __future__ import annotations

from typing import Any

FAIL_SAFE_LEVEL = 2
N_LEVELS = 3


class Figures:
    """The feedback figures of a set of decisions, each defined here once.

    A subclass gives the totals (`_level_total`, `_cus_total`, `_distortion_total`) and
    how a total becomes a figure per decision (`_per_record`)."""

    def _per_record(self, total: Any) -> Any:
        raise NotImplementedError

    def _level_total(self, level: int) -> Any:
        raise NotImplementedError

    def _cus_total(self) -> Any:
        raise NotImplementedError

    def _distortion_total(self) -> Any:
        raise NotImplementedError

    @property
    def fail_safe_rate(self) -> Any:
        """The share of decisions at level 2."""
        return self._per_record(self._level_total(FAIL_SAFE_LEVEL))

    @property
    def mean_cus(self) -> Any:
        return self._per_record(self._cus_total())

    @property
    def clamp_distortion(self) -> Any:
        """The mean over all decisions of the soft clamp's distortion (0 where it did not act)."""
        return self._per_record(self._distortion_total())

    @property
    def level_rates(self) -> tuple[Any, Any, Any]:
        return tuple(self._per_record(self._level_total(level)) for level in range(N_LEVELS))  # type: ignore[return-value]

    def loss(self, weights: Any) -> Any:
        """L of these decisions under `weights` (a learning.loss.LossWeights, which holds L's formula)."""
        return weights.of(self)

"""The learning objective (docs/learning.md §3).

L = w1 * fail_safe_rate + w2 * mean_cus + w3 * clamp_distortion

On request, a fourth weight subtracts the original engine's later non-fail reward, so that
figures computed by it can be reproduced:

L = w1 * fail_safe_rate + w2 * mean_cus + w3 * clamp_distortion - w4 * (rate_L0 + 0.5 * rate_L1)

With w4 = 0 (the default) the two are the same L, and the weights are written as three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_NAMES = ("fail_safe_rate", "mean_cus", "clamp_distortion", "non_fail_reward")
_EXPECTED = "expected three numbers w1,w2,w3 or four w1,w2,w3,w4"
# Far beyond any weighting in use; an L of rates and means weighted by more could overflow
# in the gate's statistics.
MAX_WEIGHT = 1e6


@dataclass(frozen=True)
class LossWeights:
    fail_safe_rate: float = 1.5
    mean_cus: float = 1.0
    clamp_distortion: float = 0.5
    non_fail_reward: float = 0.0

    def __post_init__(self) -> None:
        for name in _NAMES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or not 0 <= v <= MAX_WEIGHT:
                raise ValueError(f"weights: {name} must be a number in [0, {MAX_WEIGHT:g}], got {v!r}")
        if not (self.fail_safe_rate or self.mean_cus or self.clamp_distortion):
            raise ValueError("weights: w1, w2 and w3 are all 0: such an L judges nothing (L = 0 for every config)")

    @classmethod
    def parse(cls, text: str) -> LossWeights:
        """From "w1,w2,w3" or "w1,w2,w3,w4" as given on the command line."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) not in (3, 4):
            raise ValueError(f"weights: {_EXPECTED}, got {text!r}")
        try:
            return cls(*(float(p) for p in parts))
        except ValueError:
            raise ValueError(f"weights: {_EXPECTED}, got {text!r}") from None

    @classmethod
    def from_list(cls, values: list[float] | tuple[float, ...]) -> LossWeights:
        """From the list as_list writes (three or four numbers)."""
        if len(values) not in (3, 4):
            raise ValueError(f"weights: {_EXPECTED}, got {list(values)!r}")
        return cls(*values)

    def as_list(self) -> list[float]:
        """[w1, w2, w3], and w4 after them only when it is not 0."""
        weights = [self.fail_safe_rate, self.mean_cus, self.clamp_distortion]
        return weights + [self.non_fail_reward] if self.non_fail_reward else weights

    def of(self, figures: Any) -> Any:
        """L of a set of decisions from its figures (figures.Figures: one config's, or arrays of many)."""
        level0, level1 = figures.level_rates[:2] if self.non_fail_reward else (None, None)
        return loss(figures.fail_safe_rate, figures.mean_cus, figures.clamp_distortion, self,
                    level0_rate=level0, level1_rate=level1)


def loss(fail_safe_rate, mean_cus, clamp_distortion, weights: LossWeights = LossWeights(), *,
         level0_rate=None, level1_rate=None):
    """L for one config (floats) or many (arrays of the metrics).

    The level-0 and level-1 rates are needed only when the weights have a w4."""
    value = (
        weights.fail_safe_rate * fail_safe_rate
        + weights.mean_cus * mean_cus
        + weights.clamp_distortion * clamp_distortion
    )
    if not weights.non_fail_reward:
        return value
    if level0_rate is None or level1_rate is None:
        raise ValueError("loss: the weight w4 needs the level-0 and level-1 rates")
    return value - weights.non_fail_reward * (level0_rate + 0.5 * level1_rate)

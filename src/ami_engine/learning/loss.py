"""The learning objective (docs/learning.md §3).

L = w1 * fail_safe_rate + w2 * mean_cus + w3 * clamp_distortion
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LossWeights:
    fail_safe_rate: float = 1.5
    mean_cus: float = 1.0
    clamp_distortion: float = 0.5

    def __post_init__(self) -> None:
        for name in ("fail_safe_rate", "mean_cus", "clamp_distortion"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ValueError(f"weights: {name} must be a finite number >= 0, got {v!r}")

    @classmethod
    def parse(cls, text: str) -> LossWeights:
        """From "w1,w2,w3" as given on the command line."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"weights: expected three numbers w1,w2,w3, got {text!r}")
        try:
            return cls(*(float(p) for p in parts))
        except ValueError:
            raise ValueError(f"weights: expected three numbers w1,w2,w3, got {text!r}") from None

    def as_list(self) -> list[float]:
        return [self.fail_safe_rate, self.mean_cus, self.clamp_distortion]


def loss(fail_safe_rate, mean_cus, clamp_distortion, weights: LossWeights = LossWeights()):
    """L for one config (floats) or many (arrays of the three metrics)."""
    return (
        weights.fail_safe_rate * fail_safe_rate
        + weights.mean_cus * mean_cus
        + weights.clamp_distortion * clamp_distortion
    )

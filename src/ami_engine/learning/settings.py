"""What a learning run is given (LearnSettings), and the error it raises on input it cannot learn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .bounds import DEFAULT_DELTA
from .constraints import CriticalFloor
from .loss import LossWeights

DEFAULT_BATCH = 32
MAX_GATE_TRIES = 3


class LearnError(ValueError):
    """The loop cannot run on this input (exit code 2)."""


@dataclass
class LearnSettings:
    strategy: str = "tpe"
    budget: int = 300
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    weights: LossWeights = field(default_factory=LossWeights)
    train_fraction: float = 0.8
    critical: CriticalFloor = field(default_factory=CriticalFloor)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    delta: float = DEFAULT_DELTA  # the suggestion's promise holds at 1 - delta

    @property
    def gate_delta(self) -> float:
        """The certificate's delta for each finalist the gate tries (Bonferroni)."""
        return self.delta / MAX_GATE_TRIES

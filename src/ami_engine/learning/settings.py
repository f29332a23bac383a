"""What a learning run is given (LearnSettings), and the error it raises on input it cannot learn from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .bounds import DEFAULT_DELTA
from .constraints import CriticalFloor
from .loss import LossWeights
from .policy_optimizer import Strategy, settle_strategy
from .racing import RUNG0_DECISIONS
from .shards import SHARD_DECISIONS

DEFAULT_BATCH = 32
DEFAULT_MEMORY = 4 << 30  # bytes learning may hold (--memory)
MIN_MEMORY = 1 << 20
MAX_GATE_TRIES = 3


class LearnError(InputError):
    """The loop cannot run on this input (exit code 2)."""


@dataclass
class LearnSettings:
    """How to search. `strategy` is a strategy's name (with `strategy_options`) or a
    strategy object (policy_optimizer.Strategy, seeded with `seed`); an object stands for
    its name and options, which the study's fingerprint and the suggestion record, and is
    kept as `strategy_object` to do the search."""

    strategy: str | Strategy = "tpe"
    budget: int = 300
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    weights: LossWeights = field(default_factory=LossWeights)
    train_fraction: float = 0.8
    critical: CriticalFloor = field(default_factory=CriticalFloor)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    delta: float = DEFAULT_DELTA  # the suggestion's promise holds at 1 - delta
    strategy_object: Strategy | None = field(default=None, repr=False, compare=False)
    memory: int = DEFAULT_MEMORY  # bytes; changes the speed, never the result
    rung0: int = RUNG0_DECISIONS  # decisions of the racing's first rung (racing.py)

    def __post_init__(self) -> None:
        self.strategy, self.strategy_options, self.strategy_object = settle_strategy(
            self.strategy, self.strategy_options, seed=self.seed, given=self.strategy_object)

    @property
    def shard_decisions(self) -> int:
        """Target decisions per shard: a rung 0 of at least a few shards."""
        return max(1, min(SHARD_DECISIONS, self.rung0 // 4))

    @property
    def gate_delta(self) -> float:
        """The certificate's delta for each finalist the gate tries (Bonferroni)."""
        return self.delta / MAX_GATE_TRIES

"""Fixed, seeded state sets used to judge a config: the same figures every time.

- critical set: the `critical` scenario, 4,000 states, seed 6001, 8 streams (critical floor);
- chaos suite: 24,000 `chaos` states from seeds 6101, 6102, 6103 (8,000 each) with 8, 5
  and 1 streams (invariants, determinism);
- profile suite: each scenario profile (safe, balanced, critical, chaos), 4,000 states,
  seed 6201 + its position, 8 streams (invariants, side-by-side figures); its `critical`
  entry is the critical set itself, so every critical figure refers to the same states.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .io.stateset import StateSet
from .scenario import CURRICULUM, generate

CRITICAL_SET = ("critical", 4000, 6001, 8)
CHAOS_SUITE = (("chaos", 8000, 6101, 8), ("chaos", 8000, 6102, 5), ("chaos", 8000, 6103, 1))
PROFILE_SUITE = tuple(CRITICAL_SET if name == "critical" else (name, 4000, 6201 + k, 8)
                      for k, name in enumerate(CURRICULUM))


@lru_cache(maxsize=16)
def _make(name: str, n: int, seed: int, streams: int) -> StateSet:
    return generate(name, n, seed, streams)


def critical_set() -> StateSet:
    return _make(*CRITICAL_SET)


def chaos_suite() -> StateSet:
    """The chaos suite as one state set (stream names made unique per seed)."""
    parts = [_make(*spec) for spec in CHAOS_SUITE]
    streams = [f"{spec[2]}:{s}" for spec, part in zip(CHAOS_SUITE, parts) for s in part.streams]
    ids = [i for part in parts for i in part.ids]
    return StateSet(
        values=np.concatenate([p.values for p in parts]),
        streams=streams,
        t=[None] * len(streams),
        ids=ids,
    )


def profile_suite() -> dict[str, StateSet]:
    return {spec[0]: _make(*spec) for spec in PROFILE_SUITE}

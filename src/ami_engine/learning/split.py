"""The seeded train / held-out split of the states (docs/learning.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.stateset import StateSet
from .settings import LearnError


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # positions in the data, input order kept
    held_out: np.ndarray
    method: str  # "by_stream" or "in_time"
    train_fraction: float
    seed: int

    def meta(self) -> dict[str, Any]:
        return {"method": self.method, "train_fraction": self.train_fraction, "seed": self.seed,
                "n_train": int(self.train.size), "n_heldout": int(self.held_out.size)}


def split_states(states: StateSet, seed: int, train_fraction: float = 0.8) -> Split:
    """docs/learning.md §2: with 5 or more streams whole streams go to one side (the seeded shuffle
    of streams whose train share comes nearest the fraction); with fewer, each stream's
    first `train_fraction` of decisions trains and the rest is held out."""
    if not 0.0 < train_fraction < 1.0:
        raise LearnError(f"split: train fraction must be in (0, 1), got {train_fraction}")
    codes, n_streams = states.stream_codes()
    n = len(states)
    if n < 2:
        raise LearnError(f"data: {n} state(s); at least 2 are needed for a train/held-out split")
    if n_streams >= 5:
        sizes = np.bincount(codes, minlength=n_streams)
        shuffled = np.random.default_rng(seed).permutation(n_streams)
        cum = np.cumsum(sizes[shuffled])[:-1]  # at least one stream each side
        k = int(np.argmin(np.abs(cum - train_fraction * n))) + 1
        in_train = np.zeros(n_streams, dtype=bool)
        in_train[shuffled[:k]] = True
        mask = in_train[codes]
        method = "by_stream"
    else:
        mask = np.zeros(n, dtype=bool)
        for s in range(n_streams):
            pos = np.flatnonzero(codes == s)
            mask[pos[: int(math.floor(train_fraction * pos.size + 0.5))]] = True
        method = "in_time"
        if mask.all() or not mask.any():
            raise LearnError("split: too few states to hold any out")
    # Positions as int32 where they fit (one per state: at tens of millions of states, half
    # the memory of int64).
    small = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    return Split(np.flatnonzero(mask).astype(small), np.flatnonzero(~mask).astype(small), method, train_fraction,
                 seed)

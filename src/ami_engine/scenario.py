"""Scenario generator: seeded state sets for Monte Carlo and chaos runs (docs/engine.md §15).

Draw order (fixed, so a seed always gives the same states): one NumPy PCG64 generator
seeded with `seed`; for each part of the scenario in order, one call
`rng.uniform(lo, hi, size=(n, 9))` with the columns in STATE_FIELDS order. States are laid
out stream after stream: `streams` streams of consecutive states (the first n % streams
streams get one state more), stream names `<profile>-<k>`, ids `s0`, `s1`, ... over the
whole set. `curriculum` is four equal parts safe, balanced, critical, chaos in that order
(the first n % 4 parts get one state more), each with its own streams.
"""

from __future__ import annotations

import os

import numpy as np

from .io.stateset import STATE_FIELDS, StateSet

# (lo, hi) per field, per profile.
PROFILES: dict[str, dict[str, tuple[float, float]]] = {
    "safe": {
        "compassion": (0.60, 0.95), "justice": (0.60, 0.95), "harm_sens": (0.05, 0.35),
        "risk": (0.10, 0.40), "physical": (0.30, 0.80), "social": (0.40, 0.90),
        "context": (0.30, 0.80), "responsibility": (0.50, 0.90), "empathy": (0.50, 0.95),
    },
    "balanced": {
        "compassion": (0.35, 0.85), "justice": (0.40, 0.85), "harm_sens": (0.15, 0.55),
        "risk": (0.25, 0.70), "physical": (0.20, 0.85), "social": (0.25, 0.80),
        "context": (0.20, 0.85), "responsibility": (0.30, 0.85), "empathy": (0.35, 0.85),
    },
    "critical": {
        "compassion": (0.20, 0.60), "justice": (0.15, 0.55), "harm_sens": (0.45, 0.90),
        "risk": (0.50, 0.95), "physical": (0.20, 0.90), "social": (0.20, 0.70),
        "context": (0.20, 0.85), "responsibility": (0.20, 0.70), "empathy": (0.20, 0.60),
    },
    "chaos": {name: (0.0, 1.0) for name in STATE_FIELDS},
}
CURRICULUM = ("safe", "balanced", "critical", "chaos")
SCENARIOS: tuple[str, ...] = (*CURRICULUM, "curriculum")
DEFAULT_STREAMS = 8
MAX_STREAMS = 1_000_000
# Memory held per state, rounded up from what was measured: about 200 bytes for `run`, and
# about 450 bytes for `learn` (the states, their shards and the masks and losses of the
# needless fail-safes and the gate; its score tables are bounded by --memory, not by the
# number of states). A scenario that cannot fit in this machine's memory is refused
# before any work.
RUN_BYTES_PER_STATE = 1024
LEARN_BYTES_PER_STATE = 1024


def physical_memory() -> int | None:
    """Bytes of memory of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_scenario_size(n: int, streams: int = DEFAULT_STREAMS, bytes_per_state: int = RUN_BYTES_PER_STATE) -> None:
    """ValueError naming `n` or `streams` when they are out of range, or when n states
    cannot fit in this machine's memory."""
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    if not 1 <= streams <= MAX_STREAMS:
        raise ValueError(f"streams: must be in [1, {MAX_STREAMS}], got {streams}")
    memory = physical_memory()
    if memory is not None and n * bytes_per_state > memory:
        raise ValueError(f"{n} states need about {n * bytes_per_state / 2**30:.0f} GiB of memory, more than "
                         f"the {memory / 2**30:.0f} GiB of this machine")


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def generate(name: str, n: int, seed: int, streams: int = DEFAULT_STREAMS) -> StateSet:
    """`n` states of scenario `name` in `streams` streams (per part, for the curriculum)."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario: unknown {name!r} (one of {', '.join(SCENARIOS)})")
    check_scenario_size(n, streams)
    rng = np.random.default_rng(seed)
    parts = list(zip(CURRICULUM, _split(n, 4))) if name == "curriculum" else [(name, n)]
    values = None if len(parts) == 1 else np.empty((n, len(STATE_FIELDS)))
    stream_names: list[str] = []
    for profile, size in parts:
        ranges = PROFILES[profile]
        lo = np.array([ranges[f][0] for f in STATE_FIELDS])
        hi = np.array([ranges[f][1] for f in STATE_FIELDS])
        block = rng.uniform(lo, hi, size=(size, len(STATE_FIELDS)))
        if values is None:  # one part: its block is the states (no copy of them all)
            values = block
        else:
            values[len(stream_names):len(stream_names) + size] = block
        del block
        for k, count in enumerate(_split(size, streams)):
            stream_names += [f"{profile}-{k}"] * count
    return StateSet(values=values, streams=stream_names, t=[None] * n, ids=[f"s{i}" for i in range(n)])

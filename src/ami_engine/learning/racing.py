"""The racing schedule: successive halving over nested shards of the training data.

Rung 0 is the first shards that cover RUNG0_DECISIONS decisions (all the training data
when it is smaller); each next rung takes the first shards covering ETA times the
decisions of the one before, and the top rung is all the training data. Every candidate
the strategy proposes is evaluated on rung 0; the best 1/ETA of those are evaluated on
rung 1, and so on; the finalists are evaluated on all the training data; then a bounded
local refinement (refine.py) runs on the top rung from the best feasible point.

The budget counts the cost of the search in evaluations on all the training data: an
evaluation on a rung of d decisions costs d / (training decisions). With one rung (data
of at most RUNG0_DECISIONS training decisions) that is one evaluation per candidate, as
without racing; with more data the same budget tries many more candidates, most of them
on a small sample. The refinement takes at most REFINE_SHARE of the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

RUNG0_DECISIONS = 20_000
ETA = 3
REFINE_ITERATIONS = 6
REFINE_SHARE = 0.3
MAX_CANDIDATES_PER_BUDGET = 10  # at most this many candidates per unit of budget
TOP_RUNG_MIN_GROWTH = 1.5  # a rung this close to all the data is merged into the top rung
VERSION = 1


@dataclass(frozen=True)
class Rung:
    shards: int  # the first `shards` shards
    decisions: int
    candidates: int  # candidates planned on this rung (fewer when fewer are feasible)


@dataclass(frozen=True)
class Schedule:
    rungs: tuple[Rung, ...]
    eta: int
    budget: int
    refine_batches: int
    refine_batch: int  # evaluations per refinement batch

    @property
    def top(self) -> int:
        return len(self.rungs) - 1

    @property
    def candidates(self) -> int:
        """Candidates the strategy proposes (each evaluated on rung 0)."""
        return self.rungs[0].candidates

    @property
    def refine(self) -> int:
        return self.refine_batches * self.refine_batch

    @property
    def evaluations(self) -> int:
        return sum(r.candidates for r in self.rungs) + self.refine

    @property
    def cost(self) -> float:
        """Evaluations on all the training data this schedule is worth."""
        n = self.rungs[-1].decisions
        return sum(r.candidates * r.decisions / n for r in self.rungs) + self.refine

    def meta(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "budget": self.budget,
            "budget_unit": "evaluations on all the training data",
            "rungs": [{"rung": i, "shards": r.shards, "decisions": r.decisions, "candidates": r.candidates}
                      for i, r in enumerate(self.rungs)],
            "refine_evaluations": self.refine,
            "evaluations": self.evaluations,
            "cost": round(self.cost, 6),
        }


def describe(racing: dict[str, Any]) -> list[str]:
    """A schedule's [meta] entry in a few lines of at most 80 columns, for the terminal."""
    rungs = racing.get("rungs", [])
    lines = [f"Racing: {len(rungs)} rung(s), eta {racing.get('eta')}, budget {racing.get('budget')} = the cost of "
             f"{racing.get('budget')} evaluations on all the training data"]
    done = racing.get("evaluated", [])
    for r in rungs:
        k = r["rung"]
        ran = f" ({done[k]:,} evaluated)" if k < len(done) and done[k] != r["candidates"] else ""
        lines.append(f"  rung {k}: {r['shards']} shard(s), {r['decisions']:,} decisions, "
                     f"{r['candidates']:,} candidates{ran}")
    if racing.get("refine_evaluations"):
        lines.append(f"  then {racing['refine_evaluations']} evaluations refining the best on the top rung")
    return lines


def rung_shards(sizes: np.ndarray, eta: int = ETA, rung0: int = RUNG0_DECISIONS) -> list[int]:
    """Shard counts of the nested rungs, the last one all shards."""
    if len(sizes) == 0:
        raise ValueError("sizes: at least one shard is needed")
    cum = np.cumsum(sizes)
    total = int(cum[-1])
    counts: list[int] = []
    target = float(rung0)
    while not counts or counts[-1] < len(sizes):
        m = int(np.searchsorted(cum, min(target, total))) + 1
        m = min(max(m, counts[-1] + 1 if counts else 1), len(sizes))
        counts.append(m)
        target = float(cum[m - 1]) * eta
    if len(counts) > 1 and cum[counts[-2] - 1] * TOP_RUNG_MIN_GROWTH > total:
        del counts[-2]
    return counts


def plan(sizes: Any, budget: int, dim: int, *, eta: int = ETA, rung0: int = RUNG0_DECISIONS) -> Schedule:
    """The schedule for shards of these sizes (in shard order) and a budget."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if budget < 1:
        raise ValueError(f"budget: expected an integer >= 1, got {budget!r}")
    counts = rung_shards(sizes, eta, rung0)
    cum = np.cumsum(sizes)
    decisions = [int(cum[m - 1]) for m in counts]
    refine_batch = 2 * dim
    refine_batches = min(REFINE_ITERATIONS, int(budget * REFINE_SHARE) // refine_batch)
    left = budget - refine_batches * refine_batch
    total = decisions[-1]

    def per_rung(n0: int) -> list[int]:
        return [n0] + [max(1, math.ceil(n0 / eta**r)) for r in range(1, len(counts))]

    def cost(n0: int) -> float:
        return sum(c * d / total for c, d in zip(per_rung(n0), decisions, strict=True))

    lo, hi = 1, max(1, MAX_CANDIDATES_PER_BUDGET * budget)
    while lo < hi:  # the most candidates whose cost fits what is left of the budget
        mid = (lo + hi + 1) // 2
        if cost(mid) <= left + 1e-9:
            lo = mid
        else:
            hi = mid - 1
    rungs = tuple(Rung(m, d, c) for m, d, c in zip(counts, decisions, per_rung(lo), strict=True))
    return Schedule(rungs, eta, budget, refine_batches, refine_batch)

"""The racing schedule: successive halving over nested shards of the training data.

Rung 0 is the first shards that cover RUNG0_DECISIONS decisions (all the training data
when it is smaller); each next rung takes the first shards covering ETA times the
decisions of the one before, and the top rung is all the training data.

The budget counts evaluations at the bottom of the race, as it did before racing: the
strategy proposes budget - R candidates, each evaluated on rung 0, and a bounded local
refinement (refine.py) of R = 6 x 2 x 7 = 84 evaluations (at most REFINE_SHARE of the
budget) runs on the refinement rung, REFINE_RUNG (or the top rung when there are fewer).
Up to that rung the best 1/ETA of each rung are promoted to the next; above it the
candidates shrink by ETA**2 per rung, to no fewer than FINALISTS, so that each larger
rung costs less than the one below it, and a rung that would promote every candidate it
evaluates is left out. The finalists are evaluated on all the training data.

With one rung (data of at most RUNG0_DECISIONS training decisions) this is the search
without racing: every candidate and the refinement on all of it. With more data the
cost grows with the number of rungs (the logarithm of the data) and, on the top rung,
with FINALISTS evaluations on all of it.
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
REFINE_RUNG = 1  # the rung the refinement runs on (the top one when there are fewer)
FINALISTS = 3  # the fewest candidates on a rung above the refinement's
TOP_RUNG_MIN_GROWTH = 1.5  # a rung this close to all the data is merged into the top rung
VERSION = 2


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
    refine_rung: int

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
        refine = self.refine * self.rungs[self.refine_rung].decisions / n
        return sum(r.candidates * r.decisions / n for r in self.rungs) + refine

    def meta(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "eta": self.eta,
            "budget": self.budget,
            "budget_unit": "candidates on rung 0 and refinement evaluations",
            "rungs": [{"rung": i, "shards": r.shards, "decisions": r.decisions, "candidates": r.candidates}
                      for i, r in enumerate(self.rungs)],
            "refine_evaluations": self.refine,
            "refine_rung": self.refine_rung,
            "finalists": self.rungs[-1].candidates,
            "evaluations": self.evaluations,
            "cost": round(self.cost, 6),
        }


def describe(racing: dict[str, Any]) -> list[str]:
    """A schedule's [meta] entry in a few lines of at most 80 columns, for the terminal."""
    rungs = racing.get("rungs", [])
    refine, where = racing.get("refine_evaluations", 0), racing.get("refine_rung", len(rungs) - 1)
    lines = [f"Racing: {len(rungs)} rung(s), eta {racing.get('eta')}, budget {racing.get('budget')} = "
             f"{racing.get('budget', 0) - refine} candidates + {refine} refinement evaluations"]
    done = racing.get("evaluated", [])
    for r in rungs:
        k = r["rung"]
        planned = r["candidates"] + (refine if k == where else 0)
        ran = f" ({done[k]:,} evaluated)" if k < len(done) and done[k] != planned else ""
        also = f" + {refine} refining the best" if refine and k == where else ""
        lines.append(f"  rung {k}: {r['shards']} shard(s), {r['decisions']:,} decisions, "
                     f"{r['candidates']:,} candidates{also}{ran}")
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
    refine_rung = min(REFINE_RUNG, len(counts) - 1)
    per_rung = [max(1, budget - refine_batches * refine_batch)]
    for r in range(1, len(counts)):
        before = per_rung[-1]
        if r <= refine_rung:
            per_rung.append(max(1, math.ceil(before / eta)))
        else:
            pool = before + (refine_batches * refine_batch if r - 1 == refine_rung else 0)
            per_rung.append(min(pool, max(FINALISTS, math.ceil(before / eta**2))))
    top = len(counts) - 1
    # A rung above the refinement's that promotes every candidate it evaluates decides nothing.
    keep = [r for r in range(len(counts)) if r <= refine_rung or r == top or per_rung[r + 1] < per_rung[r]]
    rungs = tuple(Rung(counts[r], decisions[r], per_rung[r]) for r in keep)
    return Schedule(rungs, eta, budget, refine_batches, refine_batch, refine_rung)

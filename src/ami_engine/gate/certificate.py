"""The gate's certificate (check 7): the held-out loss and the critical figures as
one-sided confidence bounds at 1 - delta (learning/bounds.py), so that a promise holds on
decisions not yet seen.

It passes when the rate bound keeps the critical floor, the H bound keeps the ceiling and
the loss bound is at least -LOSS_TOLERANCE. Without held-out data (a config that names
none) the loss part is not applicable, as in the held-out check, and only the critical
part is certified. When a bound misses only because the data are too few, the check
says "insufficient evidence" and how many decisions would certify the observed effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import EngineSums, run
from ..engine.parts import PART_DECISIONS, PartsRun
from ..figures import FAIL_SAFE_LEVEL
from ..learning.bounds import (
    BOOTSTRAP_SEED,
    DEFAULT_DELTA,
    N_RESAMPLES,
    block_length,
    check_delta,
    fail_safe_rate_lower,
    loss_reduction_bound,
    mean_upper,
    promise,
)
from ..learning.constraints import critical_tallies
from ..learning.feedback_metrics import clamp_distortions
from ..learning.loss import loss
from ..suites import critical_set

LOSS_TOLERANCE = 0.01  # the suggestion may be at most 1% worse than the baseline, with confidence
NA = "n/a"
_MAX_NEEDED = 10**9


# ---------------------------------------------------------------- how much evidence


def _smallest_n(ok, start: int) -> int | None:
    """Smallest n >= start with ok(n), for ok monotone in n; None beyond _MAX_NEEDED."""
    hi = max(start, 1)
    while not ok(hi):
        hi *= 2
        if hi > _MAX_NEEDED:
            return None
    lo = max(start, 1) if hi == max(start, 1) else hi // 2
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def states_needed_for_rate(rate: float, n: int, floor: float, delta: float) -> int | None:
    """Critical states that would put the Clopper-Pearson bound at `floor`, at the rate seen."""
    if rate <= floor:
        return None
    return _smallest_n(lambda m: float(fail_safe_rate_lower(rate * m, m, delta)) >= floor, n)


def states_needed_for_mean(mean: float, n: int, ceiling: float, delta: float) -> int | None:
    if mean >= ceiling:
        return None
    return _smallest_n(lambda m: float(mean_upper(mean * m, m, delta)) <= ceiling, n)


def decisions_needed_for_loss(point: float, lower: float, n: int) -> int | None:
    """Held-out decisions that would lift the loss bound to -LOSS_TOLERANCE at the observed
    reduction, the bound's distance to it shrinking as 1 / sqrt(n)."""
    if point <= -LOSS_TOLERANCE:
        return None
    needed = n * ((point - lower) / (point + LOSS_TOLERANCE)) ** 2
    # A bound pushed to -inf (a delta so small no data could meet it) asks for no finite number.
    return int(math.ceil(needed)) if needed <= _MAX_NEEDED else None


# ------------------------------------------------------------------- the certificate


@dataclass(frozen=True)
class Certificate:
    """The three bounds, what they are held to, and the verdict."""

    delta: float
    n_heldout: int | None
    n_critical: int
    loss_reduction: float | None
    loss_reduction_lower: float | None
    critical_fail_safe_rate: float
    critical_fail_safe_rate_lower: float
    critical_mean_H: float
    critical_mean_H_upper: float
    floor: float
    ceiling: float
    floor_on: bool = True
    block: int = 0

    @property
    def loss_ok(self) -> bool:
        return self.loss_reduction_lower is None or self.loss_reduction_lower >= -LOSS_TOLERANCE

    @property
    def rate_ok(self) -> bool:
        return not self.floor_on or self.critical_fail_safe_rate_lower >= self.floor

    @property
    def h_ok(self) -> bool:
        return not self.floor_on or self.critical_mean_H_upper <= self.ceiling

    @property
    def passed(self) -> bool:
        return self.loss_ok and self.rate_ok and self.h_ok

    def figure(self) -> dict[str, Any]:
        """Plain data (TOML-ready: "n/a" where a part does not apply)."""

        def value(x):
            return NA if x is None else x

        return {
            "delta": self.delta, "n_heldout": value(self.n_heldout), "n_critical": self.n_critical,
            "loss_reduction": value(self.loss_reduction), "loss_reduction_lower": value(self.loss_reduction_lower),
            "critical_fail_safe_rate": self.critical_fail_safe_rate,
            "critical_fail_safe_rate_lower": self.critical_fail_safe_rate_lower,
            "critical_mean_H": self.critical_mean_H, "critical_mean_H_upper": self.critical_mean_H_upper,
        }

    def threshold(self) -> str:
        off = "" if self.floor_on else " (critical part off: factor 0)"
        return (f"at {1 - self.delta:.4g} confidence: loss reduction >= {-LOSS_TOLERANCE:g}; fail-safe rate >= "
                f"{self.floor:.6g}; mean H <= {self.ceiling:.6g}{off}")

    def shortfalls(self) -> list[str]:
        """Why it fails, each part in one sentence, with the evidence that would certify it."""
        out = []
        if not self.loss_ok:
            need = decisions_needed_for_loss(self.loss_reduction, self.loss_reduction_lower, self.n_heldout)
            out.append(_shortfall(
                f"loss reduction bound {self.loss_reduction_lower:+.2%} < {-LOSS_TOLERANCE:+.0%}",
                f"observed reduction {self.loss_reduction:+.2%}", need, "held-out decisions", self.n_heldout))
        if not self.rate_ok:
            need = states_needed_for_rate(self.critical_fail_safe_rate, self.n_critical, self.floor, self.delta)
            out.append(_shortfall(
                f"critical fail-safe rate bound {self.critical_fail_safe_rate_lower:.4f} < floor {self.floor:.4f}",
                f"observed rate {self.critical_fail_safe_rate:.4f}", need, "critical states", self.n_critical))
        if not self.h_ok:
            need = states_needed_for_mean(self.critical_mean_H, self.n_critical, self.ceiling, self.delta)
            out.append(_shortfall(
                f"critical mean H bound {self.critical_mean_H_upper:.4f} > ceiling {self.ceiling:.4f}",
                f"observed mean H {self.critical_mean_H:.4f}", need, "critical states", self.n_critical))
        return out

    def promise(self) -> str:
        return promise(self.figure())

    def detail(self) -> str:
        heldout = (f"{self.n_heldout} held-out decisions, paired, circular block bootstrap "
                   f"({self.block}-decision blocks within streams, {N_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}): "
                   f"reduction {self.loss_reduction:+.2%}, lower bound {self.loss_reduction_lower:+.2%}"
                   if self.loss_reduction_lower is not None else
                   "no held-out data: the loss part is not applicable")
        critical = (f"{self.n_critical} critical states: fail-safe rate {self.critical_fail_safe_rate:.4f}, "
                    f"Clopper-Pearson lower bound {self.critical_fail_safe_rate_lower:.4f}; mean H "
                    f"{self.critical_mean_H:.4f}, Chernoff-Hoeffding upper bound {self.critical_mean_H_upper:.4f}")
        head = self.promise() if self.passed else "; ".join(self.shortfalls())
        return f"{head}. {heldout}; {critical}"


def _shortfall(what: str, seen: str, need: int | None, unit: str, have: int) -> str:
    if need is None:
        return f"{what} ({seen}: more data would not certify it)"
    return (f"insufficient evidence: {what} ({seen}); at the observed effect about {need:,} {unit} "
            f"(here {have:,}) would certify it")


def certify(config, baseline, *, held_out, weights, critical, delta: float = DEFAULT_DELTA,
            decided: HeldOutDecisions | None = None) -> Certificate:
    """The certificate of `config` against `baseline` (held_out: a StateSet or None;
    decided: decide_held_out(held_out, (config, baseline), weights), when the caller has it)."""
    delta = check_delta(delta)
    n_heldout = point = lower = None
    block = block_length(max(int(config["CUS_MEAN_WINDOW"]), int(baseline["CUS_MEAN_WINDOW"])))
    if held_out is not None:
        decided = decided or decide_held_out(held_out, (config, baseline), weights)
        ours, theirs = decided.losses
        codes = held_out.stream_codes()[0]
        n_heldout = len(held_out)
        if theirs.sum() > 0:
            point, lower = loss_reduction_bound(theirs, ours, codes, block, delta)
    crit = critical_set()
    (n, n_l2, sum_h), *references = (critical_tallies(run(crit, c)) for c in (config, *critical.references(baseline)))
    floor = critical.factor * max(l2 / m for m, l2, _ in references)
    ceiling = min(h / m for m, _, h in references) + critical.margin
    return Certificate(
        delta=delta, n_heldout=n_heldout, n_critical=n, loss_reduction=point, loss_reduction_lower=lower,
        critical_fail_safe_rate=n_l2 / n, critical_fail_safe_rate_lower=float(fail_safe_rate_lower(n_l2, n, delta)),
        critical_mean_H=sum_h / n, critical_mean_H_upper=float(mean_upper(sum_h, n, delta)),
        floor=float(floor), ceiling=float(ceiling), floor_on=critical.factor != 0, block=block)


@dataclass(frozen=True)
class HeldOutDecisions:
    """What the gate needs of the configs' decisions on the held-out data, from one run of
    the engine over it: each config's decision_losses, and its sums (the bytes of
    engine.direct_sums over the held-out states)."""

    losses: list[np.ndarray]
    sums: EngineSums


def decide_held_out(states, configs, weights, *, part_decisions: int | None = None,
                    observe=None) -> HeldOutDecisions:
    """The configs decided over the held-out states in parts of whole streams
    (engine/parts.py; about PART_DECISIONS each unless given): the values of one run over
    all of them, without their full columns at once. `observe(positions, columns)`, when
    given, sees each part's positions and the configs' columns on it."""
    out = [np.empty(len(states)) for _ in configs]
    decided = PartsRun(states, configs, PART_DECISIONS if part_decisions is None else part_decisions)
    for pos, columns in decided:
        for losses, cols in zip(out, columns, strict=True):
            losses[pos] = decision_losses(cols, weights)
        if observe is not None:
            observe(pos, columns)
    return HeldOutDecisions(out, decided.sums())


def decision_losses(cols, weights) -> np.ndarray:
    """Each decision's contribution to L: L of a set of decisions is the mean of these."""
    distortion = clamp_distortions(cols.soft_clamp, cols.raw_action, cols.final_action)
    return loss((cols.level == FAIL_SAFE_LEVEL).astype(float), cols.cus, distortion, weights,
                level0_rate=(cols.level == 0).astype(float), level1_rate=(cols.level == 1).astype(float))

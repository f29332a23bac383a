"""The gate's certificate (check 7): the held-out loss and the critical figures as
one-sided confidence bounds at 1 - delta, so that a promise holds on decisions not yet seen.

Three bounds, each at confidence 1 - delta:

- loss_reduction_lower: a lower bound of 1 - L_suggestion / L_baseline on decisions like
  the held-out ones. Both configs decide the same held-out decisions; each decision's
  contribution to L (w1 [level 2] + w2 cus + w3 clamp distortion) is kept in pairs, and
  the pairs are resampled in blocks of consecutive decisions within a stream (a circular
  block bootstrap, Politis & Romano 1992). A block spans BLOCK_WINDOWS drift windows
  (CUS_MEAN_WINDOW decisions each), well beyond the reach of the drift rule, so the
  dependence that rule creates between neighbouring decisions stays inside blocks (a
  stream too short for MIN_BLOCKS such blocks gets shorter ones). The circular blocks of
  a stream of n decisions spread (n - b) / n less than fresh data would, so each stream's
  resampled deviations are widened by sqrt(n / (n - b)); without that the bound held in
  only about 91% of samples at 95%. The bound is the point estimate less the resampled
  reductions' standard deviation times a Student t quantile with (blocks - 1) degrees of
  freedom (the delta-quantile itself gave the same coverage); the resampling seed is
  fixed, so the gate gives the same figure every time. Coverage is measured in
  tests/test_certificate.py and benchmarks/bench_certificate.py.
- critical_fail_safe_rate_lower: the exact one-sided Clopper-Pearson lower bound of the
  fail-safe rate on the critical set.
- critical_mean_H_upper: the Chernoff-Hoeffding bound in its relative-entropy form
  (Hoeffding 1963, theorem 1) on the mean H of the final actions there: valid for any
  values in [0, 1], it needs only their mean, so the search can apply it to the sums of
  thousands of candidates exactly as the gate applies it to one.

The critical bounds treat the critical set's decisions as independent draws (its states
are; the drift rule links a decision to the nine before it in its stream, which the
coverage benchmark shows does not break the bounds). The search applies the same two
critical bounds as its constraint (constraints.CriticalFloor.certified), so a learned
suggestion does not fail here for sitting on a point estimate.

It passes when the rate bound keeps the critical floor, the H bound keeps the ceiling and
the loss bound is at least -LOSS_TOLERANCE. Without held-out data (a config that names
none) the loss part is not applicable, as in the held-out check, and only the critical
part is certified. When a bound misses only because the data are too few, the check
says "insufficient evidence" and how many decisions would certify the observed effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta
from scipy.stats import t as student_t

DEFAULT_DELTA = 0.05
LOSS_TOLERANCE = 0.01  # the suggestion may be at most 1% worse than the baseline, with confidence
BLOCK_WINDOWS = 5  # a bootstrap block spans this many drift windows
MIN_BLOCKS = 5  # ... and a stream holds at least this many blocks (shorter blocks in short streams)
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 13
NA = "n/a"
_MAX_NEEDED = 10**9


def check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
        raise ValueError(f"delta: must be a number in (0, 1), got {delta!r}")
    return float(delta)


# ------------------------------------------------------------------------- the bounds


def fail_safe_rate_lower(n_fail_safe: Any, n: Any, delta: float) -> np.ndarray:
    """Exact one-sided Clopper-Pearson lower bound of a rate from k successes of n."""
    k, n = np.asarray(n_fail_safe, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        lower = beta.ppf(delta, k, n - k + 1.0)
    return np.where(k <= 0, 0.0, lower)


def _bernoulli_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, 0.0, 1.0)
    q = np.clip(q, 1e-300, 1.0 - 1e-16)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return a + b


def mean_upper(total: Any, n: Any, delta: float) -> np.ndarray:
    """Upper bound of the mean of i.i.d. values in [0, 1] from their sum over n: the largest q
    with n kl(mean, q) <= log(1/delta) (Chernoff-Hoeffding, relative-entropy form)."""
    n = np.asarray(n, dtype=float)
    mean = np.clip(np.asarray(total, dtype=float) / n, 0.0, 1.0)
    budget = math.log(1.0 / delta) / n
    lo, hi = mean.copy(), np.ones_like(mean)
    for _ in range(60):  # bisection: kl(mean, q) grows with q above the mean
        mid = (lo + hi) / 2
        inside = _bernoulli_kl(mean, mid) <= budget
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return hi


def block_length(window: int) -> int:
    return BLOCK_WINDOWS * max(1, int(window))


def loss_reduction_bound(base_losses: np.ndarray, sugg_losses: np.ndarray, stream_codes: np.ndarray,
                         block: int, delta: float, resamples: int = N_RESAMPLES,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """(1 - sum(sugg) / sum(base), its lower bound at 1 - delta) by a circular block
    bootstrap of the paired per-decision losses within each stream (input order kept)."""
    base_losses, sugg_losses = np.asarray(base_losses, float), np.asarray(sugg_losses, float)
    point = 1.0 - sugg_losses.sum() / base_losses.sum()
    rng = np.random.default_rng(seed)
    tot_b, tot_s = np.zeros(resamples), np.zeros(resamples)
    n_blocks = 0
    for s in range(int(stream_codes.max()) + 1 if stream_codes.size else 0):
        pos = np.flatnonzero(stream_codes == s)
        if not pos.size:
            continue
        b = max(1, min(block, pos.size // MIN_BLOCKS))
        k = -(-pos.size // b)
        n_blocks += k
        starts = rng.integers(0, pos.size, size=(resamples, k))
        # The circular blocks of one stream are b of its n values: their sums vary by a share
        # (n - b) / n less than those of fresh data would, so the deviations are widened back.
        widen = math.sqrt(pos.size / (pos.size - b)) if pos.size > b else 1.0
        for losses, tot in ((base_losses, tot_b), (sugg_losses, tot_s)):
            x = losses[pos]
            prefix = np.concatenate([[0.0], np.cumsum(np.concatenate([x, x[:b - 1]]))])
            sums = (prefix[starts + b] - prefix[starts]).sum(axis=1)
            expected = k * b * x.mean()
            tot += expected + (sums - expected) * widen
    reductions = 1.0 - tot_s / tot_b
    # The bootstrap's standard error with a Student t quantile of (blocks - 1) degrees of
    # freedom: few blocks estimate the spread loosely (1.66 at 100 blocks, 1.83 at 10).
    t = student_t.ppf(1 - delta, max(1, n_blocks - 1))
    return float(point), float(point - t * reductions.std(ddof=1))


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
    width = point - lower
    return int(math.ceil(n * (width / (point + LOSS_TOLERANCE)) ** 2))


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


def promise(figure: Mapping[str, Any], family_delta: float | None = None) -> str:
    """A certificate's figure in words (the sentence the summary and the report open with).
    `family_delta`: when the bounds were taken at a Bonferroni share of it (several
    finalists tried), the confidence the promise keeps whichever finalist passed."""
    delta = float(figure["delta"] if family_delta is None else family_delta)
    confidence = f"{1 - delta:.0%}" if round((1 - delta) * 100, 6).is_integer() else f"{1 - delta:.2%}"
    x = figure["loss_reduction_lower"]
    if isinstance(x, (int, float)):
        change = f"at least {x:.1%} lower than" if x > 0 else \
            "no higher than" if x == 0 else f"at most {-x:.1%} higher than"
        loss_part = f"on decisions like the held-out ones, the loss is {change} the baseline's"
    else:
        loss_part = "without held-out data nothing is promised about the loss"
    return (f"with {confidence} confidence, {loss_part}; on critical states it still fails safe at least "
            f"{float(figure['critical_fail_safe_rate_lower']):.1%} of the time")


def _shortfall(what: str, seen: str, need: int | None, unit: str, have: int) -> str:
    if need is None:
        return f"{what} ({seen}: more data would not certify it)"
    return (f"insufficient evidence: {what} ({seen}); at the observed effect about {need:,} {unit} "
            f"(here {have:,}) would certify it")


def certify(config, baseline, *, held_out, weights, critical, delta: float = DEFAULT_DELTA) -> Certificate:
    """The certificate of `config` against `baseline` (held_out: a StateSet or None)."""
    from ..engine import run
    from ..suites import critical_set
    from .constraints import critical_tallies

    delta = check_delta(delta)
    n_heldout = point = lower = None
    block = block_length(max(int(config["CUS_MEAN_WINDOW"]), int(baseline["CUS_MEAN_WINDOW"])))
    if held_out is not None:
        ours, theirs = (decision_losses(run(held_out, c), weights) for c in (config, baseline))
        codes, _ = held_out.stream_codes()
        n_heldout = len(held_out)
        if theirs.sum() > 0:
            point, lower = loss_reduction_bound(theirs, ours, codes, block, delta)
    crit = critical_set()
    (n, n_l2, sum_h), (base_n, base_l2, base_h) = (critical_tallies(run(crit, c)) for c in (config, baseline))
    floor, ceiling = critical.factor * base_l2 / base_n, base_h / base_n + critical.margin
    return Certificate(
        delta=delta, n_heldout=n_heldout, n_critical=n, loss_reduction=point, loss_reduction_lower=lower,
        critical_fail_safe_rate=n_l2 / n, critical_fail_safe_rate_lower=float(fail_safe_rate_lower(n_l2, n, delta)),
        critical_mean_H=sum_h / n, critical_mean_H_upper=float(mean_upper(sum_h, n, delta)),
        floor=float(floor), ceiling=float(ceiling), floor_on=critical.factor != 0, block=block)


def decision_losses(cols, weights) -> np.ndarray:
    """Each decision's contribution to L: L of a set of decisions is the mean of these."""
    from ..learning.feedback_metrics import FAIL_SAFE_LEVEL, clamp_distortions
    from ..learning.loss import loss

    distortion = clamp_distortions(cols.soft_clamp, cols.raw_action, cols.final_action)
    return loss((cols.level == FAIL_SAFE_LEVEL).astype(float), cols.cus, distortion, weights,
                level0_rate=(cols.level == 0).astype(float), level1_rate=(cols.level == 1).astype(float))

"""Confidence bounds at 1 - delta on the figures of a set of decisions: what the gate's
certificate (gate/certificate.py) and the search's critical constraint (constraints.py)
hold a config to, so that a promise holds on decisions not yet seen.

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
suggestion does not fail the gate's certificate for sitting on a point estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.special import betaincinv, stdtrit

DEFAULT_DELTA = 0.05
BLOCK_WINDOWS = 5  # a bootstrap block spans this many drift windows
MIN_BLOCKS = 5  # ... and a stream holds at least this many blocks (shorter blocks in short streams)
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 13


def check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 < delta < 1.0:
        raise ValueError(f"delta: must be a number in (0, 1), got {delta!r}")
    return float(delta)


# ------------------------------------------------------------------------- the bounds


def fail_safe_rate_lower(n_fail_safe: Any, n: Any, delta: float) -> np.ndarray:
    """Exact one-sided Clopper-Pearson lower bound of a rate from k successes of n."""
    k, n = np.asarray(n_fail_safe, dtype=float), np.asarray(n, dtype=float)
    lower = betaincinv(k, n - k + 1.0, delta)  # the Beta(k, n - k + 1) quantile at delta; NaN at k = 0
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
    t = stdtrit(max(1, n_blocks - 1), 1 - delta)
    return float(point), float(point - t * reductions.std(ddof=1))


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

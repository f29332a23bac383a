"""The gate's certificate: confidence bounds that hold on data not yet seen (gate check 7)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta

from ami_engine.config import load_config
from ami_engine.engine import ScoreTable, run
from ami_engine.gate import CriticalFloor
from ami_engine.gate.certificate import (
    LOSS_TOLERANCE,
    Certificate,
    block_length,
    certify,
    decision_losses,
    fail_safe_rate_lower,
    loss_reduction_bound,
    mean_upper,
    promise,
)
from ami_engine.gate.checks import check_certificate
from ami_engine.learning.loss import LossWeights
from ami_engine.learning.offline_loop import data_from_scenario, split_states
from ami_engine.scenario import generate
from ami_engine.suites import critical_set

BASE = load_config("base")
W = LossWeights()
# A learned-looking config (what `learn` suggests on chaos data) and the most aggressive one.
LEARNED = BASE.replace(J_MIN=0.724, H_MAX=0.189, SOFT_CLAMP_ALPHA=0.576, SOFT_CLAMP_BETA=0.345,
                       SOFT_CLAMP_GAMMA=0.367, DELTA_CUS_THRESHOLD=0.245, CUS_MEAN_THRESHOLD=0.734)
AGGRESSIVE = BASE.replace(J_MIN=0.5, H_MAX=0.5, DELTA_CUS_THRESHOLD=0.25, CUS_MEAN_THRESHOLD=0.85)
DELTA = 0.05


@pytest.fixture(scope="module")
def held_out():
    data = data_from_scenario("chaos", 20000, 1)
    return data.states.subset(split_states(data.states, 1).held_out)


def test_clopper_pearson_is_the_exact_beta_quantile():
    k, n = np.array([0, 1, 250, 4000]), np.array([4000, 4000, 4000, 4000])
    lower = fail_safe_rate_lower(k, n, DELTA)
    assert lower[0] == 0.0
    assert lower[1:] == pytest.approx(beta.ppf(DELTA, k[1:], n[1:] - k[1:] + 1))
    assert np.all(lower <= k / n)


def test_the_mean_bound_is_above_the_mean_and_tighter_than_hoeffding():
    n = 4000
    for mean in (0.0, 0.006, 0.3, 0.99):
        upper = float(mean_upper(mean * n, n, DELTA))
        hoeffding = mean + np.sqrt(np.log(1 / DELTA) / (2 * n))
        assert mean <= upper <= min(1.0, hoeffding) + 1e-12


def test_per_decision_losses_average_to_the_engines_L(held_out):
    for config in (BASE, LEARNED):
        sums = ScoreTable(held_out, BASE).evaluate([config])[0]
        assert decision_losses(run(held_out, config), W).mean() == pytest.approx(sums.loss(W))


def test_a_config_against_itself_is_certified_with_a_bound_of_zero(held_out):
    check = check_certificate(BASE, BASE, held_out, W, CriticalFloor(), DELTA)
    assert check.name == "certificate" and check.passed
    assert check.figure["loss_reduction"] == 0.0 and check.figure["loss_reduction_lower"] == 0.0
    for key in ("delta", "n_heldout", "n_critical", "critical_fail_safe_rate_lower", "critical_mean_H_upper"):
        assert key in check.figure


def test_a_learned_config_is_certified_and_the_bound_is_not_vacuous(held_out):
    cert = certify(LEARNED, BASE, held_out=held_out, weights=W, critical=CriticalFloor(), delta=DELTA)
    assert cert.passed
    assert cert.n_heldout == 5000 and cert.loss_reduction > 0.4
    assert cert.loss_reduction_lower >= 0.6 * cert.loss_reduction
    assert cert.critical_fail_safe_rate_lower < cert.critical_fail_safe_rate
    assert cert.critical_mean_H_upper > cert.critical_mean_H
    assert cert.promise().startswith("with 95% confidence, on decisions like the held-out ones, the loss is at "
                                     "least ")


def test_an_aggressive_config_is_rejected_by_the_certificate(held_out):
    check = check_certificate(AGGRESSIVE, BASE, held_out, W, CriticalFloor(), DELTA)
    assert not check.passed
    assert check.figure["critical_fail_safe_rate_lower"] < 0.25 * 0.967
    assert "critical fail-safe rate bound" in check.detail


def test_the_gate_is_deterministic(held_out):
    one = certify(LEARNED, BASE, held_out=held_out, weights=W, critical=CriticalFloor(), delta=DELTA)
    two = certify(LEARNED, BASE, held_out=held_out, weights=W, critical=CriticalFloor(), delta=DELTA)
    assert one == two


def test_without_heldout_data_only_the_critical_part_is_certified():
    cert = certify(LEARNED, BASE, held_out=None, weights=W, critical=CriticalFloor(), delta=DELTA)
    assert cert.passed and cert.figure()["loss_reduction_lower"] == "n/a"
    assert "no held-out data: the loss part is not applicable" in cert.detail()


def _cert(**changes) -> Certificate:
    base = dict(delta=DELTA, n_heldout=5000, n_critical=4000, loss_reduction=0.5, loss_reduction_lower=0.49,
                critical_fail_safe_rate=0.3, critical_fail_safe_rate_lower=0.29, critical_mean_H=0.005,
                critical_mean_H_upper=0.009, floor=0.24175, ceiling=0.02)
    return Certificate(**{**base, **changes})


def test_too_little_critical_evidence_says_so_with_the_states_needed():
    rate, n, floor = 0.25, 4000, 0.24175
    cert = _cert(critical_fail_safe_rate=rate, critical_fail_safe_rate_lower=float(fail_safe_rate_lower(rate * n, n,
                                                                                                       DELTA)))
    assert not cert.passed
    (text,) = cert.shortfalls()
    assert text.startswith("insufficient evidence")
    need = int(text.split("about ")[1].split(" critical states")[0].replace(",", ""))
    assert fail_safe_rate_lower(rate * need, need, DELTA) >= floor > fail_safe_rate_lower(rate * (need - 1),
                                                                                         need - 1, DELTA)


def test_too_little_heldout_evidence_says_so_with_the_decisions_needed():
    cert = _cert(loss_reduction=0.05, loss_reduction_lower=-0.05, n_heldout=1000)
    (text,) = cert.shortfalls()
    assert "insufficient evidence" in text and "about 2,778 held-out decisions (here 1,000)" in text


def test_a_suggestion_worse_than_the_baseline_is_not_called_insufficient_evidence():
    cert = _cert(loss_reduction=-0.2, loss_reduction_lower=-0.25)
    (text,) = cert.shortfalls()
    assert "insufficient" not in text and "more data would not certify it" in text


def test_the_search_constraint_uses_the_gates_bounds():
    configs = [BASE.replace(J_MIN=j, H_MAX=h) for j in (0.5, 0.62, 0.7, 0.74, 0.85) for h in (0.2, 0.4)]
    crit = critical_set()
    table = ScoreTable(crit, BASE)
    sums, base = table.evaluate(configs), table.evaluate([BASE])[0]
    floor = CriticalFloor()
    searched = floor.certified(sums, base, DELTA)
    gated = [certify(c, BASE, held_out=None, weights=W, critical=floor, delta=DELTA).passed for c in configs]
    assert searched.tolist() == gated
    assert 0 < sum(gated) < len(gated)


def test_the_promise_in_words():
    figure = _cert(loss_reduction_lower=0.502, critical_fail_safe_rate_lower=0.2426).figure()
    assert promise(figure) == ("with 95% confidence, on decisions like the held-out ones, the loss is at least "
                               "50.2% lower than the baseline's; on critical states it still fails safe at least "
                               "24.3% of the time")
    figure["loss_reduction_lower"] = -0.004
    assert "the loss is at most 0.4% higher than the baseline's" in promise(figure)


# --- coverage: the bounds hold on independent samples in at least 1 - delta of them ----------


def test_the_bounds_hold_in_at_least_1_minus_delta_of_independent_samples():
    """Disjoint samples of a large pool (whole streams of 250 decisions, the pool's figure
    standing for the truth): each bound must hold in at least 95% of them. The loss bound is
    a bootstrap, so its coverage is judged with the sampling error of the count itself (two
    standard errors of a binomial proportion over the samples); the critical bounds are exact."""
    streams, per_stream, per_sample = 800, 250, 2
    pool = generate("chaos", streams * per_stream, 77, streams)
    base, ours = decision_losses(run(pool, BASE), W), decision_losses(run(pool, LEARNED), W)
    codes, _ = pool.stream_codes()
    truth = 1 - ours.sum() / base.sum()
    block = block_length(10)
    held = []
    for first in range(0, streams, per_sample):
        rows = np.flatnonzero((codes >= first) & (codes < first + per_sample))
        _, lower = loss_reduction_bound(base[rows], ours[rows], codes[rows] - first, block, DELTA, resamples=400)
        held.append(lower <= truth)
    assert np.mean(held) >= 1 - DELTA - 2 * np.sqrt(DELTA * (1 - DELTA) / len(held))

    crit = generate("critical", 200_000, 78, 8)
    cols = run(crit, LEARNED)
    l2, h = (cols.level == 2).reshape(400, 500), cols.H.reshape(400, 500)
    rate_truth, h_truth = l2.mean(), h.mean()
    assert np.mean(fail_safe_rate_lower(l2.sum(axis=1), 500, DELTA) <= rate_truth) >= 1 - DELTA
    assert np.mean(mean_upper(h.sum(axis=1), 500, DELTA) >= h_truth) >= 1 - DELTA
    assert LOSS_TOLERANCE == 0.01

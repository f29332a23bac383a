"""The rules of one decision (docs/engine.md §4-11), one compiled function per rule.

Read it beside docs/engine.md, top to bottom: each function is named after its rule, says
its section and keeps the spec's formula. Every path of the engine calls these functions
for the rule itself: the direct path and the sweep path (_kernel.py), a single decision
(batch.decide) and `explain`. The kernels only choose which states, actions or groups of
actions they visit; Numba inlines the small rules into them. The moral scores of §3 are
in scores.py.

A config reaches the rules as one float64 row laid out as config.params.KERNEL_ROW:
`cfg[J_MIN]` is the config's J_MIN.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..config.params import ROW_OFFSET
from ..io.traces import REASON_CODES
from .scores import clip, score_action, sig

# Offsets of the parameters in a config row.
J_MIN = ROW_OFFSET["J_MIN"]
H_MAX = ROW_OFFSET["H_MAX"]
C_MIN = ROW_OFFSET["C_MIN"]
C_MAX = ROW_OFFSET["C_MAX"]
J_CRITICAL = ROW_OFFSET["J_CRITICAL"]
H_CRITICAL = ROW_OFFSET["H_CRITICAL"]
CONF_FORCE = ROW_OFFSET["CONFIDENCE_ESCALATION_FORCE"]
DIVERGENCE_HARD = ROW_OFFSET["DIVERGENCE_HARD_THRESHOLD"]
AS_SOFT = ROW_OFFSET["AS_SOFT_THRESHOLD"]
SIGMA_MAX = ROW_OFFSET["SIGMA_MAX"]
CONF_MARGIN_K = ROW_OFFSET["CONFIDENCE_MARGIN_K"]
UNC_MARGIN_K = ROW_OFFSET["UNCERTAINTY_MARGIN_K"]
AS_LAMBDA = ROW_OFFSET["UNCERTAINTY_AS_LAMBDA"]
DE_TEMPERATURE = ROW_OFFSET["DE_TEMPERATURE"]
ALPHA = ROW_OFFSET["SOFT_CLAMP_ALPHA"]
BETA = ROW_OFFSET["SOFT_CLAMP_BETA"]
GAMMA = ROW_OFFSET["SOFT_CLAMP_GAMMA"]
DELTA_CUS = ROW_OFFSET["DELTA_CUS_THRESHOLD"]
CUS_MEAN = ROW_OFFSET["CUS_MEAN_THRESHOLD"]
WINDOW = ROW_OFFSET["CUS_MEAN_WINDOW"]
CUS_W = ROW_OFFSET["CUS_WEIGHTS"]  # three values
SAFE = ROW_OFFSET["SAFE_ACTION"]  # four values

# Reason codes: REASONS[code] is the trace's `reason` (the trace format owns the list).
R_NORMAL = REASON_CODES["normal"]
R_NO_CLEAR_LEADER = REASON_CODES["no_clear_leader"]
R_DRIFT = REASON_CODES["drift"]
R_J_CRITICAL = REASON_CODES["j_critical"]
R_H_CRITICAL = REASON_CODES["h_critical"]
R_LOW_CONFIDENCE = REASON_CODES["low_confidence"]
R_DIVERGENCE = REASON_CODES["divergence"]
R_CLAMP_VIOLATION = REASON_CODES["clamp_violation"]
R_NO_VALID_CANDIDATE = REASON_CODES["no_valid_candidate"]


# ------------------------------------------------------------- §4 constraint filter


@njit(cache=True, inline="always")
def candidate_filter(J, H, C, j_min, h_max, c_min, c_max):
    """§4: an action is a candidate when J >= J_MIN and H <= H_MAX and C_MIN <= C <= C_MAX.

    The bounds come apart from the config so that a fast path can narrow a list by the
    loosest bounds of many configs with this same test (and `explain` can ask which bound
    an action fails). Branch-free: whether an action passes is data the CPU cannot predict.
    """
    return (J >= j_min) & (H <= h_max) & (c_min <= C) & (C <= c_max)


@njit(cache=True, inline="always")
def is_candidate(J, H, C, cfg):
    """§4 with the config's own bounds."""
    return candidate_filter(J, H, C, cfg[J_MIN], cfg[H_MAX], cfg[C_MIN], cfg[C_MAX])


# --------------------------------------------------------------------- §5 selection

TIE = 1e-12


@njit(cache=True, inline="always")
def ties_with_best(s, s_best):
    """§5: a score within TIE of the best; the first such candidate in grid order is selected."""
    return s >= s_best - TIE


@njit(cache=True, inline="always")
def is_distinct(s, last_kept):
    """§5 distinct scores: walking the scores in descending order, a value is kept when it is
    more than TIE below the last value kept (not the last value seen)."""
    return s < last_kept - TIE


@njit(cache=True, inline="always")
def first_tied(s, cand, m, s_best):
    """§5 (and §8 without candidates): the first of the actions cand[:m], given in grid
    order, whose S (s[action]) is within TIE of the best score s_best."""
    for k in range(m):
        if ties_with_best(s[cand[k]], s_best):
            return cand[k]
    return cand[0]


@njit(cache=True)
def selection(ks, ka, ke, idx, m, cfg):
    """§5 and §7 over the candidates ks[idx[:m]] (m >= 1), sorted by S descending with ties
    in grid order; ka holds their grid indices. Returns the selected action, the number n
    of distinct scores, DE_norm and AS_norm (see distinct_scores for ke)."""
    s_max = ks[idx[0]]
    best = ka[idx[0]]
    j = 1
    while j < m and ties_with_best(ks[idx[j]], s_max):
        best = min(best, ka[idx[j]])
        j += 1
    n, de, as_ = distinct_scores(ks, ke, idx, m, cfg)
    return best, n, de, as_


@njit(cache=True, inline="always")
def distinct_scores(ks, ke, idx, m, cfg):
    """§5 distinct scores and §7 over the scores ks[idx[:m]] (m >= 1) sorted descending.

    One walk keeps the distinct scores, accumulating the softmax of §7 over them (shifted
    by the best score, which cancels in DE_norm). ke[k] = exp((ks[k] - s_ref) / T) for one
    reference score s_ref >= every ks (the sweep path shares these across configs), or
    ke[0] = NaN to compute the exponentials here. Returns n, DE_norm and AS_norm.
    """
    inv_t = 1.0 / cfg[DE_TEMPERATURE]
    shared = not math.isnan(ke[0])
    k0 = idx[0]
    s_max = ks[k0]
    inv_e_best = 1.0 / ke[k0] if shared else 1.0
    last_kept = s_max
    n = 1
    second = s_max
    z = 1.0
    zx = 0.0
    for j in range(1, m):
        k = idx[j]
        s = ks[k]
        if is_distinct(s, last_kept):
            n += 1
            last_kept = s
            if n == 2:
                second = s
            x = (s - s_max) * inv_t
            e = ke[k] * inv_e_best if shared else math.exp(x)
            z += e
            if e > 0.0:  # p ln p -> 0 as p -> 0: a term that underflows adds nothing (not -inf * 0)
                zx += x * e
    de, as_ = uncertainty(n, z, zx, s_max - second, cfg)
    return n, de, as_


# -------------------------------------------------------------------- §6 confidence


@njit(cache=True, inline="always")
def spread(W, J, H, C):
    """§6: the population std of (W, J, 1 - H, C)."""
    h = 1.0 - H
    mean = (W + J + h + C) / 4.0
    return math.sqrt(((W - mean) ** 2 + (J - mean) ** 2 + (h - mean) ** 2 + (C - mean) ** 2) / 4.0)


@njit(cache=True, inline="always")
def confidence_from_spread(std, J, H, C, cfg):
    """§6 once the spread is known: base times a sigmoid of the margin clipped to [-1, 1].

    Returns confidence and margin."""
    base = clip(1.0 - std / cfg[SIGMA_MAX])
    margin = min(J - cfg[J_MIN], cfg[H_MAX] - H, C - cfg[C_MIN], cfg[C_MAX] - C)
    margin = min(1.0, max(-1.0, margin))
    return base * sig(cfg[CONF_MARGIN_K] * margin), margin


@njit(cache=True)
def confidence(W, J, H, C, cfg):
    """§6: confidence and margin of a scored action."""
    return confidence_from_spread(spread(W, J, H, C), J, H, C, cfg)


# ------------------------------------------------------------------- §7 uncertainty


@njit(cache=True, inline="always")
def de_norm(z, zx, n):
    """§7 DE_norm: entropy of the softmax over the n distinct scores, over ln n, from
    z = sum e^x and zx = sum x*e^x (x = distinct_i / DE_TEMPERATURE shifted by any
    constant, which cancels): -sum p ln p = ln z - zx / z."""
    return (math.log(z) - zx / z) / math.log(n)


@njit(cache=True, inline="always")
def as_norm(gap, lam):
    """§7 AS_norm = 1 - exp(-UNCERTAINTY_AS_LAMBDA * AS), AS the gap between the best and the
    second best distinct score."""
    return 1.0 - math.exp(-lam * gap)


@njit(cache=True, inline="always")
def uncertainty(n, z, zx, gap, cfg):
    """§7: DE_norm and AS_norm of n distinct scores (softmax sums z, zx; AS = gap). One
    distinct option leaves no choice to doubt: 0 and 1."""
    if n < 2:
        return 0.0, 1.0
    return de_norm(z, zx, n), as_norm(gap, cfg[AS_LAMBDA])


@njit(cache=True, inline="always")
def divergence(conf, de, n):
    """§7: |confidence - (1 - DE_norm)|, 0 with one distinct option."""
    return abs(conf - (1.0 - de)) if n >= 2 else 0.0


@njit(cache=True, inline="always")
def combined_uncertainty(conf, margin, de, as_, cfg):
    """§7: CUS = c1*HI + c2*DE_norm + c3*(1 - AS_norm), HI = (1 - confidence) *
    (1 + sig(-UNCERTAINTY_MARGIN_K * margin)) / 2."""
    hi = (1.0 - conf) * (1.0 + sig(-cfg[UNC_MARGIN_K] * margin)) / 2.0
    return cfg[CUS_W] * hi + cfg[CUS_W + 1] * de + cfg[CUS_W + 2] * (1.0 - as_)


# ------------------------------------------------------------ §8 escalation level


@njit(cache=True)
def no_candidate_action(s_all):
    """§8, no candidate at all: the first action of the whole grid whose S is within TIE of
    the best S of all actions."""
    s_max = s_all.max()
    for a in range(s_all.shape[0]):
        if ties_with_best(s_all[a], s_max):
            return a
    return 0


@njit(cache=True, inline="always")
def no_valid_candidate():
    """§8, no candidate at all: confidence 0, CUS 1, level 2. Returns confidence, CUS, level
    and reason."""
    return 0.0, 1.0, 2, R_NO_VALID_CANDIDATE


@njit(cache=True, inline="always")
def j_critical(J, cfg):
    """§8 (and §10): J below the hard floor J_CRITICAL."""
    return J < cfg[J_CRITICAL]


@njit(cache=True, inline="always")
def h_critical(H, cfg):
    """§8 (and §10): H above the hard floor H_CRITICAL."""
    return H > cfg[H_CRITICAL]


@njit(cache=True, inline="always")
def low_confidence(conf, cfg):
    """§8 (and §10): confidence below CONFIDENCE_ESCALATION_FORCE."""
    return conf < cfg[CONF_FORCE]


@njit(cache=True, inline="always")
def divergent(div, cfg):
    """§8: divergence above DIVERGENCE_HARD_THRESHOLD."""
    return div > cfg[DIVERGENCE_HARD]


@njit(cache=True, inline="always")
def no_clear_leader(as_, cfg):
    """§8: AS_norm below AS_SOFT_THRESHOLD: the best action does not lead clearly."""
    return as_ < cfg[AS_SOFT]


@njit(cache=True, inline="always")
def escalation(J, H, conf, div, as_, cfg):
    """§8: the level and reason of the selected action, from the first rule of the table that
    fires."""
    if j_critical(J, cfg):
        return 2, R_J_CRITICAL
    if h_critical(H, cfg):
        return 2, R_H_CRITICAL
    if low_confidence(conf, cfg):
        return 2, R_LOW_CONFIDENCE
    if divergent(div, cfg):
        return 2, R_DIVERGENCE
    if no_clear_leader(as_, cfg):
        return 1, R_NO_CLEAR_LEADER
    return 0, R_NORMAL


# --------------------------------------------------------------- §9 temporal drift


@njit(cache=True)
def drift_window(ring, count, cus_raw):
    """§9: push a pre-clamp CUS into the stream's window (count = values seen before; the
    ring holds value j at j % len(ring)).

    Returns delta_cus (NaN for a stream's first decision) and cus_mean over the window.
    """
    window = ring.shape[0]
    delta_cus = cus_raw - ring[(count - 1) % window] if count > 0 else np.nan
    ring[count % window] = cus_raw
    used = min(count + 1, window)
    total = 0.0
    for w in range(count + 1 - used, count + 1):
        total += ring[w % window]
    return delta_cus, total / used


@njit(cache=True, inline="always")
def drift_escalates(level, delta_cus, cus_mean, cfg):
    """§9: a level-0 decision becomes level 1 (`drift`) when delta_cus > DELTA_CUS_THRESHOLD
    (a null delta_cus never fires) or cus_mean > CUS_MEAN_THRESHOLD."""
    return level == 0 and ((not math.isnan(delta_cus) and delta_cus > cfg[DELTA_CUS]) or cus_mean > cfg[CUS_MEAN])


# ------------------------------------------------------------------ §10 soft clamp


@njit(cache=True)
def soft_clamp(raw, cus, cfg, out):
    """§10: the clamped action into `out`, shaped by the decision's pre-clamp CUS."""
    out[0] = clip(raw[0] * (1.0 - cfg[ALPHA] * cus))
    out[1] = raw[1]
    out[2] = clip(raw[2] * (1.0 - cfg[BETA] * cus))
    out[3] = clip(raw[3] + cfg[GAMMA] * cus)


@njit(cache=True, inline="always")
def clamp_violation(J, H, C, conf, cfg):
    """§10: the clamped action is not a candidate, breaks a hard floor or falls below the
    confidence force; the decision then becomes level 2 (`clamp_violation`)."""
    return not is_candidate(J, H, C, cfg) or j_critical(J, cfg) or h_critical(H, cfg) or low_confidence(conf, cfg)


# ------------------------------------------------------------------- §11 fail-safe


@njit(cache=True)
def fail_safe(st, cfg, final):
    """§11: the final action is SAFE_ACTION (into `final`); returns its W, J, H, C."""
    final[:] = cfg[SAFE:SAFE + 4]
    return score_action(st, final[0], final[1], final[2], final[3])

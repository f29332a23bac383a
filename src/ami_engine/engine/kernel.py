"""Compiled kernels of the engine (docs/engine.md §4-11), over configs x states.

A decision is computed in two passes:

1. *pre-decision* (independent per state, parallel over states and configs): candidate
   filter, selection, distinct scores, confidence, uncertainty and the escalation rules
   of section 8. Two front ends feed it candidates in descending score order: the direct
   path (one config: score the state's 625 actions, sort only the candidates) and the
   sweep path (many configs: scores sorted once per state in a ScoreTable, summarised
   per group of actions that share J, H and C, so a config tests ~100 groups instead of
   scanning ~500 actions; see group_clusters and rank_groups).
2. *finish* (sequential per stream, parallel over streams and configs): temporal drift,
   soft clamp, fail-safe, and either the per-decision trace columns or per-config sums;
   it can run over a state set part by part, carrying each stream's drift window.

A config is a float64 row laid out as ROW below (see Config.kernel_row).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..config.params import KERNEL_FLOATS
from ..io.traces import REASON_CODES, REASONS
from .scores import (
    COMPASSION,
    CONTEXT,
    EMPATHY,
    HARM_SENS,
    JUSTICE,
    PHYSICAL,
    RESPONSIBILITY,
    RISK,
    SOCIAL,
    clip,
    moral_C,
    moral_H,
    moral_J,
    moral_W,
    score_action,
    selection_score,
    sig,
)

TIE = 1e-12

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

# Layout of a config row.
_I = {name: i for i, name in enumerate(KERNEL_FLOATS)}
J_MIN = _I["J_MIN"]
H_MAX = _I["H_MAX"]
C_MIN = _I["C_MIN"]
C_MAX = _I["C_MAX"]
J_CRITICAL = _I["J_CRITICAL"]
H_CRITICAL = _I["H_CRITICAL"]
CONF_FORCE = _I["CONFIDENCE_ESCALATION_FORCE"]
DIVERGENCE_HARD = _I["DIVERGENCE_HARD_THRESHOLD"]
AS_SOFT = _I["AS_SOFT_THRESHOLD"]
SIGMA_MAX = _I["SIGMA_MAX"]
CONF_MARGIN_K = _I["CONFIDENCE_MARGIN_K"]
UNC_MARGIN_K = _I["UNCERTAINTY_MARGIN_K"]
AS_LAMBDA = _I["UNCERTAINTY_AS_LAMBDA"]
DE_TEMPERATURE = _I["DE_TEMPERATURE"]
ALPHA = _I["SOFT_CLAMP_ALPHA"]
BETA = _I["SOFT_CLAMP_BETA"]
GAMMA = _I["SOFT_CLAMP_GAMMA"]
DELTA_CUS = _I["DELTA_CUS_THRESHOLD"]
CUS_MEAN = _I["CUS_MEAN_THRESHOLD"]
WINDOW = len(KERNEL_FLOATS)
CUS_W = WINDOW + 1
SAFE = WINDOW + 4
ROW_LEN = SAFE + 4

# Per-config sums (finish pass, sums mode).
S_N, S_L0, S_L1, S_L2, S_CUS, S_DISTORTION, S_CLAMPED, S_H_FINAL = range(8)
S_REASON = 8
N_SUMS = S_REASON + len(REASONS)


# ---------------------------------------------------------------- per-decision rules


@njit(cache=True)
def is_candidate(J, H, C, cfg):
    """Section 4: the constraint filter."""
    return J >= cfg[J_MIN] and H <= cfg[H_MAX] and cfg[C_MIN] <= C and C <= cfg[C_MAX]


@njit(cache=True)
def spread(W, J, H, C):
    """Section 6: population std of (W, J, 1-H, C)."""
    h = 1.0 - H
    mean = (W + J + h + C) / 4.0
    return math.sqrt(((W - mean) ** 2 + (J - mean) ** 2 + (h - mean) ** 2 + (C - mean) ** 2) / 4.0)


@njit(cache=True)
def confidence_of(std, J, H, C, cfg):
    """Section 6 from the spread: base times a sigmoid of the clipped margin."""
    base = clip(1.0 - std / cfg[SIGMA_MAX])
    margin = min(J - cfg[J_MIN], cfg[H_MAX] - H, C - cfg[C_MIN], cfg[C_MAX] - C)
    margin = min(1.0, max(-1.0, margin))
    return base * sig(cfg[CONF_MARGIN_K] * margin), margin


@njit(cache=True)
def confidence_and_margin(W, J, H, C, cfg):
    """Section 6: base (population std of W, J, 1-H, C) times a sigmoid of the margin."""
    return confidence_of(spread(W, J, H, C), J, H, C, cfg)


@njit(cache=True)
def combined_uncertainty(confidence, margin, de_norm, as_norm, cfg):
    """Section 7: CUS = c1*HI + c2*DE_norm + c3*(1 - AS_norm)."""
    hi = (1.0 - confidence) * (1.0 + sig(-cfg[UNC_MARGIN_K] * margin)) / 2.0
    return cfg[CUS_W] * hi + cfg[CUS_W + 1] * de_norm + cfg[CUS_W + 2] * (1.0 - as_norm)


@njit(cache=True)
def filter_candidates(kj, kh, kc, m0, cfg, idx, check_c):
    """Section 4 over m0 scored actions: positions of the candidates into idx, their count.

    Branch-free on purpose: whether an action passes is data the CPU cannot predict.
    check_c=False when every listed action is already known to pass the C bounds."""
    j_min, h_max, c_min, c_max = cfg[J_MIN], cfg[H_MAX], cfg[C_MIN], cfg[C_MAX]
    m = 0
    if check_c:
        for k in range(m0):
            idx[m] = k
            m += (kj[k] >= j_min) & (kh[k] <= h_max) & (c_min <= kc[k]) & (kc[k] <= c_max)
    else:
        for k in range(m0):
            idx[m] = k
            m += (kj[k] >= j_min) & (kh[k] <= h_max)
    return m


@njit(cache=True)
def rank_candidates(ks, ka, ke, idx, m, cfg):
    """Sections 5 and 7 over the candidates ks[idx[:m]], sorted by S descending (ties in
    grid order); ka holds their grid indices.

    ke[k] = exp((ks[k] - s_ref) / T) for one reference score s_ref >= every ks (the sweep
    path shares these across configs), or ke[0] = NaN to compute the exponentials here.
    Returns the selected action, the number of distinct scores, DE_norm and AS_norm.
    """
    inv_t = 1.0 / cfg[DE_TEMPERATURE]
    shared = not math.isnan(ke[0])
    k0 = idx[0]
    s_max = ks[k0]
    best = ka[k0]
    inv_e_best = 1.0 / ke[k0] if shared else 1.0
    selecting = True
    # Distinct scores: keep a value only when it is more than TIE below the last kept.
    # The softmax over them is accumulated in the same pass, shifted by the best score.
    last_kept = s_max
    n = 1
    second = s_max
    z = 1.0
    zx = 0.0
    for j in range(1, m):
        k = idx[j]
        s = ks[k]
        if selecting:
            if s >= s_max - TIE:
                best = min(best, ka[k])
            else:
                selecting = False
        if s < last_kept - TIE:
            n += 1
            last_kept = s
            if n == 2:
                second = s
            x = (s - s_max) * inv_t
            e = ke[k] * inv_e_best if shared else math.exp(x)
            z += e
            zx += x * e
    if n < 2:
        return best, n, 0.0, 1.0
    entropy = math.log(z) - zx / z
    de_norm = entropy / math.log(n)
    as_norm = 1.0 - math.exp(-cfg[AS_LAMBDA] * (s_max - second))
    return best, n, de_norm, as_norm


@njit(cache=True)
def sort_descending(keys, order, m, tmp):
    """Stable bottom-up merge sort of order[:m] by keys[order] descending, in place.

    Equal keys keep their input order (grid order), as section 5's tie rule needs."""
    width = 1
    src, dst = order, tmp
    while width < m:
        for lo in range(0, m, 2 * width):
            mid = min(lo + width, m)
            hi = min(lo + 2 * width, m)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if keys[src[j]] > keys[src[i]]:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
        src, dst = dst, src
        width *= 2
    if src is not order:
        order[:m] = src[:m]


@njit(cache=True)
def escalate(st, action, n_distinct, de_norm, as_norm, cfg):
    """Sections 6-8 for the selected action: confidence, margin, CUS, level and reason."""
    W, J, H, C = score_action(st, action[0], action[1], action[2], action[3])
    return escalate_scored(J, H, C, spread(W, J, H, C), n_distinct, de_norm, as_norm, cfg)


@njit(cache=True)
def escalate_scored(J, H, C, std, n_distinct, de_norm, as_norm, cfg):
    """escalate() once the selected action's J, H, C and spread are known."""
    confidence, margin = confidence_of(std, J, H, C, cfg)
    divergence = abs(confidence - (1.0 - de_norm)) if n_distinct >= 2 else 0.0
    cus = combined_uncertainty(confidence, margin, de_norm, as_norm, cfg)
    if J < cfg[J_CRITICAL]:
        level, reason = 2, R_J_CRITICAL
    elif H > cfg[H_CRITICAL]:
        level, reason = 2, R_H_CRITICAL
    elif confidence < cfg[CONF_FORCE]:
        level, reason = 2, R_LOW_CONFIDENCE
    elif divergence > cfg[DIVERGENCE_HARD]:
        level, reason = 2, R_DIVERGENCE
    elif as_norm < cfg[AS_SOFT]:
        level, reason = 1, R_NO_CLEAR_LEADER
    else:
        level, reason = 0, R_NORMAL
    return confidence, margin, cus, level, reason


@njit(cache=True)
def soft_clamp(raw, cus, cfg, out):
    """Section 10: the clamped action, shaped by the decision's pre-clamp CUS."""
    out[0] = clip(raw[0] * (1.0 - cfg[ALPHA] * cus))
    out[1] = raw[1]
    out[2] = clip(raw[2] * (1.0 - cfg[BETA] * cus))
    out[3] = clip(raw[3] + cfg[GAMMA] * cus)


# ------------------------------------------------------------------ pre-decision pass


@njit(cache=True)
def _score_state(st, actions, comp_of, comp_values, sw, s_out, j_out, h_out, c_comp):
    """Scores of every grid action for one state.

    J and H do not depend on the delay and C depends on the compassion only, so they are
    computed once per (severity, compassion, intervention): the grid enumerates delay
    fastest, so each run of len(grid) consecutive actions shares them."""
    g = comp_values.shape[0]
    for c in range(g):
        c_comp[c] = moral_C(st[PHYSICAL], st[COMPASSION], st[RESPONSIBILITY], st[EMPATHY], comp_values[c])
    for first in range(0, actions.shape[0], g):
        sev, comp, itv = actions[first, 0], actions[first, 1], actions[first, 2]
        J = moral_J(st[CONTEXT], st[RISK], st[JUSTICE], sev, comp, itv)
        H = moral_H(st[SOCIAL], st[HARM_SENS], sev, comp, itv)
        C = c_comp[comp_of[first]]
        for a in range(first, first + g):
            W = moral_W(st[RISK], sev, comp, itv, actions[a, 3])
            s_out[a] = selection_score(W, J, H, C, sw)
            j_out[a] = J
            h_out[a] = H


@njit(cache=True)
def _best_of_all(s_all):
    """Section 8, no candidate: the first action whose S is within TIE of the overall max."""
    s_max = s_all.max()
    for a in range(s_all.shape[0]):
        if s_all[a] >= s_max - TIE:
            return a
    return 0


@njit(cache=True)
def _no_candidate(fallback, c, i, pre_a, pre_level, pre_reason, pre_f):
    """Section 8 without any candidate: level 2, confidence 0, CUS 1 (margin unused)."""
    _store(fallback, 0.0, 0.0, 1.0, 2, R_NO_VALID_CANDIDATE, 0.0, 1.0, c, i, pre_a, pre_level, pre_reason, pre_f)


@njit(cache=True, inline="always")
def _store(best, confidence, margin, cus, level, reason, de_norm, as_norm, c, i, pre_a, pre_level, pre_reason,
           pre_f):
    pre_a[c, i] = best
    pre_level[c, i] = level
    pre_reason[c, i] = reason
    pre_f[c, i, 0] = confidence
    pre_f[c, i, 1] = margin
    pre_f[c, i, 2] = cus
    pre_f[c, i, 3] = de_norm
    pre_f[c, i, 4] = as_norm


@njit(cache=True)
def _pre_decide(st, actions, ks, ka, ke, idx, m, fallback, cfg, c, i, pre_a, pre_level, pre_reason, pre_f):
    if m == 0:
        _no_candidate(fallback, c, i, pre_a, pre_level, pre_reason, pre_f)
        return
    best, n, de_norm, as_norm = rank_candidates(ks, ka, ke, idx, m, cfg)
    confidence, margin, cus, level, reason = escalate(st, actions[best], n, de_norm, as_norm, cfg)
    _store(best, confidence, margin, cus, level, reason, de_norm, as_norm, c, i, pre_a, pre_level, pre_reason, pre_f)


PRE_FLOATS = 5  # confidence, margin, cus, de_norm, as_norm


@njit(parallel=True, cache=True)
def pre_direct(states, actions, comp_of, comp_values, sw, cfg, block, pre_a, pre_level, pre_reason, pre_f):
    """Pre-decisions of one config (row 0 of the outputs), scoring each state on the fly.

    The filter is applied per (severity, compassion, intervention) before any W or S is
    computed, and only the candidates are sorted; every action is scored only when there
    is no candidate (section 8 then needs the best of the whole grid)."""
    n_states = states.shape[0]
    n_actions = actions.shape[0]
    g = comp_values.shape[0]
    for b in prange((n_states + block - 1) // block):
        s_all = np.empty(n_actions)
        j_all = np.empty(n_actions)
        h_all = np.empty(n_actions)
        c_comp = np.empty(g)
        order = np.empty(n_actions, dtype=np.int64)
        tmp = np.empty(n_actions, dtype=np.int64)
        ks = np.empty(n_actions)
        ka = np.empty(n_actions, dtype=np.int64)
        idx = np.arange(n_actions)
        no_shared = np.full(1, np.nan)
        for i in range(b * block, min(n_states, (b + 1) * block)):
            st = states[i]
            for c in range(g):
                c_comp[c] = moral_C(st[PHYSICAL], st[COMPASSION], st[RESPONSIBILITY], st[EMPATHY], comp_values[c])
            m = 0
            for first in range(0, n_actions, g):
                sev, comp, itv = actions[first, 0], actions[first, 1], actions[first, 2]
                J = moral_J(st[CONTEXT], st[RISK], st[JUSTICE], sev, comp, itv)
                H = moral_H(st[SOCIAL], st[HARM_SENS], sev, comp, itv)
                C = c_comp[comp_of[first]]
                if not is_candidate(J, H, C, cfg):
                    continue
                for a in range(first, first + g):
                    W = moral_W(st[RISK], sev, comp, itv, actions[a, 3])
                    s_all[a] = selection_score(W, J, H, C, sw)
                    order[m] = a
                    m += 1
            fallback = 0
            if m == 0:
                _score_state(st, actions, comp_of, comp_values, sw, s_all, j_all, h_all, c_comp)
                fallback = _best_of_all(s_all)
            else:
                # Collected in grid order, so the stable sort keeps ties in grid order.
                sort_descending(s_all, order, m, tmp)
                for k in range(m):
                    ks[k] = s_all[order[k]]
                    ka[k] = order[k]
            _pre_decide(st, actions, ks, ka, no_shared, idx, m, fallback, cfg, 0, i,
                        pre_a, pre_level, pre_reason, pre_f)


@njit(parallel=True, cache=True)
def build_score_table(states, actions, comp_of, comp_values, sw, block, table_s, table_a, group_j, group_h, c_comp,
                      fallback):
    """Per state: every action's S sorted descending (ties in grid order) with the actions
    in that order; J and H per (severity, compassion, intervention) group, i.e. of action
    a at group a // len(grid); C per compassion value."""
    n_states = states.shape[0]
    n_actions = actions.shape[0]
    g = comp_values.shape[0]
    for b in prange((n_states + block - 1) // block):
        s_all = np.empty(n_actions)
        j_all = np.empty(n_actions)
        h_all = np.empty(n_actions)
        order = np.empty(n_actions, dtype=np.int64)
        tmp = np.empty(n_actions, dtype=np.int64)
        for i in range(b * block, min(n_states, (b + 1) * block)):
            _score_state(states[i], actions, comp_of, comp_values, sw, s_all, j_all, h_all, c_comp[i])
            for a in range(n_actions):
                order[a] = a
            sort_descending(s_all, order, n_actions, tmp)
            for k in range(n_actions):
                a = order[k]
                table_s[i, k] = s_all[a]
                table_a[i, k] = a
            for group in range(n_actions // g):
                group_j[i, group] = j_all[group * g]
                group_h[i, group] = h_all[group * g]
            fallback[i] = _best_of_all(s_all)


# Rows of a group summary (group_clusters), one column per group.
G_J, G_H, G_C, G_A, G_B, G_N, G_TOP, G_SECOND, G_BEST, G_STD = range(10)
GROUP_ROWS = 10
SUB_BLOCK = 32  # states whose group summaries are held at once (config-major over them)


@njit(cache=True)
def group_clusters(st, actions, ks, kj, kh, kc, ka, ke, m0, s_top, temperature, g, slot_of, grp):
    """Summarise a state's narrowed, sorted actions per (severity, compassion, intervention).

    A *cluster* is a run of consecutive actions whose scores chain within TIE. Section 5's
    walk keeps exactly one value per cluster, whichever subset of the list a filter
    leaves, when every member lies within TIE of the cluster's first value and shares its
    J, H and C (so all members pass or fail the filter together). Each cluster is counted
    in the group of its first action. Column `slot` of grp holds a group's J, H, C; the
    sums A = sum e^y and B = sum y*e^y over its clusters (y = (S - s_top) / T, ke = e^y);
    its number of clusters; its best and second-best cluster values; the action section 5
    selects when its best cluster leads, and that action's spread (section 6). Slots come
    in order of their best value, highest first.

    Returns the number of slots, or -1 when some cluster breaks the conditions above (the
    caller then scans the list per config)."""
    slot_of[:] = -1
    n_slots = 0
    k = 0
    while k < m0:
        first = k
        s_first = ks[k]
        threshold = s_first - TIE
        best = ka[k]
        k += 1
        while k < m0 and not ks[k] < ks[k - 1] - TIE:
            if ks[k] < threshold or kj[k] != kj[first] or kh[k] != kh[first] or kc[k] != kc[first]:
                return -1
            best = min(best, ka[k])
            k += 1
        group = ka[first] // g
        slot = slot_of[group]
        if slot < 0:
            slot = n_slots
            slot_of[group] = slot
            n_slots += 1
            J, H, C = kj[first], kh[first], kc[first]
            a = actions[best]
            grp[G_J, slot] = J
            grp[G_H, slot] = H
            grp[G_C, slot] = C
            grp[G_A, slot] = 0.0
            grp[G_B, slot] = 0.0
            grp[G_N, slot] = 0.0
            grp[G_TOP, slot] = s_first
            grp[G_SECOND, slot] = -np.inf
            grp[G_BEST, slot] = best
            grp[G_STD, slot] = spread(moral_W(st[RISK], a[0], a[1], a[2], a[3]), J, H, C)
        elif grp[G_N, slot] == 1.0:
            grp[G_SECOND, slot] = s_first
        y = (s_first - s_top) / temperature
        grp[G_A, slot] += ke[first]
        grp[G_B, slot] += y * ke[first]
        grp[G_N, slot] += 1.0
    return n_slots


@njit(cache=True, inline="always")
def _passes(grp, slot, j_min, h_max, c_min, c_max):
    return grp[G_J, slot] >= j_min and grp[G_H, slot] <= h_max and c_min <= grp[G_C, slot] and grp[G_C, slot] <= c_max


@njit(cache=True)
def rank_groups(grp, n_slots, cfg):
    """Sections 5 and 7 from group_clusters' summary: the same answer as rank_candidates
    over the candidates, in one short pass over the groups.

    Returns the selected group's slot (-1 without candidates), n, DE_norm and AS_norm."""
    j_min, h_max, c_min, c_max = cfg[J_MIN], cfg[H_MAX], cfg[C_MIN], cfg[C_MAX]
    top = 0
    while top < n_slots and not _passes(grp, top, j_min, h_max, c_min, c_max):
        top += 1
    if top == n_slots:
        return -1, 0, 0.0, 1.0
    # Sums over the passing groups in slot order; a failing group adds an exact zero.
    second = grp[G_SECOND, top]
    a = b = n = 0.0
    for slot in range(top, n_slots):
        ok = _passes(grp, slot, j_min, h_max, c_min, c_max)
        a += grp[G_A, slot] if ok else 0.0
        b += grp[G_B, slot] if ok else 0.0
        n += grp[G_N, slot] if ok else 0.0
    if n < 2.0:
        return top, 1, 0.0, 1.0
    for slot in range(top + 1, n_slots):
        if _passes(grp, slot, j_min, h_max, c_min, c_max):
            second = max(second, grp[G_TOP, slot])
            break
    # Entropy of the softmax over the kept values: ln A - B / A (the shift by s_top cancels).
    de_norm = (math.log(a) - b / a) / math.log(n)
    as_norm = 1.0 - math.exp(-cfg[AS_LAMBDA] * (grp[G_TOP, top] - second))
    return top, int(n), de_norm, as_norm


@njit(cache=True)
def _narrow(table_s, table_a, group_j, group_h, c_comp, comp_of, g, i, bounds, ks, kj, kh, kc, ka):
    """A state's sorted actions that pass the loosest filter of a chunk (bounds: J_MIN,
    H_MAX, C_MIN, C_MAX), into ks, kj, kh, kc, ka; returns their number."""
    j_lo, h_hi, c_lo, c_hi = bounds
    m0 = 0
    for k in range(table_s.shape[1]):
        a = table_a[i, k]
        group = a // g
        J = group_j[i, group]
        H = group_h[i, group]
        if J >= j_lo and H <= h_hi:
            cv = c_comp[i, comp_of[a]]
            if c_lo <= cv and cv <= c_hi:
                ks[m0] = table_s[i, k]
                kj[m0] = J
                kh[m0] = H
                kc[m0] = cv
                ka[m0] = a
                m0 += 1
    return m0


@njit(parallel=True, cache=True)
def pre_sweep(states, actions, comp_of, table_s, table_a, group_j, group_h, c_comp, fallback, cfgs, block,
              grouped, pre_a, pre_level, pre_reason, pre_f):
    """Pre-decisions of many configs from a ScoreTable: each config masks the sorted order.

    A state's sorted row is first narrowed to the actions that pass the loosest filter of
    the chunk, and their softmax exponentials computed once (when the configs share
    DE_TEMPERATURE). With `grouped`, the list is then summarised per group of actions
    that share J, H and C (group_clusters), and each config only tests those groups
    (rank_groups), config by config over SUB_BLOCK states so the outputs are written in
    runs. Otherwise, or when a state's ties defeat the summary, every config scans the
    short list (filter_candidates, rank_candidates).
    """
    n_states = states.shape[0]
    n_actions = actions.shape[0]
    g = comp_of.max() + 1  # grid values: each group holds g actions, one per delay
    n_cfg = cfgs.shape[0]
    bounds = np.array([cfgs[:, J_MIN].min(), cfgs[:, H_MAX].max(), cfgs[:, C_MIN].min(), cfgs[:, C_MAX].max()])
    temperature = cfgs[0, DE_TEMPERATURE]
    same_temperature = (cfgs[:, DE_TEMPERATURE] == temperature).all()
    # With one C range for the whole chunk, the narrowing already applied it exactly.
    check_c = not ((cfgs[:, C_MIN] == bounds[2]).all() and (cfgs[:, C_MAX] == bounds[3]).all())
    n_blocks = (n_states + block - 1) // block
    for b in prange(n_blocks):
        ks = np.empty(n_actions)
        kj = np.empty(n_actions)
        kh = np.empty(n_actions)
        kc = np.empty(n_actions)
        ke = np.empty(n_actions)
        ka = np.empty(n_actions, dtype=np.int64)
        idx = np.empty(n_actions, dtype=np.int64)
        slot_of = np.empty(n_actions // g, dtype=np.int64)
        grp = np.empty((SUB_BLOCK, GROUP_ROWS, n_actions // g))
        n_slots = np.empty(SUB_BLOCK, dtype=np.int64)
        end = min(n_states, (b + 1) * block)
        for i0 in range(b * block, end, SUB_BLOCK):
            i1 = min(end, i0 + SUB_BLOCK)
            for i in range(i0, i1):
                m0 = _narrow(table_s, table_a, group_j, group_h, c_comp, comp_of, g, i, bounds, ks, kj, kh, kc, ka)
                s_top = table_s[i, 0]
                # Shared exponentials only while none of them can underflow.
                shared = same_temperature and m0 > 0 and (s_top - ks[m0 - 1]) / temperature < 600.0
                ke[0] = np.nan
                if shared:
                    for k in range(m0):
                        ke[k] = math.exp((ks[k] - s_top) / temperature)
                n_slots[i - i0] = -1
                if grouped and (shared or m0 == 0):
                    n_slots[i - i0] = group_clusters(states[i], actions, ks, kj, kh, kc, ka, ke, m0, s_top,
                                                     temperature, g, slot_of, grp[i - i0])
                if n_slots[i - i0] < 0:
                    for c in range(n_cfg):
                        m = filter_candidates(kj, kh, kc, m0, cfgs[c], idx, check_c)
                        _pre_decide(states[i], actions, ks, ka, ke, idx, m, fallback[i], cfgs[c], c, i,
                                    pre_a, pre_level, pre_reason, pre_f)
            for c in range(n_cfg):
                cfg = cfgs[c]
                for i in range(i0, i1):
                    if n_slots[i - i0] < 0:
                        continue
                    summary = grp[i - i0]
                    top, n, de_norm, as_norm = rank_groups(summary, n_slots[i - i0], cfg)
                    if top < 0:
                        _no_candidate(fallback[i], c, i, pre_a, pre_level, pre_reason, pre_f)
                        continue
                    confidence, margin, cus, level, reason = escalate_scored(
                        summary[G_J, top], summary[G_H, top], summary[G_C, top], summary[G_STD, top], n, de_norm,
                        as_norm, cfg)
                    _store(int(summary[G_BEST, top]), confidence, margin, cus, level, reason, de_norm, as_norm, c,
                           i, pre_a, pre_level, pre_reason, pre_f)


# ------------------------------------------------------------------------ finish pass


@njit(cache=True)
def drift_step(ring, count, cus_raw):
    """Section 9: push a pre-clamp CUS into the stream's window (count = values seen before).

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


@njit(cache=True)
def settle(st, raw, level, reason, confidence, cus_raw, de_norm, as_norm, delta_cus, cus_mean, cfg, final):
    """Sections 9-11 after the drift window: drift escalation, soft clamp, fail-safe.

    Writes the final action into `final`; returns level, reason, cus, confidence,
    delta_confidence (NaN unless clamped), soft_clamp and the final action's W, J, H, C.
    """
    if level == 0 and ((not math.isnan(delta_cus) and delta_cus > cfg[DELTA_CUS]) or cus_mean > cfg[CUS_MEAN]):
        level = 1
        reason = R_DRIFT
    cus = cus_raw
    delta_conf = np.nan
    clamped = False
    if level == 1:
        soft_clamp(raw, cus_raw, cfg, final)
        W, J, H, C = score_action(st, final[0], final[1], final[2], final[3])
        conf_after, margin_after = confidence_and_margin(W, J, H, C, cfg)
        if (not is_candidate(J, H, C, cfg) or J < cfg[J_CRITICAL] or H > cfg[H_CRITICAL]
                or conf_after < cfg[CONF_FORCE]):
            level = 2
            reason = R_CLAMP_VIOLATION
        else:
            clamped = True
            delta_conf = conf_after - confidence
            confidence = conf_after
            cus = combined_uncertainty(conf_after, margin_after, de_norm, as_norm, cfg)
    if level == 2:
        final[:] = cfg[SAFE:SAFE + 4]
        W, J, H, C = score_action(st, final[0], final[1], final[2], final[3])
    elif level == 0:
        final[:] = raw
        W, J, H, C = score_action(st, raw[0], raw[1], raw[2], raw[3])
    return level, reason, cus, confidence, delta_conf, clamped, W, J, H, C


@njit(parallel=True, cache=True)
def finish(states, actions, cfgs, stream_order, stream_ptr, pre_a, pre_level, pre_reason, pre_f, full, offset,
           rings, seen, o_cus, o_delta_cus, o_cus_mean, o_final, o_soft, o_level, o_conf, o_dconf, o_reason,
           o_scores, sums):
    """Drift, soft clamp and fail-safe, stream by stream in input order.

    `states` may be one part of a longer state set (its first state is number `offset`):
    each (config, stream) task carries its drift window from part to part in
    rings[task] and seen[task] (decisions of that stream so far), so parts decided one
    after the other give exactly what the whole set gives.

    Adds each decision to `sums` (shape (configs * streams, N_SUMS)); with `full`, also
    writes the per-decision columns o_* (shape (configs, N, ...), at offset + index).
    """
    n_streams = stream_ptr.shape[0] - 1
    for task in prange(cfgs.shape[0] * n_streams):
        c = task // n_streams
        s = task % n_streams
        cfg = cfgs[c]
        ring = rings[task, :int(cfg[WINDOW])]
        final = np.empty(4)
        acc = sums[task]
        before = seen[task]
        for k in range(stream_ptr[s + 1] - stream_ptr[s]):
            i = stream_order[stream_ptr[s] + k]
            raw = actions[pre_a[c, i]]
            cus_raw = pre_f[c, i, 2]
            delta_cus, cus_mean = drift_step(ring, before + k, cus_raw)
            level, reason, cus, confidence, delta_conf, clamped, W, J, H, C = settle(
                states[i], raw, pre_level[c, i], pre_reason[c, i], pre_f[c, i, 0], cus_raw,
                pre_f[c, i, 3], pre_f[c, i, 4], delta_cus, cus_mean, cfg, final)
            acc[S_N] += 1.0
            acc[S_L0 + level] += 1.0
            acc[S_CUS] += cus
            acc[S_H_FINAL] += H
            acc[S_REASON + reason] += 1.0
            if clamped:
                acc[S_CLAMPED] += 1.0
                acc[S_DISTORTION] += (abs(final[0] - raw[0]) + abs(final[1] - raw[1])
                                      + abs(final[2] - raw[2]) + abs(final[3] - raw[3])) / 4.0
            if full:
                o = offset + i
                o_cus[c, o] = cus
                o_delta_cus[c, o] = delta_cus
                o_cus_mean[c, o] = cus_mean
                o_final[c, o] = final
                o_soft[c, o] = clamped
                o_level[c, o] = level
                o_conf[c, o] = confidence
                o_dconf[c, o] = delta_conf
                o_reason[c, o] = reason
                o_scores[c, o, 0] = W
                o_scores[c, o, 1] = J
                o_scores[c, o, 2] = H
                o_scores[c, o, 3] = C
        seen[task] = before + stream_ptr[s + 1] - stream_ptr[s]

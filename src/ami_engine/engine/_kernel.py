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

The kernels decide which states, actions and groups of actions they visit; each rule
itself is a function of rules.py, which every path calls. A config is a float64 row laid
out as config.params.KERNEL_ROW (Config.kernel_row writes it).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..io.traces import REASONS
from .rules import (
    C_MAX,
    C_MIN,
    DE_TEMPERATURE,
    H_MAX,
    J_MIN,
    R_CLAMP_VIOLATION,
    R_DRIFT,
    WINDOW,
    candidate_filter,
    clamp_violation,
    combined_uncertainty,
    confidence,
    confidence_from_spread,
    distinct_scores,
    divergence,
    drift_escalates,
    drift_window,
    escalation,
    fail_safe,
    first_tied,
    is_candidate,
    is_distinct,
    no_candidate_action,
    no_valid_candidate,
    selection,
    soft_clamp,
    spread,
    ties_with_best,
    uncertainty,
)
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
    moral_C,
    moral_H,
    moral_J,
    moral_W,
    score_action,
    selection_score,
)

# Per-config sums (finish pass, sums mode).
S_N, S_L0, S_L1, S_L2, S_CUS, S_DISTORTION, S_CLAMPED, S_H_FINAL = range(8)
S_REASON = 8
N_SUMS = S_REASON + len(REASONS)


SORT_MOVES_PER_KEY = 8  # insertion-sort moves per key before a sort falls back to merging


@njit(cache=True)
def sort_scratch(n):
    """Scratch arrays for sort_descending of up to n keys."""
    return np.empty(n), np.empty(n, dtype=np.int64), np.empty(2 * n, dtype=np.int64), np.empty(n, dtype=np.int64)


@njit(cache=True)
def sort_descending(keys, items, m, with_items, run, scratch):
    """Stable sort of keys[:m] descending in place, items[:m] (the actions) moved with them
    when `with_items`; scratch: sort_scratch(m or more).

    Equal keys keep their input order (grid order), as section 5's tie rule needs. A
    distribution sort: each key goes, in input order, to one of 2m buckets of equal width
    between the largest and the smallest key, then an insertion sort finishes within the
    buckets. The bucket order is the key order exactly ((hi - key) * scale does not
    decrease as the key does, in floating point too), so this is the sort's one result.
    Keys crowded into a few buckets would cost the insertion sort up to m^2 moves: past
    SORT_MOVES_PER_KEY moves per key it stops and a bottom-up merge sort finishes (runs of
    `run` sorted by insertion, then merged; a run whose keys already descend costs one
    comparison per key), so no sort costs more than m log m steps."""
    if m < 2:
        return
    tmp_k, tmp_i, counts, slot = scratch
    hi = keys[0]
    lo = keys[0]
    for k in range(1, m):
        hi = max(hi, keys[k])
        lo = min(lo, keys[k])
    if hi == lo:  # all equal: already in order
        return
    nb = 2 * m
    scale = (nb - 1) / (hi - lo)
    spread_out = scale > 0.0 and scale < np.inf
    if spread_out:
        counts[:nb] = 0
        for k in range(m):
            d = (hi - keys[k]) * scale
            if not (d >= 0.0 and d < nb):  # NaN keys: no bucket
                spread_out = False
                break
            slot[k] = int(d)
            counts[slot[k]] += 1
    if spread_out:
        total = 0
        for b in range(nb):
            c = counts[b]
            counts[b] = total
            total += c
        for k in range(m):
            to = counts[slot[k]]
            counts[slot[k]] = to + 1
            tmp_k[to] = keys[k]
            if with_items:
                tmp_i[to] = items[k]
        keys[:m] = tmp_k[:m]
        if with_items:
            items[:m] = tmp_i[:m]
        budget = SORT_MOVES_PER_KEY * m
        for i in range(1, m):
            key, item = keys[i], items[i]
            j = i - 1
            while j >= 0 and keys[j] < key:
                keys[j + 1] = keys[j]
                if with_items:
                    items[j + 1] = items[j]
                j -= 1
            keys[j + 1] = key
            if with_items:
                items[j + 1] = item
            budget -= i - 1 - j
            if budget < 0:
                break
        if budget >= 0:
            return
    _merge_sort(keys, items, m, with_items, run, tmp_k, tmp_i)


@njit(cache=True)
def _merge_sort(keys, items, m, with_items, run, tmp_keys, tmp_items):
    """Stable bottom-up merge sort of keys[:m] descending (see sort_descending)."""
    for lo in range(0, m, run):
        for i in range(lo + 1, min(lo + run, m)):
            key, item = keys[i], items[i]
            j = i - 1
            while j >= lo and keys[j] < key:
                keys[j + 1] = keys[j]
                if with_items:
                    items[j + 1] = items[j]
                j -= 1
            keys[j + 1] = key
            if with_items:
                items[j + 1] = item
    width = run
    sk, si, dk, di = keys, items, tmp_keys, tmp_items
    while width < m:
        for lo in range(0, m, 2 * width):
            mid = min(lo + width, m)
            hi = min(lo + 2 * width, m)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                later = sk[j] > sk[i]  # strictly: an equal key from the later run waits
                dk[k] = sk[j] if later else sk[i]
                if with_items:
                    di[k] = si[j] if later else si[i]
                j += later
                i += 1 - later
                k += 1
            while i < mid:
                dk[k] = sk[i]
                if with_items:
                    di[k] = si[i]
                i += 1
                k += 1
            while j < hi:
                dk[k] = sk[j]
                if with_items:
                    di[k] = si[j]
                j += 1
                k += 1
        sk, si, dk, di = dk, di, sk, si
        width *= 2
    if sk is not keys:
        keys[:m] = sk[:m]
        if with_items:
            items[:m] = si[:m]


@njit(cache=True)
def escalate(st, action, n_distinct, de, as_, cfg):
    """Sections 6-8 for the selected action: confidence, margin, CUS, level and reason."""
    W, J, H, C = score_action(st, action[0], action[1], action[2], action[3])
    return escalate_scored(J, H, C, spread(W, J, H, C), n_distinct, de, as_, cfg)


@njit(cache=True)
def escalate_scored(J, H, C, std, n_distinct, de, as_, cfg):
    """escalate() once the selected action's J, H, C and spread are known."""
    conf, margin = confidence_from_spread(std, J, H, C, cfg)
    cus = combined_uncertainty(conf, margin, de, as_, cfg)
    level, reason = escalation(J, H, conf, divergence(conf, de, n_distinct), as_, cfg)
    return conf, margin, cus, level, reason


# ------------------------------------------------------------------ pre-decision pass


@njit(cache=True, inline="always")
def score_state(st, actions, comp_of, comp_values, sw, j_min, h_max, c_min, c_max, s_out, j_out, h_out, c_comp,
                order):
    """Section 3: the scores of one state's grid actions that can pass the candidate filter
    with the bounds given (infinite bounds: every action).

    J and H do not depend on the delay and C depends on the compassion only, so they are
    computed once per (severity, compassion, intervention) group: the grid enumerates
    delay fastest, so each run of len(grid) consecutive actions is a group. The filter is
    applied per group before any W or S is computed. Writes J and H of every group into
    j_out, h_out, C per compassion value into c_comp, S of each action scored into s_out
    (by grid index) and those actions, in grid order, into order; returns their number."""
    g = comp_values.shape[0]
    # The state's fields and the weights read once: for all the compiler knows, the stores
    # below could change them.
    context, risk, justice, social, harm_sens = st[CONTEXT], st[RISK], st[JUSTICE], st[SOCIAL], st[HARM_SENS]
    weights = (sw[0], sw[1], sw[2], sw[3])
    for c in range(g):
        c_comp[c] = moral_C(st[PHYSICAL], st[COMPASSION], st[RESPONSIBILITY], st[EMPATHY], comp_values[c])
    m = 0
    for group in range(actions.shape[0] // g):
        first = group * g
        sev, comp, itv = actions[first, 0], actions[first, 1], actions[first, 2]
        J = moral_J(context, risk, justice, sev, comp, itv)
        H = moral_H(social, harm_sens, sev, comp, itv)
        C = c_comp[comp_of[first]]
        j_out[group] = J
        h_out[group] = H
        if not candidate_filter(J, H, C, j_min, h_max, c_min, c_max):
            continue
        for a in range(first, first + g):
            W = moral_W(risk, sev, comp, itv, actions[a, 3])
            s_out[a] = selection_score(W, J, H, C, weights)
            order[m] = a
            m += 1
    return m


@njit(cache=True, inline="always")
def _store(best, conf, margin, cus, level, reason, de, as_, c, i, pre_a, pre_level, pre_reason, pre_f):
    pre_a[c, i] = best
    pre_level[c, i] = level
    pre_reason[c, i] = reason
    pre_f[c, i, 0] = conf
    pre_f[c, i, 1] = margin
    pre_f[c, i, 2] = cus
    pre_f[c, i, 3] = de
    pre_f[c, i, 4] = as_


@njit(cache=True)
def _no_candidate(fallback, c, i, pre_a, pre_level, pre_reason, pre_f):
    """Section 8 without any candidate (margin, DE_norm and AS_norm unused: 0, 0, 1)."""
    conf, cus, level, reason = no_valid_candidate()
    _store(fallback, conf, 0.0, cus, level, reason, 0.0, 1.0, c, i, pre_a, pre_level, pre_reason, pre_f)


@njit(cache=True)
def _pre_decide(st, actions, ks, ka, ke, idx, m, fallback, cfg, c, i, pre_a, pre_level, pre_reason, pre_f):
    if m == 0:
        _no_candidate(fallback, c, i, pre_a, pre_level, pre_reason, pre_f)
        return
    best, n, de, as_ = selection(ks, ka, ke, idx, m, cfg)
    conf, margin, cus, level, reason = escalate(st, actions[best], n, de, as_, cfg)
    _store(best, conf, margin, cus, level, reason, de, as_, c, i, pre_a, pre_level, pre_reason, pre_f)


PRE_FLOATS = 5  # confidence, margin, cus, de_norm, as_norm


@njit(cache=True, inline="always")
def _grid_fallback(st, actions, comp_of, sw, g, j_grp, h_grp, c_comp, s_all, firsts):
    """Section 8 without any candidate: the first action of the whole grid whose S is
    within TIE of the best S of all actions (rules.no_candidate_action), scoring only the
    first action of each group, from the group's J and H and C already known.

    Within a group S does not increase with the delay, exactly in floating point: the
    delay enters W only through the terms 0.2 * intervention * (1 - delay) and
    -0.1 * risk * delay, neither of which grows with it (intervention, risk >= 0), every
    further operation is monotone and rounding keeps order, the weights are non-negative
    and the grid ascends. So a group's first action holds its highest S, the best of
    these is the best of the grid, and the first action in grid order within TIE of it
    is the first action of the first group whose first action is."""
    risk = st[RISK]
    weights = (sw[0], sw[1], sw[2], sw[3])
    n_groups = actions.shape[0] // g
    s_max = -np.inf
    for group in range(n_groups):
        a = group * g
        W = moral_W(risk, actions[a, 0], actions[a, 1], actions[a, 2], actions[a, 3])
        s_all[a] = selection_score(W, j_grp[group], h_grp[group], c_comp[comp_of[a]], weights)
        firsts[group] = a
        s_max = max(s_max, s_all[a])
    return first_tied(s_all, firsts, n_groups, s_max)


@njit(cache=True, inline="always")
def _own_candidates(union, m_union, g, j_grp, h_grp, c_comp, comp_of, cfg, order):
    """A config's candidates among those of the loosest bounds (`union`: whole groups of g
    actions in grid order, as score_state lists them), into order, in grid order; returns
    their number. The filter is tested once per group: J, H and C are the group's."""
    m = 0
    for k in range(0, m_union, g):
        first = union[k]
        if is_candidate(j_grp[first // g], h_grp[first // g], c_comp[comp_of[first]], cfg):
            for a in range(first, first + g):
                order[m] = a
                m += 1
    return m


@njit(parallel=True, cache=True)
def pre_direct(states, actions, comp_of, comp_values, sw, cfgs, block, pre_a, pre_level, pre_reason, pre_f):
    """Pre-decisions of the configs in the rows of `cfgs` (row c of the outputs for config
    c), scoring each state on the fly, once for all of them.

    Only the actions of the groups that pass the loosest filter of the configs are scored;
    each config takes its own candidates among them (_own_candidates) and sorts only
    their scores (section 5's walk needs the values in order; the selected action is the
    first candidate in grid order that ties with the best). A config without any
    candidate gets the action of section 8, found once per state from the first action of
    each group (_grid_fallback)."""
    n_states = states.shape[0]
    n_actions = actions.shape[0]
    g = comp_values.shape[0]
    n_cfg = cfgs.shape[0]
    loosest = (cfgs[:, J_MIN].min(), cfgs[:, H_MAX].max(), cfgs[:, C_MIN].min(), cfgs[:, C_MAX].max())
    for b in prange((n_states + block - 1) // block):
        s_all = np.empty(n_actions)
        j_grp = np.empty(n_actions // g)
        h_grp = np.empty(n_actions // g)
        c_comp = np.empty(g)
        union = np.empty(n_actions, dtype=np.int64)
        order = np.empty(n_actions, dtype=np.int64)
        firsts = np.empty(n_actions // g, dtype=np.int64)
        ks = np.empty(n_actions)
        scratch = sort_scratch(n_actions)
        idx = np.arange(n_actions)
        no_shared = np.full(1, np.nan)
        for i in range(b * block, min(n_states, (b + 1) * block)):
            st = states[i]
            m_union = score_state(st, actions, comp_of, comp_values, sw, loosest[0], loosest[1], loosest[2],
                                  loosest[3], s_all, j_grp, h_grp, c_comp, union)
            fallback = -1
            for c in range(n_cfg):
                cfg = cfgs[c]
                cand = union
                m = m_union
                if n_cfg > 1:
                    cand = order
                    m = _own_candidates(union, m_union, g, j_grp, h_grp, c_comp, comp_of, cfg, order)
                if m == 0:
                    if fallback < 0:
                        fallback = _grid_fallback(st, actions, comp_of, sw, g, j_grp, h_grp, c_comp, s_all, firsts)
                    _no_candidate(fallback, c, i, pre_a, pre_level, pre_reason, pre_f)
                    continue
                # Collected group by group, each group's scores descending (see _grid_fallback).
                for k in range(m):
                    ks[k] = s_all[cand[k]]
                sort_descending(ks, idx, m, False, g, scratch)
                best = first_tied(s_all, cand, m, ks[0])
                n, de, as_ = distinct_scores(ks, no_shared, idx, m, cfg)
                conf, margin, cus, level, reason = escalate(st, actions[best], n, de, as_, cfg)
                _store(best, conf, margin, cus, level, reason, de, as_, c, i, pre_a, pre_level, pre_reason, pre_f)


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
        order = np.empty(n_actions, dtype=np.int64)
        ks = np.empty(n_actions)
        scratch = sort_scratch(n_actions)
        for i in range(b * block, min(n_states, (b + 1) * block)):
            score_state(states[i], actions, comp_of, comp_values, sw, -np.inf, np.inf, -np.inf, np.inf, s_all,
                        group_j[i], group_h[i], c_comp[i], order)
            ks[:] = s_all
            sort_descending(ks, order, n_actions, True, g, scratch)
            for k in range(n_actions):
                table_s[i, k] = ks[k]
                table_a[i, k] = order[k]
            fallback[i] = no_candidate_action(s_all)


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
        best = ka[k]
        k += 1
        while k < m0 and not is_distinct(ks[k], ks[k - 1]):
            if not ties_with_best(ks[k], s_first) or kj[k] != kj[first] or kh[k] != kh[first] or kc[k] != kc[first]:
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
def _group_passes(grp, slot, cfg):
    return is_candidate(grp[G_J, slot], grp[G_H, slot], grp[G_C, slot], cfg)


@njit(cache=True)
def rank_groups(grp, n_slots, cfg):
    """Sections 5 and 7 from group_clusters' summary: the same answer as rules.selection
    over the candidates, in one short pass over the groups.

    Returns the selected group's slot (-1 without candidates), n, DE_norm and AS_norm."""
    top = 0
    while top < n_slots and not _group_passes(grp, top, cfg):
        top += 1
    if top == n_slots:
        return -1, 0, 0.0, 1.0
    # Softmax sums over the passing groups in slot order; a failing group adds an exact zero.
    second = grp[G_SECOND, top]
    a = b = n = 0.0
    for slot in range(top, n_slots):
        ok = _group_passes(grp, slot, cfg)
        a += grp[G_A, slot] if ok else 0.0
        b += grp[G_B, slot] if ok else 0.0
        n += grp[G_N, slot] if ok else 0.0
    if n >= 2.0:
        for slot in range(top + 1, n_slots):
            if _group_passes(grp, slot, cfg):
                second = max(second, grp[G_TOP, slot])
                break
    de, as_ = uncertainty(int(n), a, b, grp[G_TOP, top] - second, cfg)
    return top, int(n), de, as_


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
        C = c_comp[i, comp_of[a]]
        if candidate_filter(J, H, C, j_lo, h_hi, c_lo, c_hi):
            ks[m0] = table_s[i, k]
            kj[m0] = J
            kh[m0] = H
            kc[m0] = C
            ka[m0] = a
            m0 += 1
    return m0


@njit(cache=True)
def filter_candidates(kj, kh, kc, m0, cfg, idx):
    """The candidates (section 4) among m0 narrowed actions: their positions into idx, their
    number."""
    m = 0
    for k in range(m0):
        idx[m] = k
        m += is_candidate(kj[k], kh[k], kc[k], cfg)
    return m


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
    short list (filter_candidates, rules.selection).
    """
    n_states = states.shape[0]
    n_actions = actions.shape[0]
    g = comp_of.max() + 1  # grid values: each group holds g actions, one per delay
    n_cfg = cfgs.shape[0]
    bounds = np.array([cfgs[:, J_MIN].min(), cfgs[:, H_MAX].max(), cfgs[:, C_MIN].min(), cfgs[:, C_MAX].max()])
    temperature = cfgs[0, DE_TEMPERATURE]
    same_temperature = (cfgs[:, DE_TEMPERATURE] == temperature).all()
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
                        m = filter_candidates(kj, kh, kc, m0, cfgs[c], idx)
                        _pre_decide(states[i], actions, ks, ka, ke, idx, m, fallback[i], cfgs[c], c, i,
                                    pre_a, pre_level, pre_reason, pre_f)
            for c in range(n_cfg):
                cfg = cfgs[c]
                for i in range(i0, i1):
                    if n_slots[i - i0] < 0:
                        continue
                    summary = grp[i - i0]
                    top, n, de, as_ = rank_groups(summary, n_slots[i - i0], cfg)
                    if top < 0:
                        _no_candidate(fallback[i], c, i, pre_a, pre_level, pre_reason, pre_f)
                        continue
                    conf, margin, cus, level, reason = escalate_scored(
                        summary[G_J, top], summary[G_H, top], summary[G_C, top], summary[G_STD, top], n, de, as_, cfg)
                    _store(int(summary[G_BEST, top]), conf, margin, cus, level, reason, de, as_, c, i, pre_a,
                           pre_level, pre_reason, pre_f)


# ------------------------------------------------------------------------ finish pass


@njit(cache=True)
def settle(st, raw, level, reason, conf, cus_raw, de, as_, delta_cus, cus_mean, cfg, final):
    """Sections 9-11 once the drift window has given delta_cus and cus_mean: drift
    escalation, then the soft clamp of a level-1 decision, then the fail-safe of level 2.

    Writes the final action into `final`; returns level, reason, cus, confidence,
    delta_confidence (NaN unless clamped), soft_clamp and the final action's W, J, H, C.
    """
    if drift_escalates(level, delta_cus, cus_mean, cfg):
        level = 1
        reason = R_DRIFT
    cus = cus_raw
    delta_conf = np.nan
    clamped = False
    if level == 1:
        soft_clamp(raw, cus_raw, cfg, final)
        W, J, H, C = score_action(st, final[0], final[1], final[2], final[3])
        conf_after, margin_after = confidence(W, J, H, C, cfg)
        if clamp_violation(J, H, C, conf_after, cfg):
            level = 2
            reason = R_CLAMP_VIOLATION
        else:
            clamped = True
            delta_conf = conf_after - conf
            conf = conf_after
            cus = combined_uncertainty(conf_after, margin_after, de, as_, cfg)
    if level == 2:
        W, J, H, C = fail_safe(st, cfg, final)
    elif level == 0:
        final[:] = raw
        W, J, H, C = score_action(st, raw[0], raw[1], raw[2], raw[3])
    return level, reason, cus, conf, delta_conf, clamped, W, J, H, C


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
            delta_cus, cus_mean = drift_window(ring, before + k, cus_raw)
            level, reason, cus, conf, delta_conf, clamped, W, J, H, C = settle(
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
                o_conf[c, o] = conf
                o_dconf[c, o] = delta_conf
                o_reason[c, o] = reason
                o_scores[c, o, 0] = W
                o_scores[c, o, 1] = J
                o_scores[c, o, 2] = H
                o_scores[c, o, 3] = C
        seen[task] = before + stream_ptr[s + 1] - stream_ptr[s]

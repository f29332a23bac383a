"""Moral scores of (state, action), docs/engine.md §3 — one function per score.

Each function is compiled with Numba for the engine's kernels and keeps the formula as
the spec writes it. State fields are passed by name; `sev, comp, itv, dly` is the action.
These scores never depend on thresholds, so the sweep path computes them once per state
set and shares them between every candidate config.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numba import njit

from ..io.stateset import STATE_FIELDS

# Column of each state field in StateSet.values (kernels index rows with these).
PHYSICAL, SOCIAL, CONTEXT, RISK, COMPASSION, JUSTICE, HARM_SENS, RESPONSIBILITY, EMPATHY = range(len(STATE_FIELDS))


@njit(cache=True, inline="always")
def clip(x):
    return min(1.0, max(0.0, x))


@njit(cache=True, inline="always")
def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True)
def moral_W(risk, sev, comp, itv, dly):
    harm_c = 0.4 * sev + 0.3 * (1.0 - comp) + 0.3 * risk
    return clip(1.0 - 0.6 * harm_c + 0.4 * (0.5 * itv * (1.0 - dly)) - 0.1 * risk * dly)


@njit(cache=True)
def moral_J(context, risk, justice, sev, comp, itv):
    j_ctx = 1.0 - 0.5 * max(0.0, context - itv) if risk > 0.5 else 1.0
    j_state = 1.0 - (1.0 - justice) * (0.25 + 0.75 * sev)
    j_prop = 1.0 - 0.6 * max(0.0, risk - 0.3 - sev)
    return clip(min(1.0 - 0.5 * sev, 0.5 + 0.5 * comp, j_ctx, j_state, j_prop))


@njit(cache=True)
def moral_H(social, harm_sens, sev, comp, itv):
    return clip((0.5 * sev * (1.0 - comp) + 0.3 * (1.0 - comp) * itv + 0.2 * social * sev) * (0.5 + harm_sens))


@njit(cache=True)
def moral_C(physical, compassion, responsibility, empathy, comp):
    c_raw = 0.3 * empathy + 0.3 * (1.0 - physical) + 0.2 * compassion + 0.1 * comp - 0.2 * responsibility
    return sig(4.0 * (c_raw - 0.35))


@njit(cache=True)
def score_action(st, sev, comp, itv, dly):
    """W, J, H, C of one action in the state row `st`."""
    W = moral_W(st[RISK], sev, comp, itv, dly)
    J = moral_J(st[CONTEXT], st[RISK], st[JUSTICE], sev, comp, itv)
    H = moral_H(st[SOCIAL], st[HARM_SENS], sev, comp, itv)
    C = moral_C(st[PHYSICAL], st[COMPASSION], st[RESPONSIBILITY], st[EMPATHY], comp)
    return W, J, H, C


@njit(cache=True, inline="always")
def selection_score(W, J, H, C, sw):
    """S = w0*W + w1*J - w2*H + w3*C (H is subtracted)."""
    return sw[0] * W + sw[1] * J - sw[2] * H + sw[3] * C


def action_grid(grid) -> np.ndarray:
    """Every action of the grid in grid order (delay fastest), shape (len(grid)**4, 4)."""
    return np.array(list(itertools.product(grid, repeat=4)), dtype=np.float64)

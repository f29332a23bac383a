"""Learning (Phase 6.1 history): loss, metrics and the seven parameters per optimisation step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..config.params import LEARNED_PARAMS
from ._figures import (
    ALLOWED,
    BASELINE,
    HELDOUT,
    SUGGESTION,
    TRAIN,
    figure,
    grid_position,
    percent,
    rounded,
    small_multiples,
    subplot_lines,
)
from ._html import Markup, join, missing, num, tag
from ._inputs import ReportData
from ._page import Page

_SPLITS = (("", "train", TRAIN, "solid"), ("heldout_", "held-out", HELDOUT, "dash"))
# (history key, subplot title, axis title, drawn as %)
_METRICS = (
    ("fail_safe_rate", "fail-safe rate", "fail-safe rate (%)", True),
    ("mean_cus", "mean CUS", "mean CUS (0\u20131)", False),
    ("clamp_distortion", "clamp distortion", "clamp distortion (0\u20131)", False),
)
_PARAM_COLS = 4


def learning_panel(data: ReportData, page: Page) -> Markup:
    history = data.history
    if history is None:
        return missing("No optimisation history given. Pass `--history history.jsonl` (written by "
                       "`ami-engine learn --history history.jsonl`) to see the loss, the metrics and the "
                       "parameters at each step of the search.")
    steps = [num(r.get("step")) for r in history]
    if any(s is None for s in steps):
        steps = list(range(len(history)))
    cards = [
        page.chart("fig-learning-loss", _loss_figure(history, steps, _baseline_loss(data)),
                   "Loss L of the best config so far, on the training data (which chooses it) and on the held-out "
                   "data (which never does); dotted: the baseline's L on each. One step is one batch of "
                   "candidates.", wide=True),
        page.chart("fig-learning-metrics", _metrics_figure(history, steps),
                   "The three terms of the loss for the best config so far.", wide=True),
        page.chart("fig-learning-params", _params_figure(data, history, steps),
                   "The seven learned parameters of the best config so far. Green band: the learning bounds; "
                   "dotted grey line: the baseline's value.", wide=True),
    ]
    return tag("div", join(cards), cls="grid")


def _baseline_loss(data: ReportData) -> dict[str, float | None]:
    return {split: num((data.metrics(split, "baseline") or {}).get("L")) for split in ("train", "heldout")}


def _series(history: Sequence[Mapping], key: str) -> list[float | None]:
    return [num(r.get(key)) for r in history]


def _loss_figure(history: Sequence[Mapping], steps: list, baseline: Mapping | None = None) -> go.Figure:
    fig = figure("Loss L per step", height=300)
    for key, label, color in (("train", "baseline, train", TRAIN), ("heldout", "baseline, held-out", HELDOUT)):
        value = num((baseline or {}).get(key))
        if value is not None:  # the baseline's L: a flat line to measure each step against
            fig.add_trace(go.Scatter(
                x=[steps[0], steps[-1]] if steps else [], y=[value, value], name=label, mode="lines",
                line=dict(color=color, dash="dot", width=1.5), opacity=0.6,
                hovertemplate="baseline L = %{y:.4f}<extra>" + label + "</extra>",
            ))
    for prefix, label, color, dash in _SPLITS:
        fig.add_trace(go.Scatter(
            x=steps, y=rounded(_series(history, prefix + "L")), name=label, mode="lines+markers",
            line=dict(color=color, dash=dash, width=2), marker=dict(size=5),
            hovertemplate="step %{x}: L = %{y:.4f}<extra>" + label + "</extra>",
        ))
    fig.update_xaxes(title_text="optimisation step")
    fig.update_yaxes(title_text="loss L")
    return fig


def _metrics_figure(history: Sequence[Mapping], steps: list) -> go.Figure:
    fig = figure("Metrics per step", height=330, rows=1, cols=len(_METRICS),
                 subplot_titles=[title for _, title, _, _ in _METRICS], horizontal_spacing=0.08)
    for col, (key, _, axis_title, as_pct) in enumerate(_METRICS, start=1):
        for prefix, label, color, dash in _SPLITS:
            values = _series(history, prefix + key)
            fig.add_trace(go.Scatter(
                x=steps, y=percent(values) if as_pct else rounded(values), name=label, legendgroup=label,
                showlegend=col == 1, mode="lines+markers", line=dict(color=color, dash=dash, width=2),
                marker=dict(size=4), hovertemplate="step %{x}: %{y:.3f}" + (" %" if as_pct else "")
                + "<extra>" + label + "</extra>",
            ), row=1, col=col)
        fig.update_yaxes(title_text=axis_title, ticksuffix=" %" if as_pct else "", row=1, col=col)
        fig.update_xaxes(title_text="optimisation step", row=1, col=col)
    return fig


def _params_figure(data: ReportData, history: Sequence[Mapping], steps: list) -> go.Figure:
    fig = small_multiples("Learned parameters per step", LEARNED_PARAMS, _PARAM_COLS, panel_height=230,
                          horizontal_spacing=0.06, vertical_spacing=0.2)
    shapes: list[dict] = []
    for i, name in enumerate(LEARNED_PARAMS):
        where = grid_position(i, _PARAM_COLS)
        lo, hi = data.bounds[name]
        fig.add_trace(go.Scatter(
            x=steps, y=rounded(_series(history, name)), mode="lines+markers", name=name, showlegend=False,
            line=dict(color=SUGGESTION, width=2, shape="hv"), marker=dict(size=4),
            hovertemplate="step %{x}: " + name + " = %{y:.4f}<extra></extra>",
        ), **where)
        levels = [(bound, dict(color="#2e7d32", width=1)) for bound in (lo, hi)]
        if data.baseline[name] is not None:
            levels.append((data.baseline[name], dict(color=BASELINE, width=1.5, dash="dot")))
        shapes += subplot_lines(fig, where["row"], where["col"], levels, band=(lo, hi, ALLOWED))
        pad = 0.08 * (hi - lo)
        fig.update_yaxes(range=[lo - pad, hi + pad], **where)
        fig.update_xaxes(title_text="step", **where)
    fig.update_layout(shapes=shapes)
    return fig

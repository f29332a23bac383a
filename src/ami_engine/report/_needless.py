"""Needless fail-safes: decisions that are L2 under the baseline and not under the suggestion.

This panel answers the mission's question, "under which conditions do I fail-safe
needlessly?": how many, by the baseline's reason, where they go, and in which region of
the state space they lie compared with all states.
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go

from ..io.stateset import STATE_FIELDS
from ._figures import (
    BASELINE,
    LEVEL_COLORS,
    LEVEL_NAMES,
    SUGGESTION,
    figure,
    grid_position,
    percent,
    rounded,
    small_multiples,
)
from ._html import Markup, fmt_count, fmt_delta, fmt_num, fmt_pct, join, missing, num, nums, table, tag, with_code
from ._inputs import ReportData
from ._page import Page

BASELINE_REASONS = ("j_critical", "h_critical", "low_confidence", "divergence", "no_valid_candidate")
_FIELDS_COLS = 3


def needless_panel(data: ReportData, page: Page) -> Markup:
    needless = data.table("needless")
    count = num(data.at("needless", "count"))
    if needless is None or count is None:
        return missing("No needless fail-safes recorded (`[meta.needless]`). `ami-engine learn` writes them into "
                       "its suggestion file when it learns from states or replayable traces; pass that file.")
    baseline_l2, n = num(needless.get("baseline_l2")), num(needless.get("n"))
    stats = tag("div", join([
        _stat(fmt_count(count), "needless fail-safes"),
        _stat(fmt_pct(count / baseline_l2) if baseline_l2 else "\u2014",
              f"of the baseline's {fmt_count(baseline_l2)} fail-safes"),
        _stat(fmt_pct(count / n) if n else "\u2014", f"of all {fmt_count(n)} decisions"),
    ]), cls="stats")
    summary = needless.get("summary")
    sentences = [s for s in summary if isinstance(s, str)] if isinstance(summary, list) else []
    if count == 0:
        sentences = ["The suggestion removes none of the baseline's fail-safes on your data."]
    head = [stats]
    definition = _definition(needless, count)
    if definition is not None:
        head.append(definition)
    if sentences:
        head.append(tag("div", join([tag("h3", "Where they lie"),
                                     tag("ul", join(tag("li", with_code(s)) for s in sentences))]), cls="card"))
    cards = []
    if count > 0:
        cards.append(page.chart("fig-needless-reasons", _reasons_figure(needless),
                                "Left: the rule that made the baseline fail safe. Right: the level the same "
                                "decisions get under the suggestion."))
    fields_table = _fields_table(needless.get("fields"))
    if fields_table is not None:
        cards.append(tag("div", join([tag("h3", "State fields: means"), fields_table]), cls="card"))
    histograms = needless.get("histograms")
    if isinstance(histograms, Mapping) and histograms and count > 0:
        cards.append(page.chart(
            "fig-needless-fields", _fields_figure(histograms),
            "Distribution of each state field over all states (grey) and over the needless fail-safes (blue), each "
            "normalised to 100 %. Where blue stands above grey, needless fail-safes are over-represented.",
            wide=True))
    return join([tag("div", join(head), cls="split"), tag("div", join(cards), cls="grid")])


def _definition(needless: Mapping, count: float) -> Markup | None:
    """What makes a removed fail-safe needless, whether these meet it, and how close their
    final actions sit to the learned bounds J_MIN and H_MAX."""
    text = needless.get("definition")
    if not isinstance(text, str):
        return None
    body = [tag("p", text)]
    meets = num(needless.get("meet_invariants"))
    if meets is not None and count:
        body.append(tag("p", f"{fmt_count(meets)} of the {fmt_count(count)} decisions meet it."))
    margins = needless.get("margins")
    rows = []
    for key, label in (("J_minus_J_MIN", "J \u2212 J_MIN"), ("H_MAX_minus_H", "H_MAX \u2212 H")):
        q = margins.get(key) if isinstance(margins, Mapping) else None
        if isinstance(q, Mapping) and num(q.get("n")):
            rows.append([label, *(fmt_num(q.get(k), 3) for k in ("min", "p10", "median", "max"))])
    if rows:
        body.append(table(["distance to the bound", "min", "10th percentile", "median", "max"], rows))
        body.append(tag("p", "How close the final actions of these decisions sit to the learned bounds (0: on "
                             "the bound).", cls="note"))
    return tag("div", join([tag("h3", "What makes a fail-safe needless"), *body]), cls="card")


def _stat(value: str, label: str) -> Markup:
    return tag("div", join([tag("b", value), tag("span", label)]), cls="stat")


def _reasons_figure(needless: Mapping) -> go.Figure:
    fig = figure("Needless fail-safes: why, and what they become", height=340, rows=1, cols=2,
                 subplot_titles=["baseline's reason", "level under the suggestion"], horizontal_spacing=0.22,
                 column_widths=[0.55, 0.45])
    by_reason = needless.get("by_reason") if isinstance(needless.get("by_reason"), Mapping) else {}
    reasons = [r for r in BASELINE_REASONS if r in by_reason] + sorted(str(r) for r in by_reason
                                                                       if r not in BASELINE_REASONS)
    fig.add_trace(go.Bar(
        x=[num(by_reason[r]) or 0 for r in reasons], y=reasons, orientation="h", marker_color=BASELINE,
        showlegend=False, hovertemplate="%{y}: %{x:,}<extra></extra>",
    ), row=1, col=1)
    new_level = needless.get("new_level") if isinstance(needless.get("new_level"), Mapping) else {}
    levels = [lv for lv in ("0", "1") if lv in new_level]
    fig.add_trace(go.Bar(
        x=[num(new_level[lv]) or 0 for lv in levels], y=[LEVEL_NAMES[int(lv)] for lv in levels], orientation="h",
        marker_color=[LEVEL_COLORS[int(lv)] for lv in levels], showlegend=False,
        hovertemplate="%{y}: %{x:,}<extra></extra>",
    ), row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="decisions (count)")
    return fig


def _fields_table(fields: object) -> Markup | None:
    if not isinstance(fields, list):
        return None
    rows = []
    for entry in fields:
        if not isinstance(entry, Mapping):
            continue
        needless, every = num(entry.get("mean_needless")), num(entry.get("mean_all"))
        gap = None if needless is None or every is None else needless - every
        rows.append((-abs(gap) if gap is not None else 0.0, [
            str(entry.get("field", "?")), fmt_num(needless, 2), fmt_num(every, 2),
            fmt_num(entry.get("mean_still_l2"), 2), fmt_delta(every, needless, digits=2),
        ]))
    if not rows:
        return None
    rows.sort(key=lambda pair: pair[0])  # stable: equal gaps keep the file's order
    return table(["field", "needless", "all states", "still L2", "needless \u2212 all"], [r for _, r in rows])


def _fields_figure(histograms: Mapping) -> go.Figure:
    names = [f for f in STATE_FIELDS if f in histograms] + sorted(str(f) for f in histograms
                                                                  if f not in STATE_FIELDS)
    rows = -(-len(names) // _FIELDS_COLS)
    fig = small_multiples("Needless fail-safes by state region", names, _FIELDS_COLS, panel_height=210,
                          horizontal_spacing=0.07, vertical_spacing=0.12)
    for i, name in enumerate(names):
        hist = histograms[name] if isinstance(histograms[name], Mapping) else {}
        edges = hist.get("edges")
        n_bins = len(edges) - 1 if isinstance(edges, list) and len(edges) > 1 else 0
        edges = nums(edges, n_bins + 1)
        if not edges:
            continue
        centres = rounded([(a + b) / 2 for a, b in zip(edges, edges[1:])])
        where = grid_position(i, _FIELDS_COLS)
        for key, label, color in (("all", "all states", BASELINE), ("needless", "needless fail-safes", SUGGESTION)):
            counts = nums(hist.get(key), n_bins)
            total = sum(counts) if counts else 0
            shares = percent([c / total for c in counts]) if total else [0.0] * n_bins
            fig.add_trace(go.Bar(
                x=centres, y=shares, width=(edges[1] - edges[0]) * 0.45, name=label, legendgroup=key,
                showlegend=i == 0, marker_color=color, offsetgroup=key,
                hovertemplate=name + " \u2248 %{x:.2f}: %{y:.1f} %<extra>" + label + "</extra>",
            ), **where)
        fig.update_xaxes(range=[edges[0], edges[-1]], **where)
        fig.update_yaxes(ticksuffix=" %", **where)
    for row in range(1, rows + 1):
        fig.update_yaxes(title_text="share (%)", row=row, col=1)
    for i in range(max(0, len(names) - _FIELDS_COLS), len(names)):  # the bottom subplot of each column
        fig.update_xaxes(title_text="field value (0\u20131)", **grid_position(i, _FIELDS_COLS))
    fig.update_layout(barmode="group")
    return fig

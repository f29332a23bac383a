"""Decision traces: CUS and level timelines, soft-clamp map, decision boundary, confidence.

Trace files can hold a hundred thousand decisions or more. The timelines show the longest
stream's first TIMELINE_CAP decisions; the scatter charts show every k-th record so that
at most SCATTER_CAP points are drawn; the confidence histogram counts every record. Each
caption says what was drawn.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ._figures import BASELINE, LEVEL_COLORS, LEVEL_NAMES, SUGGESTION, figure, rounded, threshold_line
from ._html import Markup, esc, fmt_count, join, missing, num, nums, tag
from ._inputs import ReportData
from ._page import Page

TIMELINE_CAP = 2000
SCATTER_CAP = 5000
CONFIDENCE_BINS = 20
ACTION_COMPONENTS = ("severity", "compassion", "intervention", "delay")

Record = Mapping[str, object]
# The trace fields this panel reads (a caller may load only these).
TRACE_KEYS = ("t", "cus", "cus_mean", "raw_action", "final_action", "soft_clamp", "level", "confidence", "reason",
              "J", "H", "stream", "config_id")


def traces_panel(data: ReportData, page: Page) -> Markup:
    traces = data.traces
    if traces is None:
        return missing("No decision traces given. Pass `--traces traces.jsonl` (written by `ami-engine run ... "
                       "--out traces.jsonl`, e.g. with the suggestion as `--config`) to see the CUS and level "
                       "timelines, the soft-clamp map, the decision boundary and the confidence histogram.")
    stream_key, timeline, n_stream = _timeline_stream(traces)
    n_streams = len({_stream_id(r) for r in traces})
    cut = f"its first {fmt_count(len(timeline))} of {fmt_count(n_stream)} decisions" if n_stream > len(
        timeline) else f"all its {fmt_count(n_stream)} decisions"
    about_timeline = (f"Stream {stream_key}, the longest, {cut} (the traces hold {fmt_count(len(traces))} "
                      f"decisions in {fmt_count(n_streams)} stream{'s' if n_streams != 1 else ''}).")
    sample, step = _every_kth(traces, SCATTER_CAP)
    about_sample = (f"One record in {step}, {fmt_count(len(sample))} of {fmt_count(len(traces))}." if step > 1
                    else f"All {fmt_count(len(traces))} records.")
    clamped = [r for r in traces if r.get("soft_clamp") is True]
    clamped_sample, clamp_step = _every_kth(clamped, SCATTER_CAP)
    about_clamped = (f"One soft-clamped record in {clamp_step}, {fmt_count(len(clamped_sample))} of "
                     f"{fmt_count(len(clamped))}." if clamp_step > 1 else
                     f"All {fmt_count(len(clamped))} soft-clamped records.")

    cards = [
        page.chart("fig-trace-cus", _cus_figure(data, timeline, stream_key),
                   f"{about_timeline} The drift monitor escalates a level-0 decision to L1 when the windowed mean "
                   "exceeds `CUS_MEAN_THRESHOLD`.", wide=True),
        page.chart("fig-trace-levels", _levels_figure(timeline, stream_key), about_timeline, wide=True),
    ]
    if clamped:
        cards.append(page.chart("fig-trace-clamp", _clamp_figure(clamped_sample),
                                f"{about_clamped} Raw action (before the clamp) against the action taken, per "
                                "component; points on the diagonal were not changed.", wide=True))
    else:
        cards.append(tag("div", missing("No record in these traces was soft-clamped, so there is no clamp map."),
                         cls="card wide"))
    if any(num(r.get("J")) is not None and num(r.get("H")) is not None for r in sample):
        cards.append(page.chart("fig-trace-boundary", _boundary_figure(data, sample),
                                f"{about_sample} J and H of the action taken (for fail-safes, of the safe action). "
                                "Solid lines: the suggestion's `J_MIN` and `H_MAX`; dashed: the baseline's."))
    else:
        cards.append(tag("div", missing("These traces carry no `J` and `H` fields (this engine writes them), so "
                                        "the decision boundary cannot be drawn."), cls="card"))
    cards.append(page.chart("fig-trace-confidence", _confidence_figure(traces),
                            f"All {fmt_count(len(traces))} records, stacked by escalation level."))
    head = [_producer(data, traces)] + ([tag("p", data.traces_note)] if data.traces_note else [])
    return join([*head, tag("div", join(cards), cls="grid")])


def _producer(data: ReportData, traces: Sequence[Record]) -> Markup:
    ids = {r.get("config_id") for r in traces if isinstance(r.get("config_id"), str)}
    known = {data.at("config_id"): "the suggestion", data.at("baseline_config_id"): "the baseline"}
    if len(ids) == 1:
        (config_id,) = ids
        who = known.get(config_id)
        text = (f"These traces were produced by {who} (config id {config_id})." if who else
                f"These traces were produced by config {config_id}, which is neither the baseline nor the "
                "suggestion.")
    elif ids:
        text = f"These traces come from {len(ids)} different configs."
    else:
        text = "These traces do not say which config produced them."
    return tag("p", esc(text), cls="note")


def _stream_id(record: Record) -> tuple[str, object]:
    stream = record.get("stream")
    return (type(stream).__name__, stream if isinstance(stream, (str, int)) else None)


def _timeline_stream(traces: Sequence[Record]) -> tuple[str, list[Record], int]:
    """The longest stream (the first of equals), its first TIMELINE_CAP records, and its size."""
    sizes = Counter(_stream_id(r) for r in traces)  # counts in order of first appearance
    chosen = max(sizes, key=sizes.__getitem__)
    records = [r for r in traces if _stream_id(r) == chosen]
    name = repr(chosen[1]) if chosen[1] is not None else "(no stream)"
    return name, records[:TIMELINE_CAP], len(records)


def _every_kth(records: Sequence[Record], cap: int) -> tuple[list[Record], int]:
    step = max(1, math.ceil(len(records) / cap))
    return list(records[::step]), step


def _timeline_x(records: Sequence[Record]) -> tuple[list[float], str]:
    """The records' own t when it is numeric and never decreases, else their position."""
    t = [num(r.get("t")) for r in records]
    if all(v is not None for v in t) and all(b >= a for a, b in zip(t, t[1:])):
        return t, "t (decision time or position)"
    return list(range(len(records))), "decision number in the stream"


def _reference_lines(fig: go.Figure, data: ReportData, name: str, axis: str, **where: object) -> None:
    """The suggestion's value of a learned parameter as a line, and the baseline's where it differs."""
    suggested, baseline = data.suggested[name], data.baseline[name]
    threshold_line(fig, suggested, axis=axis, label=f"{name} {suggested:.2f}" if suggested is not None else "",
                   color=SUGGESTION, **where)
    if baseline is not None and baseline != suggested:
        threshold_line(fig, baseline, axis=axis, label=f"baseline {baseline:.2f}", color=BASELINE, dash="dash",
                       **where)


def _cus_figure(data: ReportData, records: Sequence[Record], stream: str) -> go.Figure:
    x, x_title = _timeline_x(records)
    fig = figure(f"CUS over time, stream {esc(stream)}", height=340)
    fig.add_trace(go.Scatter(x=x, y=rounded([num(r.get("cus")) for r in records]), name="CUS", mode="lines",
                             line=dict(color="#90a4ae", width=1), hovertemplate="CUS %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x, y=rounded([num(r.get("cus_mean")) for r in records]), name="CUS mean (window)",
                             mode="lines", line=dict(color=SUGGESTION, width=2.5),
                             hovertemplate="CUS mean %{y:.3f}<extra></extra>"))
    drift = [(xi, num(r.get("cus"))) for xi, r in zip(x, records) if r.get("reason") == "drift"]
    if drift:
        fig.add_trace(go.Scatter(x=[d[0] for d in drift], y=rounded([d[1] for d in drift]), mode="markers",
                                 name="drift escalation (L1)", marker=dict(color=LEVEL_COLORS[1], size=7,
                                                                            line=dict(color="#5d4037", width=1)),
                                 hovertemplate="drift at %{x}<extra></extra>"))
    _reference_lines(fig, data, "CUS_MEAN_THRESHOLD", "y")
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="CUS (0\u20131)", range=[0, 1.05])
    return fig


def _levels_figure(records: Sequence[Record], stream: str) -> go.Figure:
    x, x_title = _timeline_x(records)
    levels = [num(r.get("level")) for r in records]
    fig = figure(f"Escalation level over time, stream {esc(stream)}", height=260)
    fig.add_trace(go.Scatter(x=x, y=levels, mode="lines", line=dict(color="#cfd8dc", width=1, shape="hv"),
                             showlegend=False, hoverinfo="skip"))
    for level, (name, color) in enumerate(zip(LEVEL_NAMES, LEVEL_COLORS)):
        at = [(xi, lv) for xi, lv in zip(x, levels) if lv == level]
        fig.add_trace(go.Scatter(x=[a[0] for a in at], y=[a[1] for a in at], mode="markers", name=name,
                                 marker=dict(color=color, size=5), hovertemplate="%{x}<extra>" + name + "</extra>"))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text="level", tickvals=[0, 1, 2], ticktext=["L0", "L1", "L2"], range=[-0.4, 2.4])
    return fig


def _clamp_figure(records: Sequence[Record]) -> go.Figure:
    fig = figure("Soft-clamp map: raw vs final action", height=330, rows=1, cols=4,
                 subplot_titles=list(ACTION_COMPONENTS), horizontal_spacing=0.06)
    pairs = [(nums(r.get("raw_action"), 4), nums(r.get("final_action"), 4)) for r in records]
    pairs = [(raw, final) for raw, final in pairs if raw and final]
    for col, component in enumerate(ACTION_COMPONENTS, start=1):
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(color="#bdbdbd", dash="dot"), row=1, col=col)
        fig.add_trace(go.Scatter(
            x=rounded([raw[col - 1] for raw, _ in pairs]), y=rounded([final[col - 1] for _, final in pairs]),
            mode="markers", showlegend=False, marker=dict(color=LEVEL_COLORS[1], size=5, opacity=0.45,
                                                          line=dict(color="#8d6e00", width=0.5)),
            hovertemplate=component + ": raw %{x:.3f} \u2192 final %{y:.3f}<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="raw", range=[-0.03, 1.03], row=1, col=col)
        fig.update_yaxes(range=[-0.03, 1.03], row=1, col=col)
    fig.update_yaxes(title_text="final", row=1, col=1)
    return fig


def _boundary_figure(data: ReportData, records: Sequence[Record]) -> go.Figure:
    fig = figure("Decision boundary: justice J vs harm H", height=420)
    for level, (name, color) in enumerate(zip(LEVEL_NAMES, LEVEL_COLORS)):
        at = [r for r in records if num(r.get("level")) == level]
        fig.add_trace(go.Scatter(
            x=rounded([num(r.get("J")) for r in at]), y=rounded([num(r.get("H")) for r in at]), mode="markers",
            name=name, marker=dict(color=color, size=4, opacity=0.55),
            hovertemplate="J %{x:.3f}, H %{y:.3f}<extra>" + name + "</extra>",
        ))
    _reference_lines(fig, data, "J_MIN", "x")
    _reference_lines(fig, data, "H_MAX", "y")
    fig.update_xaxes(title_text="J, justice (0\u20131)")
    fig.update_yaxes(title_text="H, harm (0\u20131)")
    return fig


def _confidence_figure(traces: Sequence[Record]) -> go.Figure:
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    centres = rounded(list((edges[:-1] + edges[1:]) / 2))
    fig = figure("Confidence of the decisions", height=420)
    for level, (name, color) in enumerate(zip(LEVEL_NAMES, LEVEL_COLORS)):
        values = [num(r.get("confidence")) for r in traces if num(r.get("level")) == level]
        counts, _ = np.histogram([v for v in values if v is not None], bins=edges)
        fig.add_trace(go.Bar(x=centres, y=[int(c) for c in counts], width=1 / CONFIDENCE_BINS, name=name,
                             marker=dict(color=color, line=dict(color="white", width=0.5)),
                             hovertemplate="confidence \u2248 %{x:.3f}: %{y:,}<extra>" + name + "</extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title_text="ethical confidence (0\u20131)", range=[0, 1])
    fig.update_yaxes(title_text="decisions (count)")
    return fig

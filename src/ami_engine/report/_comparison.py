"""Baseline vs suggestion on the user's data (train, held-out) and on each scenario profile."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from ._figures import BASELINE, LEVEL_COLORS, LEVEL_NAMES, SUGGESTION, figure, percent, rounded, threshold_line
from ._html import Markup, fmt_count, fmt_pair, join, missing, num, nums, table, tag, with_code
from ._inputs import SCENARIOS, SIDES, SPLITS, ReportData
from ._page import Page
from ._verdict import check_table

# (key, chart title, axis title) of the per-dataset metrics drawn side by side.
_METRICS = (
    ("L", "loss L", "L (lower is better)"),
    ("mean_cus", "mean CUS", "mean CUS (0\u20131)"),
    ("clamp_distortion", "clamp distortion", "mean |final \u2212 raw| (0\u20131)"),
)
_SIDE_COLORS = {"baseline": BASELINE, "suggestion": SUGGESTION}


@dataclass(frozen=True)
class _Dataset:
    label: str
    group: str
    sides: dict[str, Mapping[str, Any]]  # "baseline"/"suggestion" -> metrics


def _datasets(data: ReportData) -> list[_Dataset]:
    found = [(label, "your data", {s: data.metrics(key, s) for s in SIDES}) for key, label in SPLITS.items()]
    found += [(name, "scenario", {s: data.scenario(name, s) for s in SIDES}) for name in SCENARIOS]
    return [_Dataset(label, group, {s: m for s, m in sides.items() if m is not None})
            for label, group, sides in found if any(m is not None for m in sides.values())]


def comparison_panel(data: ReportData, page: Page) -> Markup:
    datasets = _datasets(data)
    if not datasets:
        return missing("No metrics recorded: the suggestion written by `ami-engine learn --out suggestion.toml` "
                       "carries `[meta.metrics]` (train, held-out) and `[meta.scenarios]`; pass it to compare "
                       "baseline and suggestion.")
    cards = [
        page.chart("fig-levels", _levels_figure(datasets),
                   "Share of decisions at each escalation level. \u201cyour data\u201d is the data learning used, "
                   "split into train and held-out parts; the scenarios are the fixed, seeded profiles.", wide=True),
        page.chart("fig-metrics", _metrics_figure(datasets),
                   "Loss L = w1 \u00b7 fail-safe rate + w2 \u00b7 mean CUS + w3 \u00b7 clamp distortion, and its "
                   "last two terms, per data set.", wide=True),
    ]
    critical = {s: data.scenario("critical", s) for s in SIDES}
    if all(critical.values()):
        cards.append(page.chart("fig-critical", _critical_figure(data, critical),
                                "Dashed lines: the least fail-safe rate and the most mean H the suggestion may "
                                "have on this set, where the suggestion records them. Whiskers: the certificate's "
                                "confidence bounds (lower for the rate, upper for H)."))
    else:
        cards.append(tag("div", missing("No `critical` scenario figures recorded (`[meta.scenarios.critical]`), "
                                        "so the critical floor cannot be shown."), cls="card"))
    cards.append(_critical_checks(data))
    cards.append(tag("div", join([tag("h3", "All figures, baseline \u2192 suggestion"), _figures_table(datasets)]),
                     cls="card wide"))
    return tag("div", join(cards), cls="grid")


def _critical_checks(data: ReportData) -> Markup:
    checks = _critical(data.checks)
    body = check_table(checks) if checks else missing("The gate recorded no critical-floor check.")
    factor, margin = num(data.at("critical_floor", "factor")), num(data.at("critical_floor", "margin"))
    if factor == 0:
        rule = "The critical floor is turned off for this run (factor 0); its figures are shown for information."
    else:
        share = f"{factor:g} \u00d7" if factor is not None else "a share of (by default 0.25 \u00d7)"
        rise = f"{margin:g}" if margin is not None else "a margin (by default 0.02)"
        rule = (f"Learning may remove needless fail-safes, not nearly all of them. On the fixed, seeded `critical` "
                f"scenario the suggestion must keep at least {share} the baseline's fail-safe rate, and the mean "
                f"harm H of its final actions may exceed the baseline's by at most {rise}.")
    return tag("div", join([tag("h3", "The critical floor"), tag("p", with_code(rule)), body]), cls="card wide")


def _critical(checks: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [c for c in checks if "critical" in str(c.get("name", "")).lower() or c.get("name") == "certificate"]


def _levels_figure(datasets: list[_Dataset]) -> go.Figure:
    fig = figure("Escalation levels, baseline vs suggestion", height=400)
    bars = [(d.label, side, nums(d.sides[side].get("level_rates"), 3)) for d in datasets for side in d.sides]
    x = [[label for label, _, _ in bars], [side for _, side, _ in bars]]
    for level, (name, color) in enumerate(zip(LEVEL_NAMES, LEVEL_COLORS)):
        fig.add_trace(go.Bar(
            x=x, y=percent([rates[level] if rates else None for _, _, rates in bars]), name=name,
            marker_color=color, hovertemplate="%{x}: %{y:.1f} %<extra>" + name + "</extra>",
        ))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title_text="share of decisions (%)", range=[0, 100], ticksuffix=" %")
    return fig


def _metrics_figure(datasets: list[_Dataset]) -> go.Figure:
    fig = figure("Loss and metrics, baseline vs suggestion", height=360, rows=1, cols=len(_METRICS),
                 subplot_titles=[title for _, title, _ in _METRICS], horizontal_spacing=0.07)
    for col, (key, _, axis_title) in enumerate(_METRICS, start=1):
        for side in SIDES:
            fig.add_trace(go.Bar(
                x=[d.label for d in datasets],
                y=rounded([num(d.sides.get(side, {}).get(key)) for d in datasets]),
                name=side, legendgroup=side, showlegend=col == 1, marker_color=_SIDE_COLORS[side],
                hovertemplate="%{x}: %{y:.3f}<extra>" + side + "</extra>",
            ), row=1, col=col)
        fig.update_yaxes(title_text=axis_title, row=1, col=col, rangemode="tozero")
    fig.update_layout(barmode="group")
    return fig


def _critical_figure(data: ReportData, critical: dict[str, Mapping[str, Any]]) -> go.Figure:
    fig = figure("Critical floor (critical scenario)", height=360, rows=1, cols=2,
                 subplot_titles=["fail-safe rate", "mean H of final actions"], horizontal_spacing=0.18)
    floor, ceiling = _critical_limits(data, critical)
    panels = ((1, "fail_safe_rate", True, floor, "floor"), (2, "mean_H", False, ceiling, "ceiling"))
    for col, key, as_pct, limit, limit_name in panels:
        values = [num(critical[s].get(key)) for s in SIDES]
        fig.add_trace(go.Bar(
            x=list(SIDES), y=percent(values) if as_pct else rounded(values), showlegend=False,
            marker_color=[_SIDE_COLORS[s] for s in SIDES], error_y=_certified(data, key, values[-1], as_pct),
            hovertemplate="%{x}: %{y:.3f}" + (" %" if as_pct else "") + "<extra></extra>",
        ), row=1, col=col)
        if limit is not None:
            shown = 100 * limit if as_pct else limit
            label = f"{limit_name} {shown:.1f} %" if as_pct else f"{limit_name} {shown:.3f}"
            threshold_line(fig, shown, axis="y", label=label, color="#c62828", dash="dash", row=1, col=col)
    fig.update_yaxes(title_text="fail-safe rate (%)", ticksuffix=" %", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="mean H (0\u20131)", rangemode="tozero", row=1, col=2)
    return fig


_CERTIFIED = {"fail_safe_rate": "critical_fail_safe_rate_lower", "mean_H": "critical_mean_H_upper"}


def _certified(data: ReportData, key: str, value: float | None, as_pct: bool) -> dict | None:
    """The certificate's one-sided bound of the suggestion's figure, as an error bar on its bar."""
    bound = num(data.at("certificate", _CERTIFIED[key]))
    if bound is None or value is None:
        return None
    gap = abs(value - bound) * (100 if as_pct else 1)
    below = key == "fail_safe_rate"
    return dict(type="data", symmetric=False, array=[0, 0 if below else round(gap, 6)],
                arrayminus=[0, round(gap, 6) if below else 0], color="#212121", thickness=1.5, width=8)


_BOUND = re.compile(r"(>=|<=|\u2265|\u2264)\s*([0-9]*\.?[0-9]+)")


def _critical_limits(data: ReportData, critical: dict[str, Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """The least fail-safe rate and the most mean H allowed on the critical set.

    From `[meta.critical_floor]` (factor, margin) and the baseline's figures when the
    suggestion records them (factor 0 turns the floor off); else read from the gate's
    critical checks, whose thresholds are text such as ">= 0.24" (a lower bound is the
    fail-safe floor, an upper bound the harm ceiling).
    """
    factor, margin = num(data.at("critical_floor", "factor")), num(data.at("critical_floor", "margin"))
    if factor is not None or margin is not None:
        if factor == 0:
            return None, None
        rate, mean_h = num(critical["baseline"].get("fail_safe_rate")), num(critical["baseline"].get("mean_H"))
        return (None if factor is None or rate is None else factor * rate,
                None if margin is None or mean_h is None else mean_h + margin)
    floor = ceiling = None
    for check in _critical(data.checks):
        if check.get("name") == "certificate":
            continue
        for op, value in _BOUND.findall(str(check.get("threshold", ""))):
            if op in (">=", "\u2265"):
                floor = float(value) / 100 if float(value) > 1 else float(value)
            else:
                ceiling = float(value)
    return floor, ceiling


def _figures_table(datasets: list[_Dataset]) -> Markup:
    rows = []
    for d in datasets:
        before, after = d.sides.get("baseline", {}), d.sides.get("suggestion", {})
        rows.append([
            f"{d.label} ({d.group})",
            fmt_count(after.get("n", before.get("n"))),
            fmt_pair(before.get("L"), after.get("L")),
            fmt_pair(before.get("fail_safe_rate"), after.get("fail_safe_rate"), pct=True),
            fmt_pair(before.get("mean_cus"), after.get("mean_cus")),
            fmt_pair(before.get("clamp_distortion"), after.get("clamp_distortion")),
            fmt_pair(before.get("mean_H"), after.get("mean_H")) if "mean_H" in after else "",
        ])
    return table(["data", "decisions", "loss L", "fail-safe rate", "mean CUS", "clamp distortion", "mean H"], rows)

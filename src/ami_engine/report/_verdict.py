"""The gate's verdict with each check, and the parameters baseline -> suggestion."""

from __future__ import annotations

import plotly.graph_objects as go

from ._figures import BASELINE, SUGGESTION, figure, rounded
from ._html import DASH, Markup, fmt_delta, fmt_num, join, missing, num, table, tag
from ._inputs import ReportData
from ._page import Page
from ._summary import verdict_badge

_ON_BOUND_TEXT = {"lower": "lower bound", "upper": "upper bound", "bound": "a bound"}
CHECK_HEADERS = ("check", "result", "figure", "threshold", "detail")


def verdict_panel(data: ReportData, page: Page) -> Markup:
    return join([_gate(data), _parameters(data, page)])


def check_table(checks: list) -> Markup:
    """One row per gate check: name, pass/fail, figure, threshold, detail."""
    rows = [
        [
            str(check.get("name", DASH)),
            _result(check.get("passed")),
            _figure(check.get("figure")),
            str(check.get("threshold", DASH)),
            str(check.get("detail", "")),
        ]
        for check in checks
    ]
    return table(CHECK_HEADERS, rows, cls="data checks")


def _gate(data: ReportData) -> Markup:
    if data.meta is None or (data.verdict is None and not data.checks):
        return missing("No gate verdict recorded. Run `ami-engine gate suggestion.toml` (or `ami-engine learn`, "
                       "which gates its suggestion) to get the verdict and the figures of every check.")
    checks = check_table(data.checks) if data.checks else missing(
        "The gate recorded a verdict but no checks (`[[meta.gate.checks]]`).")
    return tag("div", join([verdict_badge(data), tag("h3", "Checks of the safety gate"), checks]), cls="card")


def _result(passed: object) -> Markup:
    if passed is True:
        return tag("span", "\u2713 pass", cls="pass")
    if passed is False:
        return tag("span", "\u2717 fail", cls="fail")
    return tag("span", "n/a", cls="na")


def _figure(value: object) -> str | Markup:
    if isinstance(value, dict):  # named figures, e.g. the critical floor's rate and mean H: one per line
        return join(tag("div", f"{k} {_figure(v)}") for k, v in value.items())
    v = num(value)
    if v is not None:
        return f"{v:.4g}"
    return DASH if value is None else str(value)


def _parameters(data: ReportData, page: Page) -> Markup:
    with_baseline = data.meta is not None and any(v is not None for v in data.baseline.values())
    rows = []
    for name, value in data.suggested.items():
        lo, hi = data.bounds[name]
        row = [tag("code", name), f"[{fmt_num(lo, 2)}, {fmt_num(hi, 2)}]"]
        if with_baseline:
            row += [fmt_num(data.baseline[name]), fmt_num(value), fmt_delta(data.baseline[name], value)]
        else:
            row.append(fmt_num(value))
        outside = value is not None and not lo <= value <= hi  # a person's config may be; a suggestion never
        mark = "outside the bounds" if outside else _ON_BOUND_TEXT.get(data.on_bound.get(name, ""), "")
        row.append(tag("span", mark, cls="mark") if mark else "")
        rows.append(row)
    headers = ["parameter", "bounds"] + (["baseline", "suggestion", "change"] if with_baseline else ["value"])
    params_table = tag("div", join([tag("h3", "Learned parameters"), table(headers + ["on bound"], rows)]), cls="card")
    caption = "Each parameter's place in its learning range: 0 % is the lower bound, 100 % the upper."
    if with_baseline:
        caption += " Grey: baseline; blue: suggestion."
    chart = page.chart("fig-params", _position_figure(data, with_baseline), caption)
    return tag("div", join([params_table, chart]), cls="grid")


def _position_figure(data: ReportData, with_baseline: bool) -> go.Figure:
    names = list(data.suggested)

    def position(values: dict[str, float | None]) -> list[float | None]:
        out = []
        for name in names:
            lo, hi = data.bounds[name]
            v = values[name]
            out.append(None if v is None or hi <= lo else 100 * (v - lo) / (hi - lo))
        return rounded(out, 3)

    fig = figure("Parameters within their bounds", height=330)
    sides = [("suggestion", data.suggested, SUGGESTION, "diamond")]
    if with_baseline:
        sides.insert(0, ("baseline", data.baseline, BASELINE, "circle"))
        for name, b, s in zip(names, position(data.baseline), position(data.suggested)):
            if b is not None and s is not None:
                fig.add_shape(type="line", x0=b, x1=s, y0=name, y1=name, line=dict(color="#bdbdbd", width=3),
                              layer="below")
    for label, values, color, symbol in sides:
        fig.add_trace(go.Scatter(
            x=position(values), y=names, mode="markers", name=label,
            marker=dict(color=color, size=12, symbol=symbol, line=dict(color="white", width=1)),
            customdata=rounded([values[n] for n in names]),
            hovertemplate="%{y}: %{customdata}<br>%{x:.0f} % of its range<extra>" + label + "</extra>",
        ))
    fig.add_vrect(x0=0, x1=100, fillcolor="rgba(46, 125, 50, 0.07)", line_width=0, layer="below")
    # A person may configure a value outside the learning bounds; keep it in view.
    shown = [x for _, values, _, _ in sides for x in position(values) if x is not None]
    fig.update_xaxes(title_text="position in the learning range (%)", ticksuffix=" %",
                     range=[min([0.0, *shown]) - 6, max([100.0, *shown]) + 6])
    fig.update_yaxes(autorange="reversed", showgrid=False)
    return fig

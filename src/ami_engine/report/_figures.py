"""The look shared by every chart: colours, fonts, legend placement, reference lines.

Charts are plotly figures; `Page` (in `_page.py`) serialises them. Colours carry the
same meaning everywhere: grey is the baseline, blue the suggestion; green, amber and
red are the levels L0, L1 and L2; blue and orange are training and held-out data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'

BASELINE = "#9e9e9e"
SUGGESTION = "#1565c0"
TRAIN = "#1565c0"
HELDOUT = "#ef6c00"
ALLOWED = "rgba(46, 125, 50, 0.10)"
LEVEL_COLORS = ("#2e7d32", "#f9a825", "#c62828")
LEVEL_NAMES = ("L0 normal", "L1 clamp / drift", "L2 fail-safe")
# The top margin holds the title, the legend below it, then the subplot titles (pixels).
TOP_MARGIN = 88
_TITLE_Y = 10
_LEGEND_Y = 38

_AXIS = dict(gridcolor="#ececec", linecolor="#9e9e9e", zeroline=False, ticks="outside", tickcolor="#bdbdbd",
             automargin=True, title=dict(standoff=8))
_TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family=FONT, size=12, color="#212121"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=[SUGGESTION, HELDOUT, "#2e7d32", "#6a1b9a", "#c62828", "#00838f"],
        xaxis=_AXIS,
        yaxis=_AXIS,
        hoverlabel=dict(font=dict(family=FONT)),
        legend=dict(orientation="h", xref="container", yref="container", xanchor="left", yanchor="top",
                    font=dict(size=11), itemsizing="constant"),
        margin=dict(l=64, r=24, t=TOP_MARGIN, b=24),
        title=dict(xref="container", yref="container", x=0.015, xanchor="left", yanchor="top",
                   font=dict(size=15)),
        bargap=0.25,
    )
)


def figure(title: str, *, height: int = 360, rows: int = 1, cols: int = 1,
           subplot_titles: Sequence[str] | None = None, **subplot_options: Any) -> go.Figure:
    """An empty chart in the report's style, with a grid of subplots when asked."""
    if rows * cols > 1 or subplot_titles:
        fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(subplot_titles or ()), **subplot_options)
        fig.update_annotations(font=dict(size=12, color="#424242"))
    else:
        fig = go.Figure()
    fig.update_layout(template=_TEMPLATE, title=dict(text=title, y=1 - _TITLE_Y / height), height=height,
                      legend=dict(x=0.015, y=1 - _LEGEND_Y / height))
    return fig


def grid_position(index: int, cols: int) -> dict[str, int]:
    """row/col keywords of the index-th subplot, filled row by row."""
    return dict(row=index // cols + 1, col=index % cols + 1)


def small_multiples(title: str, names: Sequence[str], cols: int, *, panel_height: int, **options: Any) -> go.Figure:
    """A grid of one subplot per name, filled row by row; the last row's unused cells stay empty."""
    rows = -(-len(names) // cols)
    specs = [[{} if r * cols + c < len(names) else None for c in range(cols)] for r in range(rows)]
    return figure(title, height=panel_height * rows + 90, rows=rows, cols=cols, subplot_titles=list(names),
                  specs=specs, **options)


def subplot_lines(fig: go.Figure, row: int, col: int, levels: Sequence[tuple[float, dict]],
                   band: tuple[float, float, str] | None = None) -> list[dict]:
    """Shapes spanning one subplot's width: horizontal lines at each level, and a shaded band.

    Returned as plain dicts so that a figure with many of them sets its shapes once
    (plotly re-validates every shape on each add_hline).
    """
    sub = fig.get_subplot(row, col)
    x, y = (axis.plotly_name.replace("axis", "") for axis in (sub.xaxis, sub.yaxis))
    span = dict(xref=f"{x} domain", yref=y, x0=0, x1=1, layer="below")
    shapes = [dict(type="rect", y0=band[0], y1=band[1], fillcolor=band[2], line=dict(width=0), **span)] if band else []
    shapes += [dict(type="line", y0=value, y1=value, line=line, **span) for value, line in levels]
    return shapes


def threshold_line(fig: go.Figure, value: float | None, *, axis: str, label: str, color: str,
                   dash: str = "solid", **where: Any) -> None:
    """A labelled reference line: axis "y" draws it horizontally, "x" vertically."""
    if value is None:
        return
    style = dict(line=dict(color=color, width=1.5, dash=dash), annotation_text=label,
                 annotation_font=dict(size=10, color=color), annotation_bgcolor="rgba(255, 255, 255, 0.85)",
                 **where)
    if axis == "y":
        fig.add_hline(y=value, annotation_position="top left", **style)
    else:
        fig.add_vline(x=value, annotation_position="top right", annotation_textangle=-90, **style)


def rounded(values: Sequence[float | None], digits: int = 5) -> list[float | None]:
    """Values rounded for the page: smaller files, and no float noise in the output."""
    return [None if v is None else round(v, digits) for v in values]


def percent(values: Sequence[float | None]) -> list[float | None]:
    """Rates in 0..1 as percentages, for axes labelled in %."""
    return rounded([None if v is None else 100 * v for v in values], 3)

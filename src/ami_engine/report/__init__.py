"""The self-contained HTML report of a learning run.

`render_report(suggestion, history, traces)` turns the parsed suggestion file (TOML),
the optimisation history and decision traces (JSON lines) into one HTML page that opens
without a network: plotly.js, styles and data are all inline. Each panel is one function
of its own module; a panel whose input is absent says what to pass to get it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._comparison import comparison_panel
from ._html import section
from ._inputs import ReportData
from ._learning import learning_panel
from ._needless import needless_panel
from ._page import Page
from ._provenance import provenance_panel
from ._summary import summary_panel
from ._traces import TRACE_KEYS, traces_panel
from ._verdict import verdict_panel

# (anchor, heading, panel) in page order.
PANELS = (
    ("summary", "Summary", summary_panel),
    ("verdict", "Gate verdict and parameters", verdict_panel),
    ("comparison", "Baseline vs suggestion", comparison_panel),
    ("needless", "Needless fail-safes", needless_panel),
    ("learning", "Learning", learning_panel),
    ("traces", "Decision traces", traces_panel),
    ("provenance", "Provenance", provenance_panel),
)


def render_report(
    suggestion: Mapping[str, Any] | None,
    history: Sequence[Mapping[str, Any]] | None = None,
    traces: Sequence[Mapping[str, Any]] | None = None,
    *,
    traces_note: str | None = None,
) -> str:
    """The report as HTML text: same input, same bytes.

    suggestion: the parsed suggestion TOML (a plain config works too, with less to show);
    history: the records of history.jsonl; traces: DecisionTrace records; traces_note: a
    sentence on which decisions the traces are, shown with them (e.g. when they are a part).
    """
    data = ReportData.read(suggestion, history, traces, traces_note)
    page = Page()
    sections = [section(anchor, heading, panel(data, page)) for anchor, heading, panel in PANELS]
    return page.document(_title(data), _subtitle(data), [(a, h) for a, h, _ in PANELS], sections)


def _title(data: ReportData) -> str:
    if data.meta is None:
        return "AMI engine: config report"
    return "AMI engine: learning report"


def _subtitle(data: ReportData) -> str:
    if not data.has_suggestion:
        return "No suggestion given."
    if data.meta is None:
        return f"A plain config (extends {data.config.get('extends', 'base')}), not a learning suggestion."
    parts = [f"suggestion {data.at('config_id')}" if data.at("config_id") else "suggestion"]
    if data.at("baseline"):
        parts.append(f"against baseline {data.at('baseline')}")
    if data.at("data", "source"):
        parts.append(f"learned from {data.at('data', 'source')}")
    if data.at("created"):
        parts.append(f"created {data.at('created')}")
    return ", ".join(parts)


__all__ = ["PANELS", "TRACE_KEYS", "render_report"]

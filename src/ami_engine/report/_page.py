"""The page: one HTML file with every style, script and chart inline.

plotly.js is inlined once; each chart is a `<div class="chart">` with a fixed id whose
figure (data and layout) sits in one JSON block, drawn by a small init script. Nothing
on the page is fetched from anywhere, and nothing in it depends on the time or on
randomness, so equal input gives equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from ._html import Markup, esc, join, tag, with_code

PLOTLY_CONFIG = {
    "responsive": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}

_CSS = """
:root { --ok: #2e7d32; --bad: #c62828; --warn: #f9a825; --line: #e0e0e0; --muted: #5f6368; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #212121; line-height: 1.45;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #fff; border-bottom: 1px solid var(--line); }
.bar { max-width: 1240px; margin: 0 auto; padding: 18px 24px 10px; }
h1 { margin: 0 0 2px; font-size: 24px; }
.sub { color: var(--muted); font-size: 14px; margin: 0; overflow-wrap: anywhere; }
nav { display: flex; flex-wrap: wrap; gap: 4px 18px; margin-top: 10px; font-size: 14px; }
nav a { color: #1565c0; text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { max-width: 1240px; margin: 0 auto; padding: 4px 24px 48px; }
section { margin-top: 30px; }
h2 { font-size: 20px; margin: 0 0 12px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 8px; }
p { margin: 0 0 10px; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef0f3;
  padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(520px, 100%), 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 0;
  min-width: 0; }
.wide { grid-column: 1 / -1; }
.chart { width: 100%; }
figcaption, .note { font-size: 13px; color: var(--muted); margin-top: 6px; }
.missing { background: #fff8e1; border-left: 4px solid var(--warn); padding: 10px 14px; border-radius: 4px; }
.table-wrap { overflow-x: auto; }
table.data { border-collapse: collapse; width: 100%; font-size: 13px; font-variant-numeric: tabular-nums; }
table.data th { text-align: left; font-weight: 600; color: #424242; border-bottom: 2px solid var(--line); }
table.data th, table.data td { padding: 5px 10px 5px 0; vertical-align: top; }
table.data td { border-bottom: 1px solid #eeeeee; white-space: nowrap; }
table.data td:last-child { white-space: normal; }
table.checks { table-layout: fixed; min-width: 640px; }
table.checks td { white-space: normal; overflow-wrap: anywhere; }
table.checks th:nth-child(1) { width: 14%; }
table.checks th:nth-child(2) { width: 8%; }
table.checks th:nth-child(3) { width: 26%; }
table.checks th:nth-child(4) { width: 20%; }
.promise { font-size: 17px; font-weight: 600; margin: 0 0 10px; }
.worse { color: #ef6c00; font-weight: 600; }
.pass { color: var(--ok); font-weight: 600; }
.fail { color: var(--bad); font-weight: 600; }
.na { color: var(--muted); font-weight: 600; }
.verdict { display: inline-block; color: #fff; font-size: 40px; font-weight: 800; letter-spacing: .06em;
  padding: 6px 30px; border-radius: 10px; margin-right: 18px; vertical-align: middle; }
.verdict.accept { background: var(--ok); }
.verdict.reject { background: var(--bad); }
.verdict.unknown { background: #757575; font-size: 24px; }
.verdict.small { font-size: 20px; padding: 3px 16px; border-radius: 6px; }
.verdict-line { display: flex; align-items: center; flex-wrap: wrap; gap: 8px; margin-bottom: 14px; }
.verdict-line p { margin: 0; font-size: 16px; }
.summary ul { margin: 6px 0 0; padding-left: 20px; }
.summary li { margin-bottom: 6px; }
.split { display: flex; flex-wrap: wrap; gap: 16px; margin-bottom: 16px; }
.split > .card { flex: 1 1 420px; }
.split ul { margin: 0; padding-left: 20px; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; }
.stat { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 170px; }
.stat b { display: block; font-size: 24px; }
.stat span { font-size: 13px; color: var(--muted); }
.mark { color: #ef6c00; font-weight: 600; white-space: nowrap; }
"""

# Draws every chart div from the figure JSON; `window.amiReportReady` resolves (and the
# body gets `data-charts-drawn`) once all are drawn, for tests and screenshot tools.
_INIT_JS = """
(function () {
  var figures = JSON.parse(document.getElementById("ami-figures").textContent);
  var config = %s;
  var drawn = [];
  document.querySelectorAll("div.chart").forEach(function (div) {
    var fig = figures[div.id];
    drawn.push(Plotly.newPlot(div, fig.data, fig.layout, config));
  });
  window.amiReportReady = Promise.all(drawn).then(function () {
    document.body.setAttribute("data-charts-drawn", String(drawn.length));
    return drawn.length;
  });
})();
"""


def _script_safe_json(obj: object) -> str:
    """JSON that cannot end the <script> element it is embedded in."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# Where the page's terms and figures are defined (the repository's docs/ pages).
DOCS_NOTE = ("Terms and figures: `docs/glossary.md`; the engine's rules and reasons: `docs/engine.md`; the learning "
             "loop and needless fail-safes: `docs/learning.md`; the gate's checks: `docs/gate.md` (in the ami-engine "
             "source tree).")


class Page:
    """Collects the charts of the panels, then writes the whole document."""

    def __init__(self) -> None:
        self._figures: dict[str, dict] = {}

    def chart(self, fig_id: str, fig: go.Figure, caption: str | None = None, *, wide: bool = False) -> Markup:
        """A card holding one chart; `caption` may use `backquotes` for code."""
        if fig_id in self._figures:
            raise ValueError(f"chart id {fig_id!r} is used twice")
        self._figures[fig_id] = json.loads(pio.to_json(fig, validate=False, engine="json"))
        height = int(fig.layout.height or 360)
        body = [tag("div", "", id=fig_id, cls="chart", style=f"height:{height}px")]
        if caption:
            body.append(tag("figcaption", with_code(caption)))
        return tag("figure", join(body), cls="card wide" if wide else "card")

    @property
    def chart_ids(self) -> list[str]:
        return list(self._figures)

    def document(self, title: str, subtitle: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
        links = join(tag("a", label, href=f"#{anchor}") for anchor, label in nav)
        header = tag("header", tag("div", join([tag("h1", title), tag("p", subtitle, cls="sub"), tag("nav", links)]),
                                   cls="bar"))
        footer = tag("footer", with_code(DOCS_NOTE), cls="note", style="margin-top:30px")
        scripts = ""
        if self._figures:
            scripts = (
                f"<script>{get_plotlyjs()}</script>\n"
                f'<script type="application/json" id="ami-figures">{_script_safe_json(self._figures)}</script>\n'
                f"<script>{_INIT_JS % json.dumps(PLOTLY_CONFIG, sort_keys=True)}</script>\n"
            )
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{header}\n<main>\n" + "\n".join(sections) + "\n" + footer + "\n</main>\n" + scripts
            + "</body>\n</html>\n"
        )

"""Small HTML and number-formatting helpers shared by the report's panels.

Every text that comes from the input files goes through `esc` (or `table`, which escapes
its cells), so a description or a detail string can never inject markup into the page.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

MINUS = "\u2212"
DASH = "\u2014"
ARROW = "\u2192"


class Markup(str):
    """Text that is already HTML: `table` and `join` pass it through unescaped."""


def esc(value: Any) -> Markup:
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[str], sep: str = "") -> Markup:
    """Concatenate HTML pieces; plain strings among them are escaped."""
    return Markup(sep.join(p if isinstance(p, Markup) else esc(p) for p in parts))


def tag(name: str, body: str = "", **attrs: Any) -> Markup:
    """`<name attrs>body</name>`; `cls` stands for `class`, a None attribute is left out."""
    rendered = "".join(
        f' {"class" if k == "cls" else k.replace("_", "-")}="{html.escape(str(v), quote=True)}"'
        for k, v in attrs.items()
        if v is not None
    )
    inner = body if isinstance(body, Markup) else esc(body)
    return Markup(f"<{name}{rendered}>{inner}</{name}>")


def with_code(sentence: str) -> Markup:
    """Escape a sentence and turn its `backquoted` parts into <code> elements."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(sentence, quote=False)))


def missing(sentence: str) -> Markup:
    """The short sentence a panel shows instead of a chart when its input is absent."""
    return tag("p", with_code(sentence), cls="missing")


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, cls: str = "data") -> Markup:
    head = join(tag("th", h) for h in headers)
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    rows_html = join([tag("thead", tag("tr", head)), tag("tbody", body)])
    return tag("div", tag("table", rows_html, cls=cls), cls="table-wrap")


def section(anchor: str, title: str, *parts: str) -> Markup:
    return tag("section", join([tag("h2", title), *parts]), id=anchor)


# --- reading loosely typed input ------------------------------------------------------


def dig(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]..., or None where a key is missing or a level is no table."""
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def num(value: Any) -> float | None:
    """A finite number as float, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def nums(value: Any, length: int) -> list[float] | None:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        return None
    out = [num(v) for v in value]
    return None if any(v is None for v in out) else out


# --- formatting ----------------------------------------------------------------------


def _fixed(value: float, digits: int, sign: str = "") -> str:
    text = f"{value:{sign}.{digits}f}"
    if float(text) == 0:  # no "-0.00" or "+0.00"
        text = f"{0:.{digits}f}"
    return text.replace("-", MINUS)


def fmt_num(value: Any, digits: int = 3) -> str:
    v = num(value)
    return DASH if v is None else _fixed(v, digits)


def fmt_pct(value: Any, digits: int = 1) -> str:
    v = num(value)
    return DASH if v is None else f"{_fixed(100 * v, digits)} %"


def fmt_count(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{int(round(v)):,}"


def fmt_delta(before: Any, after: Any, *, digits: int = 3) -> str:
    """The signed change after - before."""
    a, b = num(before), num(after)
    return DASH if a is None or b is None else _fixed(b - a, digits, "+")


def fmt_pair(before: Any, after: Any, *, pct: bool = False) -> str:
    """`before -> after` of a metric, as percentages when `pct`."""
    fmt = fmt_pct if pct else fmt_num
    return f"{fmt(before)} {ARROW} {fmt(after)}"


def relative_change(before: Any, after: Any) -> float | None:
    a, b = num(before), num(after)
    if a is None or b is None or a == 0:
        return None
    return (b - a) / abs(a)

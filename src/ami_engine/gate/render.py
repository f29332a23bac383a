"""A gate report as text: a Rich table of its checks and the verdict line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .verdict import GateReport


def rich_table(report: GateReport):
    """The checks as a Rich table (texts shown as written, never read as markup)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Safety gate: config {report.config_id} against baseline {report.baseline_id}")
    for column in ("check", "result", "figure", "threshold", "detail"):
        table.add_column(column, overflow="fold")
    for c in report.checks:
        mark = Text("pass", style="green") if c.passed else Text("FAIL", style="bold red")
        table.add_row(Text(c.name), mark, Text(format_figure(c.figure)), Text(c.threshold), Text(c.detail))
    return table


def print_report(report: GateReport, console) -> None:
    """The table, then the verdict and the checks that failed."""
    console.print(rich_table(report))
    colour = "green" if report.accepted else "red"
    failed = "" if report.accepted else f" (failed: {', '.join(report.failed)})"
    console.print(f"[bold {colour}]{report.verdict}[/]{failed}", highlight=False)


def format_figure(figure: Any) -> str:
    if isinstance(figure, float):
        return f"{figure:.6g}"
    if isinstance(figure, Mapping):
        return ", ".join(f"{k} {format_figure(v)}" for k, v in figure.items())
    return str(figure)

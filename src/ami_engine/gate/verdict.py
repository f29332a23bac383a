"""The gate's verdict: each check's result, with its figure and threshold, and ACCEPT only
when every check passes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .render import print_report, rich_table

ACCEPT, REJECT = "ACCEPT", "REJECT"


@dataclass(frozen=True)
class Check:
    """One check of the gate. `figure` is a number, a text, or named numbers (a dict)."""

    name: str
    passed: bool
    figure: Any
    threshold: str
    detail: str


@dataclass(frozen=True)
class GateReport:
    config_id: str
    baseline_id: str
    checks: tuple[Check, ...]
    # The EngineSums of [config, baseline] on the held-out data the gate decided, when it had
    # some: what a caller reports as held-out figures is then what the gate judged.
    heldout_sums: Any = field(default=None, compare=False, repr=False)

    @property
    def accepted(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return ACCEPT if self.accepted else REJECT

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no gate check named {name!r} (checks: {', '.join(c.name for c in self.checks)})")

    def figures(self) -> dict[str, Any]:
        return {c.name: c.figure for c in self.checks}

    def to_meta(self) -> dict[str, Any]:
        """The verdict and every check, as plain data for a suggestion's or profile's [meta]."""
        return {"verdict": self.verdict, "config_id": self.config_id, "baseline_config_id": self.baseline_id,
                "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_meta())

    def rich_table(self):
        """The checks as a Rich table (render.py)."""
        return rich_table(self)

    def print(self, console) -> None:
        """The table and the verdict, on a Rich console (render.py)."""
        print_report(self, console)

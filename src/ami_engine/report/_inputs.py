"""The report's input, read once at the edge: the suggestion file, history and traces.

The caller passes plain parsed data (TOML tables, JSON lines). Any part may be missing
or come from an older or foreign writer, so every panel reads through this object and
gets None for what is not there, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..config.loader import PROFILE_NAMES, load_config
from ..config.params import LEARNED_BOUNDS, LEARNED_PARAMS
from ._html import dig, num, nums

ON_BOUND_TOLERANCE = 1e-9
SIDES = ("baseline", "suggestion")
SPLITS = {"train": "train", "heldout": "held-out"}  # key in [meta.metrics] -> label
SCENARIOS = ("safe", "balanced", "critical", "chaos")


@dataclass(frozen=True)
class ReportData:
    """The suggestion split into its config keys and its [meta], plus history and traces."""

    config: Mapping[str, Any]
    meta: Mapping[str, Any] | None
    history: list[Mapping[str, Any]] | None
    traces: list[Mapping[str, Any]] | None
    has_suggestion: bool = field(default=True)
    traces_note: str | None = None

    @classmethod
    def read(cls, suggestion: Any, history: Any, traces: Any, traces_note: str | None = None) -> ReportData:
        has_suggestion = isinstance(suggestion, Mapping) and bool(suggestion)
        config = dict(suggestion) if has_suggestion else {}
        meta = config.pop("meta", None)
        return cls(
            config=config,
            meta=meta if isinstance(meta, Mapping) and meta else None,
            history=_records(history),
            traces=_records(traces),
            has_suggestion=has_suggestion,
            traces_note=traces_note,
        )

    def at(self, *path: str) -> Any:
        """A value of the suggestion's [meta], or None."""
        return dig(self.meta, *path)

    def table(self, *path: str) -> Mapping[str, Any] | None:
        value = self.at(*path)
        return value if isinstance(value, Mapping) else None

    def metrics(self, split: str, side: str) -> Mapping[str, Any] | None:
        """Metrics of `side` ("baseline"/"suggestion") on `split` ("train"/"heldout")."""
        return self.table("metrics", split, side)

    def scenario(self, name: str, side: str) -> Mapping[str, Any] | None:
        return self.table("scenarios", name, side)

    @cached_property
    def verdict(self) -> str | None:
        value = self.at("gate", "verdict")
        return value.upper() if isinstance(value, str) and value.upper() in ("ACCEPT", "REJECT") else None

    @cached_property
    def checks(self) -> list[Mapping[str, Any]]:
        value = self.at("gate", "checks")
        return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []

    @cached_property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """The learning bounds the suggestion records, else the engine's own table."""
        out = {}
        for name, default in LEARNED_BOUNDS.items():
            pair = nums(self.at("bounds", name), 2)
            out[name] = (pair[0], pair[1]) if pair else default
        return out

    @cached_property
    def suggested(self) -> dict[str, float | None]:
        """The seven learned parameters of the suggestion (or the plain config)."""
        out = {name: num(self.config.get(name)) for name in LEARNED_PARAMS}
        profile = self._extended_profile()
        if profile is not None:
            for name, value in out.items():
                if value is None:
                    out[name] = num(profile.get(name))
        return out

    @cached_property
    def baseline(self) -> dict[str, float | None]:
        return {name: num(self.at("baseline_params", name)) for name in LEARNED_PARAMS}

    @cached_property
    def on_bound(self) -> dict[str, str]:
        """Parameter -> "lower" / "upper" for each suggested value that sits on a bound."""
        named = self.at("params_on_bound")
        out = {}
        for name, value in self.suggested.items():
            lo, hi = self.bounds[name]
            if value is not None and abs(value - lo) <= ON_BOUND_TOLERANCE:
                out[name] = "lower"
            elif value is not None and abs(value - hi) <= ON_BOUND_TOLERANCE:
                out[name] = "upper"
            elif isinstance(named, list) and name in named:
                out[name] = "bound"
        return out

    def _extended_profile(self) -> Mapping[str, Any] | None:
        """Values of the built-in profile the file extends, for keys it leaves out.

        Only built-in profiles are read: a report never opens a path named in its input.
        """
        name = self.config.get("extends", "base")
        if name not in PROFILE_NAMES:
            return None
        return load_config(name).values


def _records(value: Any) -> list[Mapping[str, Any]] | None:
    if not isinstance(value, (list, tuple)):
        return None
    records = [r for r in value if isinstance(r, Mapping)]
    return records or None

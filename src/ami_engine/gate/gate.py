"""The safety gate (LEARNING.md): ACCEPT or REJECT a config against a baseline, check by check.

Checks, in order: bounds, invariants, determinism, held-out loss, critical floor (two
figures), regression suite. Every check reports its figure and its threshold, so a
reviewer can see why a config passed or failed. `learn` runs the same critical-floor and
regression functions (constraints.py) as constraints during its search.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..check import check_columns
from ..config import LEARNED_BOUNDS, PARAMS, Config, load_config
from ..engine import ScoreTable, run
from ..io.stateset import StateSet
from ..io.traces import encode_traces
from ..learning.loss import LossWeights
from ..suites import CHAOS_SUITE, CRITICAL_SET, chaos_suite, critical_set, profile_suite
from .constraints import CriticalFloor, regression_failures


@dataclass(frozen=True)
class Check:
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

    @property
    def accepted(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "ACCEPT" if self.accepted else "REJECT"

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_meta(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "config_id": self.config_id, "baseline_config_id": self.baseline_id,
                "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_meta())

    def print(self, console) -> None:
        from rich.table import Table

        colour = "green" if self.accepted else "red"
        table = Table(title=f"Safety gate: config {self.config_id} against baseline {self.baseline_id}")
        for col in ("check", "result", "figure", "threshold", "detail"):
            table.add_column(col)
        for c in self.checks:
            mark = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
            figure = f"{c.figure:.6g}" if isinstance(c.figure, float) else str(c.figure)
            table.add_row(c.name, mark, figure, c.threshold, c.detail)
        console.print(table)
        console.print(f"[bold {colour}]{self.verdict}[/]" + ("" if self.accepted else
                                                             f" (failed: {', '.join(self.failed)})"))


# ------------------------------------------------------------------------------ checks


def check_bounds(config: Config, baseline: Config) -> Check:
    problems = []
    for name, (lo, hi) in LEARNED_BOUNDS.items():
        if not lo <= config[name] <= hi:
            problems.append(f"{name} = {config[name]} outside [{lo}, {hi}]")
    for name in PARAMS:
        if name not in LEARNED_BOUNDS and config[name] != baseline[name]:
            problems.append(f"{name} = {config[name]} differs from the baseline's {baseline[name]}")
    detail = "; ".join(problems) if problems else "7 learned parameters inside their bounds; every other as in baseline"
    return Check("bounds", not problems, len(problems), "== 0 problems", detail)


def check_invariants(config: Config) -> Check:
    sets = {"chaos suite": chaos_suite(), **{f"{k} profile": v for k, v in profile_suite().items()}}
    total, bad, first = 0, 0, None
    for label, states in sets.items():
        violations = check_columns(run(states, config), config)
        total += len(states)
        bad += len(violations)
        if violations and first is None:
            v = violations[0]
            first = f"first: {label} record {v.line}, invariant {v.invariant}, {v.field}: {v.detail}"
    detail = first or f"{total} records: chaos suite ({len(sets['chaos suite'])} states, seeds " \
                       f"{', '.join(str(s[2]) for s in CHAOS_SUITE)}) and the 4 scenario profiles"
    return Check("invariants", bad == 0, bad, "== 0 violations", detail)


def _trace_digest(states: StateSet, config: Config) -> str:
    data = b"".join(encode_traces(run(states, config), states, config_id=config.config_id, model=ENGINE_MODEL,
                                  chaos=True))
    return hashlib.sha256(data).hexdigest()


def check_determinism(config: Config) -> Check:
    states = chaos_suite()
    first, second = _trace_digest(states, config), _trace_digest(states, config)
    same = first == second
    return Check("determinism", same, "identical" if same else "different", "byte-identical",
                 f"two runs over the chaos suite; SHA-256 {first[:16]}" + ("" if same else f" vs {second[:16]}"))


def _loss_of(table: ScoreTable, configs: list[Config], weights: LossWeights) -> np.ndarray:
    from ..learning.offline_loop import losses_from_sums

    return losses_from_sums(table.evaluate(configs), weights)


def check_heldout_loss(config: Config, baseline: Config, held_out: StateSet | None, weights: LossWeights) -> Check:
    if held_out is None:
        return Check("heldout_loss", True, "n/a", "<= baseline's L", "not applicable: the config names no data")
    ours, theirs = _loss_of(ScoreTable(held_out, baseline), [config, baseline], weights)
    return Check("heldout_loss", bool(ours <= theirs), float(ours), f"<= {theirs:.6g}",
                 f"L on {len(held_out)} held-out records (baseline {theirs:.6g}, weights {weights.as_list()})")


def check_critical_floor(config: Config, baseline: Config, critical: CriticalFloor) -> list[Check]:
    sums = ScoreTable(critical_set(), baseline).evaluate([config, baseline])
    rate, mean_h = critical.figures(sums)
    min_rate, max_h = critical.thresholds(sums[1])
    off = critical.factor == 0
    where = f"critical set ({CRITICAL_SET[1]} states, seed {CRITICAL_SET[2]})"
    note = " (floor off: factor 0)" if off else ""
    return [
        Check("critical_fail_safe_rate", bool(off or rate[0] >= min_rate), float(rate[0]), f">= {min_rate:.6g}",
              f"{critical.factor} x baseline's {rate[1]:.6g} on the {where}{note}"),
        Check("critical_mean_H", bool(off or mean_h[0] <= max_h), float(mean_h[0]), f"<= {max_h:.6g}",
              f"baseline's mean H of final actions {mean_h[1]:.6g} + margin {critical.margin}{note}"),
    ]


def check_regression(config: Config, regression: StateSet | None) -> Check:
    if regression is None:
        return Check("regression", True, "n/a", "every level >= expected", "no regression suite given")
    failures = regression_failures(regression, config)
    shown = ", ".join(str(regression.ids[i] if regression.ids[i] is not None else f"#{i}") for i in failures[:10])
    detail = f"{len(regression)} states" + (f"; below expect_level_min: {shown}" if failures else "")
    return Check("regression", not failures, len(failures), "== 0 below expect_level_min", detail)


def run_gate(config: Config, baseline: Config, *, held_out: StateSet | None = None,
             regression: StateSet | None = None, critical: CriticalFloor | None = None,
             weights: LossWeights | None = None) -> GateReport:
    """Every check of the gate on one config; ACCEPT only when all pass."""
    critical = critical or CriticalFloor()
    weights = weights or LossWeights()
    checks = [
        check_bounds(config, baseline),
        check_invariants(config),
        check_determinism(config),
        check_heldout_loss(config, baseline, held_out, weights),
        *check_critical_floor(config, baseline, critical),
        check_regression(config, regression),
    ]
    return GateReport(config.config_id, baseline.config_id, tuple(checks))


def gate_suggestion_file(path: str, *, baseline: str | None = None, regression: str | None = None,
                         critical: CriticalFloor | None = None) -> GateReport:
    """The gate on a suggestion (or any config) file: its baseline is its `extends` unless
    given; its held-out data is rebuilt from `[meta.data]` and `[meta.split]` when it has them."""
    from ..io.states import read_states
    from ..learning.offline_loop import data_from_meta, split_states

    config = load_config(path)
    with open(path, "rb") as fh:
        doc = tomllib.load(fh)
    base = load_config(baseline or doc.get("extends", "base"))
    meta = doc.get("meta", {})
    held_out = None
    if "data" in meta and "split" in meta:
        data = data_from_meta(meta["data"])
        split = split_states(data.states, int(meta["split"]["seed"]), float(meta["split"]["train_fraction"]))
        held_out = data.states.subset(split.held_out)
    weights = LossWeights(*meta["loss_weights"]) if "loss_weights" in meta else LossWeights()
    reg = read_states(regression, allow_expect_level=True) if regression else None
    return run_gate(config, base, held_out=held_out, regression=reg, critical=critical, weights=weights)



"""The safety gate (docs/gate.md): ACCEPT or REJECT a config against a baseline, check by check.

Checks, in order: bounds, invariants, determinism, heldout_loss, critical_floor,
regression, certificate (the figures of heldout_loss and critical_floor as confidence
bounds, certificate.py). Every check reports its figure and its threshold, so that a
reviewer sees why a config passed or failed; the verdict is ACCEPT only when every check passes. The
critical floor and the regression suite are judged by the same functions `learn` applies
as constraints during its search (constraints.py). The suites are fixed and seeded
(suites.py), so the gate gives the same figures every time. On a suggestion file the
baseline is first judged against a trusted yardstick (yardstick.py): a suggestion never
chooses what its hard floors are compared with.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..check import check_columns
from ..config import LEARNED_BOUNDS, PARAMS, Config, load_config, parse_config
from ..engine import ScoreTable, run
from ..engine import kernel as K
from ..engine.batch import ActionSpace
from ..io.files import InputError
from ..io.states import read_states
from ..io.stateset import StateSet
from ..io.traces import TraceColumns, encode_traces
from ..learning.loss import LossWeights
from ..suggestion import Suggestion
from ..suites import CHAOS_SUITE, CRITICAL_SET, chaos_suite, critical_set, profile_suite
from .certificate import DEFAULT_DELTA, certify, check_delta
from .constraints import CriticalFloor, regression_failures
from .yardstick import check_baseline

ACCEPT, REJECT = "ACCEPT", "REJECT"
CHECK_NAMES = ("bounds", "invariants", "determinism", "heldout_loss", "critical_floor", "regression", "certificate")
_SHOWN = 10  # offending states listed by name in a check's detail
DEFAULT_CRITICAL, DEFAULT_WEIGHTS = CriticalFloor(), LossWeights()
_METRIC_LABELS = {"fail_safe_rate": "fail-safe rate", "mean_cus": "mean CUS", "clamp_distortion": "clamp distortion"}


@dataclass(frozen=True)
class GateThresholds:
    """The gate's settable thresholds. The chaos suite is not among them: it always runs.

    critical: the critical floor (factor 0 turns it off; its figures are still shown).
    heldout_tolerance: how much higher than the baseline's the held-out L may be.
    delta: the certificate's bounds hold at confidence 1 - delta.
    """

    critical: CriticalFloor = DEFAULT_CRITICAL
    heldout_tolerance: float = 0.0
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        factor, margin, tol = self.critical.factor, self.critical.margin, self.heldout_tolerance
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"critical factor: must be a finite number >= 0, got {factor!r}")
        if not math.isfinite(margin):
            raise ValueError(f"critical margin: must be a finite number, got {margin!r}")
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"held-out tolerance: must be a finite number >= 0, got {tol!r}")
        check_delta(self.delta)


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
        """The checks as a Rich table (texts shown as written, never read as markup)."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"Safety gate: config {self.config_id} against baseline {self.baseline_id}")
        for column in ("check", "result", "figure", "threshold", "detail"):
            table.add_column(column, overflow="fold")
        for c in self.checks:
            mark = Text("pass", style="green") if c.passed else Text("FAIL", style="bold red")
            table.add_row(Text(c.name), mark, Text(format_figure(c.figure)), Text(c.threshold), Text(c.detail))
        return table

    def print(self, console) -> None:
        console.print(self.rich_table())
        colour = "green" if self.accepted else "red"
        failed = "" if self.accepted else f" (failed: {', '.join(self.failed)})"
        console.print(f"[bold {colour}]{self.verdict}[/]{failed}", highlight=False)


def format_figure(figure: Any) -> str:
    if isinstance(figure, float):
        return f"{figure:.6g}"
    if isinstance(figure, Mapping):
        return ", ".join(f"{k} {format_figure(v)}" for k, v in figure.items())
    return str(figure)


def _g(x: float) -> str:
    return f"{x:.6g}"


# ------------------------------------------------------------------------------ checks


def check_bounds(config: Config, baseline: Config) -> Check:
    """Learned parameters inside their bounds; every other parameter as in the baseline."""
    problems = [f"{name} = {config[name]} is outside its bounds [{lo}, {hi}]"
                for name, (lo, hi) in LEARNED_BOUNDS.items() if not lo <= config[name] <= hi]
    problems += [f"{name} = {_plain(config[name])} differs from the baseline's {_plain(baseline[name])}"
                 for name in PARAMS if name not in LEARNED_BOUNDS and config[name] != baseline[name]]
    detail = "; ".join(problems) if problems else \
        f"{len(LEARNED_BOUNDS)} learned parameters inside their bounds; every other parameter as in the baseline"
    return Check("bounds", not problems, len(problems), "== 0 problems", detail)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _invariant_sets() -> dict[str, StateSet]:
    """The chaos suite, then each scenario profile (their `critical` is the critical set)."""
    return {"chaos suite": chaos_suite(), **{f"{name} profile": states for name, states in profile_suite().items()}}


def check_invariants(config: Config, chaos_columns: TraceColumns | None = None) -> Check:
    """docs/engine.md §13 (1-5) on every record of the chaos suite and of each profile,
    against the config's own thresholds. `chaos_columns`: the config's run on the chaos
    suite, when the caller has it already."""
    total, per_invariant, first = 0, Counter(), None
    sizes = []
    for label, states in _invariant_sets().items():
        cols = chaos_columns if label == "chaos suite" and chaos_columns is not None else run(states, config)
        violations = check_columns(cols, config)
        total += len(states)
        sizes.append(f"{label} {len(states)}")
        per_invariant.update(v.invariant for v in violations)
        if violations and first is None:
            v = violations[0]
            first = f"first: {label} record {v.line}, invariant {v.invariant} ({v.name}), {v.field}: {v.detail}"
    bad = sum(per_invariant.values())
    seeds = ", ".join(str(spec[2]) for spec in CHAOS_SUITE)
    detail = f"{bad} violations over {total} records ({', '.join(sizes)}; chaos seeds {seeds})"
    if bad:
        counts = ", ".join(f"invariant {k}: {n}" for k, n in sorted(per_invariant.items()))
        detail += f"; {counts}; {first}"
    return Check("invariants", bad == 0, bad, f"== 0 violations of {total} records", detail)


def _trace_bytes(cols: TraceColumns, states: StateSet, config: Config) -> bytes:
    return b"".join(encode_traces(cols, states, config_id=config.config_id, model=ENGINE_MODEL, chaos=True))


def check_determinism(config: Config, chaos_columns: TraceColumns | None = None) -> Check:
    """Two runs over the chaos suite give byte-identical trace files (`chaos_columns`: a
    first run the caller has already made; the second is always made here)."""
    states = chaos_suite()
    first = chaos_columns if chaos_columns is not None else run(states, config)
    one, two = _trace_bytes(first, states, config), _trace_bytes(run(states, config), states, config)
    sha_one, sha_two = hashlib.sha256(one).hexdigest(), hashlib.sha256(two).hexdigest()
    same = one == two
    detail = f"two runs over the chaos suite ({len(states)} records, {len(one)} bytes): " + (
        "byte-identical" if same else f"they differ; second run's SHA-256 {sha_two}")
    return Check("determinism", same, sha_one, "== SHA-256 of a second run", detail)


def _sums(states: StateSet, configs: Sequence[Config]) -> np.ndarray:
    """Engine sums (kernel.S_*) per config; configs with the same action space share a
    ScoreTable (a config with another ACTION_GRID or SCORE_WEIGHTS gets its own)."""
    out = np.empty((len(configs), K.N_SUMS))
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(ActionSpace.of(config).key(), []).append(i)
    for rows in groups.values():
        out[rows] = ScoreTable(states, configs[rows[0]]).evaluate([configs[i] for i in rows])
    return out


def check_heldout_loss(config: Config, baseline: Config, held_out: StateSet | None, weights: LossWeights,
                       tolerance: float = 0.0) -> Check:
    """L of the config <= L of the baseline (+ tolerance) on the held-out data."""
    if held_out is None:
        return Check("heldout_loss", True, "n/a", "<= baseline's L", "not applicable: the config names no data")
    if len(held_out) == 0:
        raise ValueError("held_out: no states")
    # offline_loop imports the gate package (constraints), so it is imported here, not at the top.
    from ..learning.offline_loop import metrics_from_sums

    ours, theirs = (metrics_from_sums(row, weights) for row in _sums(held_out, [config, baseline]))
    limit = theirs["L"] + tolerance
    parts = ", ".join(f"{label} {_g(ours[name])} (baseline {_g(theirs[name])})"
                      for name, label in _METRIC_LABELS.items())
    detail = f"L on {len(held_out)} held-out records, weights {weights.as_list()}: {parts}"
    threshold = f"<= {_g(theirs['L'])}" + (f" + {tolerance:g}" if tolerance else "") + " (baseline's L)"
    return Check("heldout_loss", bool(ours["L"] <= limit), ours["L"], threshold, detail)


def check_critical_floor(config: Config, baseline: Config, critical: CriticalFloor) -> Check:
    """On the critical set: fail-safe rate >= factor x the baseline's, and mean H of the
    final actions <= the baseline's + margin. Both figures are always shown."""
    sums = _sums(critical_set(), [config, baseline])
    rate, mean_h = critical.figures(sums)
    min_rate, max_h = critical.thresholds(sums[1])
    passed = bool(critical.passes(sums[:1], sums[1])[0])
    off = critical.factor == 0
    figure = {"fail_safe_rate": float(rate[0]), "mean_H": float(mean_h[0])}
    threshold = f"fail-safe rate >= {_g(min_rate)}; mean H <= {_g(max_h)}" + (" (off: factor 0)" if off else "")
    rate_ok, h_ok = rate[0] >= min_rate, mean_h[0] <= max_h
    detail = (
        f"critical set ({CRITICAL_SET[1]} states, seed {CRITICAL_SET[2]}): "
        f"fail-safe rate {_g(rate[0])} {'>=' if rate_ok else '<'} {_g(min_rate)} "
        f"({critical.factor:g} x baseline's {_g(rate[1])}); "
        f"mean H of final actions {_g(mean_h[0])} {'<=' if h_ok else '>'} {_g(max_h)} "
        f"(baseline's {_g(mean_h[1])} + {critical.margin:g})"
        + ("; the floor is off (factor 0), figures for information" if off else "")
    )
    return Check("critical_floor", passed, figure, threshold, detail)


def check_regression(config: Config, regression: StateSet | None) -> Check:
    """Every state of the regression suite reaches at least its `expect_level_min`."""
    if regression is None:
        return Check("regression", True, "n/a", "every level >= expect_level_min", "not given: no regression suite")
    failures = regression_failures(regression, config)
    threshold = f"== 0 of {len(regression)} states below expect_level_min"
    if not failures:
        return Check("regression", True, 0, threshold, f"all {len(regression)} states reach their expected level")
    expected = regression.expect_level_min
    shown = [f"position {i}" + ("" if regression.ids[i] is None else f" (id {regression.ids[i]})")
             + f" expects >= {int(expected[i])}" for i in failures[:_SHOWN]]
    more = f" and {len(failures) - _SHOWN} more" if len(failures) > _SHOWN else ""
    detail = f"below expect_level_min: {', '.join(shown)}{more}"
    return Check("regression", False, len(failures), threshold, detail)


def check_certificate(config: Config, baseline: Config, held_out: StateSet | None, weights: LossWeights,
                      critical: CriticalFloor, delta: float = DEFAULT_DELTA) -> Check:
    """Checks 4 and 5 as one-sided confidence bounds at 1 - delta (certificate.py)."""
    cert = certify(config, baseline, held_out=held_out, weights=weights, critical=critical, delta=delta)
    return Check("certificate", cert.passed, cert.figure(), cert.threshold(), cert.detail())


def run_gate(config: Config, baseline: Config, *, held_out: StateSet | None = None,
             regression: StateSet | None = None, critical: CriticalFloor = DEFAULT_CRITICAL,
             weights: LossWeights = DEFAULT_WEIGHTS, heldout_tolerance: float = 0.0,
             delta: float = DEFAULT_DELTA) -> GateReport:
    """Every check of the gate on one config; ACCEPT only when all pass."""
    GateThresholds(critical, heldout_tolerance, delta)  # the thresholds are checked once, here
    chaos_columns = run(chaos_suite(), config)  # shared by the invariants and the determinism check
    checks = (
        check_bounds(config, baseline),
        check_invariants(config, chaos_columns),
        check_determinism(config, chaos_columns),
        check_heldout_loss(config, baseline, held_out, weights, heldout_tolerance),
        check_critical_floor(config, baseline, critical),
        check_regression(config, regression),
        check_certificate(config, baseline, held_out, weights, critical, delta),
    )
    return GateReport(config.config_id, baseline.config_id, checks)


# -------------------------------------------------------------------- suggestion files


def gate_suggestion(suggestion: Suggestion, baseline: str | Config | None = None,
                    regression: str | StateSet | None = None, *, thresholds: GateThresholds | None = None,
                    weights: LossWeights | None = None, critical: CriticalFloor | None = None,
                    data: str | Path | None = None) -> GateReport:
    """The gate on a suggestion (or any config) already read: its config and its [meta]
    come from the bytes read once (suggestion.py); the file is not opened again.

    The baseline is the suggestion's `extends` unless given; either way it is judged
    against a trusted yardstick first (yardstick.py) and refused (BaselineRefused) when it
    weakens a parameter learning never touches. The held-out data is rebuilt from
    `[meta.data]` and `[meta.split]` when the suggestion has them (`data`: a moved copy of
    its data file, accepted only with the same SHA-256), else the held-out check is not
    applicable; the regression suite is the one given, else the one the suggestion was
    learned with; the loss weights are those of `[meta] loss_weights` unless given. The
    thresholds are the gate's own, never read from the file. `critical` sets the critical
    floor alone, for callers that have no other threshold to set.
    """
    if critical is not None and thresholds is not None:
        raise ValueError("give the critical floor either in thresholds or as critical, not both")
    thresholds = thresholds or GateThresholds(critical or DEFAULT_CRITICAL)
    config, meta = suggestion.config, dict(suggestion.meta)
    if baseline is None:
        base = suggestion.baseline()
    else:
        base = baseline if isinstance(baseline, Config) else load_config(baseline)
    check_baseline(base)
    if isinstance(regression, (str, Path)):
        regression = read_states(regression, allow_expect_level=True)
    elif regression is None:
        regression = suggestion.regression()
    return run_gate(config, base, held_out=suggestion.held_out(data), regression=regression,
                    critical=thresholds.critical, weights=weights or _weights_from_meta(meta, suggestion.name),
                    heldout_tolerance=thresholds.heldout_tolerance, delta=thresholds.delta)


def gate_suggestion_file(path: str | Path, baseline: str | Config | None = None,
                         regression: str | StateSet | None = None, *, thresholds: GateThresholds | None = None,
                         weights: LossWeights | None = None, critical: CriticalFloor | None = None,
                         data: str | Path | None = None) -> GateReport:
    """The gate on a suggestion file (see gate_suggestion), read once."""
    return gate_suggestion(Suggestion.read(path), baseline, regression, thresholds=thresholds, weights=weights,
                           critical=critical, data=data)


def suggestion_baseline(config: Config, where: str) -> Config:
    """The config the file at `where` extends (a relative path read from the file's folder)."""
    return parse_config({"extends": config.extends or "base"}, where)


def _weights_from_meta(meta: Mapping[str, Any], where: str) -> LossWeights:
    raw = meta.get("loss_weights")
    if raw is None:
        return LossWeights()
    try:
        return LossWeights.from_list(raw)
    except (TypeError, ValueError) as exc:
        raise InputError(where, None, "meta.loss_weights", f"expected three or four numbers >= 0 ({exc})",
                         raw) from None

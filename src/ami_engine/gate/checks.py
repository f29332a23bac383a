"""The gate's checks (docs/gate.md), one function each; each returns its Check, with the
figure and the threshold that decided it.

bounds, invariants, determinism, heldout_loss, critical_floor, regression, certificate
(the figures of heldout_loss and critical_floor as confidence bounds, certificate.py).
The critical floor and the regression suite are judged by the same functions `learn`
applies as constraints during its search (learning/constraints.py). The suites are fixed
and seeded (suites.py), so the checks give the same figures every time.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from .. import ENGINE_MODEL
from ..check import check_columns
from ..config import LEARNED_BOUNDS, PARAMS, Config
from ..engine import DIRECT_MAX_CONFIGS, ActionSpace, EngineSums, ScoreTable, direct_sums, run
from ..io.stateset import StateSet
from ..io.traces import TraceColumns, encode_traces
from ..learning.bounds import DEFAULT_DELTA
from ..learning.constraints import CriticalFloor, regression_failures
from ..learning.loss import LossWeights
from ..suites import CHAOS_SUITE, CRITICAL_SET, chaos_suite, critical_set, profile_suite
from .certificate import HeldOutDecisions, certify
from .verdict import Check

CHECK_NAMES = ("bounds", "invariants", "determinism", "heldout_loss", "critical_floor", "regression", "certificate")
_SHOWN = 10  # offending states listed by name in a check's detail
HELDOUT_TABLE_BYTES = 256 << 20  # the most a score table of held-out data holds at once (kept in parts beyond)
_METRIC_LABELS = {"fail_safe_rate": "fail-safe rate", "mean_cus": "mean CUS", "clamp_distortion": "clamp distortion"}


def _g(x: float) -> str:
    return f"{x:.6g}"


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


def _sums(states: StateSet, configs: Sequence[Config]) -> EngineSums:
    """Each config's sums over `states`. Configs with the same action space are scored
    together: up to DIRECT_MAX_CONFIGS of them directly, more through one ScoreTable (a
    config with another ACTION_GRID or SCORE_WEIGHTS gets its own), kept in parts of at
    most HELDOUT_TABLE_BYTES (the same sums, in bounded memory)."""
    rows: list[EngineSums | None] = [None] * len(configs)
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(ActionSpace.of(config).key(), []).append(i)
    for members in groups.values():
        chosen = [configs[i] for i in members]
        if len(members) <= DIRECT_MAX_CONFIGS:  # a few configs: cheaper without a table
            sums = direct_sums(states, chosen)
        else:
            sums = ScoreTable(states, chosen[0], memory_bytes=HELDOUT_TABLE_BYTES).evaluate(chosen)
        for i, one in zip(members, sums, strict=True):
            rows[i] = one
    return EngineSums.concat(rows)


def check_heldout_loss(config: Config, baseline: Config, held_out: StateSet | None, weights: LossWeights,
                       tolerance: float = 0.0, decided: HeldOutDecisions | None = None) -> Check:
    """L of the config <= L of the baseline (+ tolerance) on the held-out data (decided:
    decide_held_out(held_out, (config, baseline), weights), when the caller has it)."""
    if held_out is None:
        return Check("heldout_loss", True, "n/a", "<= baseline's L", "not applicable: the config names no data")
    if len(held_out) == 0:
        raise ValueError("held_out: no states")
    sums = decided.sums if decided is not None else _sums(held_out, [config, baseline])
    ours, theirs = (row.figures(weights) for row in sums)
    limit = theirs["L"] + tolerance
    parts = ", ".join(f"{label} {_g(ours[name])} (baseline {_g(theirs[name])})"
                      for name, label in _METRIC_LABELS.items())
    detail = f"L on {len(held_out)} held-out records, weights {weights.as_list()}: {parts}"
    threshold = f"<= {_g(theirs['L'])}" + (f" + {tolerance:g}" if tolerance else "") + " (baseline's L)"
    return Check("heldout_loss", bool(ours["L"] <= limit), ours["L"], threshold, detail)


def check_critical_floor(config: Config, baseline: Config, critical: CriticalFloor) -> Check:
    """On the critical set: fail-safe rate >= factor x the baseline's, and mean H of the
    final actions <= the baseline's + margin. Both figures are always shown."""
    references = critical.references(baseline)
    sums = _sums(critical_set(), [config, *references])
    rate, mean_h = sums.fail_safe_rate, sums.mean_H
    min_rate, max_h = critical.thresholds(sums[1:])
    passed = bool(critical.passes(sums[:1], sums[1:])[0])
    off = critical.factor == 0
    figure = {"fail_safe_rate": float(rate[0]), "mean_H": float(mean_h[0])}
    threshold = f"fail-safe rate >= {_g(min_rate)}; mean H <= {_g(max_h)}" + (" (off: factor 0)" if off else "")
    rate_ok, h_ok = rate[0] >= min_rate, mean_h[0] <= max_h
    detail = (
        f"critical set ({CRITICAL_SET[1]} states, seed {CRITICAL_SET[2]}): "
        f"fail-safe rate {_g(rate[0])} {'>=' if rate_ok else '<'} {_g(min_rate)} "
        f"({critical.factor:g} x {_reference(rate[1:], max, references)}); "
        f"mean H of final actions {_g(mean_h[0])} {'<=' if h_ok else '>'} {_g(max_h)} "
        f"({_reference(mean_h[1:], min, references)} + {critical.margin:g})"
        + ("; the floor is off (factor 0), figures for information" if off else "")
    )
    return Check("critical_floor", passed, figure, threshold, detail)


def _reference(values, pick, references: list[Config]) -> str:
    """Which reference's figure set a threshold: "baseline's 0.967", or, when the yardstick
    is stricter, "yardstick base's 0.967 (baseline's 0.5)"."""
    chosen = pick(range(len(values)), key=lambda i: values[i])
    if chosen == 0:
        return f"baseline's {_g(values[0])}"
    return f"yardstick {references[chosen].source}'s {_g(values[chosen])} (baseline's {_g(values[0])})"


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
                      critical: CriticalFloor, delta: float = DEFAULT_DELTA,
                      decided: HeldOutDecisions | None = None) -> Check:
    """Checks 4 and 5 as one-sided confidence bounds at 1 - delta (certificate.py)."""
    cert = certify(config, baseline, held_out=held_out, weights=weights, critical=critical, delta=delta,
                   decided=decided)
    return Check("certificate", cert.passed, cert.figure(), cert.threshold(), cert.detail())

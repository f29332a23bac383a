"""The Phase 6.0 offline loop: data -> split -> search -> gate -> suggestion.

    states / scenario / replayable traces
        -> seeded train / held-out split (by stream, or in time with < 5 streams)
        -> batches of candidate configs (policy_optimizer) evaluated on the training part
           with the batch engine, under the search-time constraints (critical floor,
           regression suite)
        -> the best feasible candidate through the full gate (next best on REJECT)
        -> suggestion (never applied), history, the needless fail-safes it removes

Held-out data never chooses: it is evaluated for the history and the report and used by
the gate only. The gate may try up to MAX_GATE_TRIES finalists in turn, so held-out data
does decide which of them (if any) is suggested: the gate's certificate is computed at
delta / MAX_GATE_TRIES (Bonferroni), which keeps the suggestion's promise at 1 - delta
whichever finalist passes. The search's critical constraint uses the same bounds at the
same confidence, so a finalist does not fail the certificate for sitting on a point
estimate of the critical floor.

The result's status is one of: "accepted" (the gate accepted a candidate that beats the
baseline on the training data), "rejected" (no finalist passed the gate), "no improvement"
(no candidate beats the baseline's training loss: nothing to suggest) or "not gated" (no
gate was given: the candidate is not accepted, whatever its figures).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .. import ENGINE_MODEL, __version__
from ..config import Config
from ..engine import REASONS, ScoreTable, run
from ..engine import kernel as K
from ..gate.certificate import DEFAULT_DELTA, check_delta, promise
from ..gate.constraints import CriticalFloor
from ..io.files import STDIO, read_once
from ..io.stateset import STATE_FIELDS, StateSet
from ..scenario import generate
from ..suites import profile_suite
from . import refine
from .loss import LossWeights, loss
from .policy_optimizer import SearchSpace, make_strategy
from .race import Race
from .racing import ETA, REFINE_ITERATIONS, REFINE_SHARE, RUNG0_DECISIONS, plan
from .shards import SHARD_DECISIONS, EvaluatorFactory, InProcessEvaluator, make_shards
from .study import StudyStore, make_fingerprint

DEFAULT_BATCH = 32
DEFAULT_MEMORY = 4 << 30  # bytes learning may hold (--memory)
MIN_MEMORY = 1 << 20
MAX_GATE_TRIES = 3
ACCEPTED, REJECTED, NO_IMPROVEMENT, NOT_GATED = "accepted", "rejected", "no improvement", "not gated"


class LearnError(ValueError):
    """The loop cannot run on this input (exit code 2)."""


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class LearnData:
    """The states to learn from, and where they came from (for the suggestion's [meta])."""

    states: StateSet
    source: str  # "scenario", "states" or "traces"
    description: str
    sha256: str
    path: str | None = None
    scenario: dict[str, Any] | None = None
    drop_unknown: bool = False  # unknown keys of the states file were left out on request

    def meta(self) -> dict[str, Any]:
        _, n_streams = self.states.stream_codes()
        out: dict[str, Any] = {"source": self.source, "description": self.description, "sha256": self.sha256,
                               "n_records": len(self.states), "n_streams": n_streams}
        if self.path is not None:
            out["path"] = self.path
        if self.scenario is not None:
            out["scenario"] = self.scenario
        if self.drop_unknown:
            out["drop_unknown"] = True
        return out


def data_from_scenario(name: str, n: int, seed: int, streams: int = 8) -> LearnData:
    states = generate(name, n, seed, streams)
    digest = hashlib.sha256(np.ascontiguousarray(states.values).tobytes()).hexdigest()
    return LearnData(states, "scenario", f"scenario {name}, n={n}, seed={seed}, streams={streams}", digest,
                     scenario={"name": name, "n": n, "seed": seed, "streams": streams})


def data_from_states_file(path: str, *, drop_unknown: bool = False) -> LearnData:
    """The states of a states file (`-` = stdin) or Parquet data set; a file is read once,
    and its SHA-256 is that of the bytes the states were read from. With `drop_unknown`,
    keys that are not part of a state are left out (and recorded, so that the data can be
    rebuilt the same way)."""
    from ..io.parquet import dataset_sha256, is_parquet
    from ..io.states import read_states

    if is_parquet(path):
        return LearnData(read_states(path, drop_unknown=drop_unknown), "states", f"states {path}",
                         dataset_sha256(path), path=path, drop_unknown=drop_unknown)
    loaded = read_once(path)
    return LearnData(read_states(loaded, drop_unknown=drop_unknown), "states", f"states file {loaded.name}",
                     loaded.sha256, path=_named_path(path), drop_unknown=drop_unknown)


def data_from_traces_file(path: str) -> LearnData:
    """Replay: the states carried by a traces file (`-` = stdin), stream by stream in file
    order; read once, like a states file."""
    from ..io.parquet import dataset_sha256, is_parquet
    from ..io.traces import read_trace_states

    if is_parquet(path):
        found, name, digest = read_trace_states(path), str(path), dataset_sha256(path)
    else:
        loaded = read_once(path)
        found, name, digest = read_trace_states(loaded), loaded.name, loaded.sha256
    if found.n_records == 0:
        raise LearnError(f"{path}: no traces in the file")
    if found.missing:
        raise LearnError(
            f"{path}: {found.missing} of {found.n_records} records carry no `state` (first: line "
            f"{found.first_missing}); traces without states give metrics only: use `ami-engine metrics` on this "
            "file, or pass the states with --states")
    return LearnData(found.states, "traces", f"traces file {name} (replayed)", digest,
                     path=_named_path(path))


def _named_path(path: str) -> str | None:
    """The path to record in a suggestion; None for stdin, which cannot be read again."""
    return None if path == STDIO else path


def meta_field(table: Any, key: str, kind: type, where: str) -> Any:
    """`table[key]` when it is of `kind` (an integer is not a bool), else a LearnError naming it."""
    value = table.get(key) if isinstance(table, dict) else None
    if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
        shown = "missing" if value is None else f"got {value!r}"
        raise LearnError(f"meta.{where}.{key}: expected {_KIND_NAMES[kind]}, {shown}")
    return value


_KIND_NAMES = {dict: "a table", str: "a text", int: "an integer >= 0"}


# ----------------------------------------------------------------------------- split


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # positions in the data, input order kept
    held_out: np.ndarray
    method: str  # "by_stream" or "in_time"
    train_fraction: float
    seed: int

    def meta(self) -> dict[str, Any]:
        return {"method": self.method, "train_fraction": self.train_fraction, "seed": self.seed,
                "n_train": int(self.train.size), "n_heldout": int(self.held_out.size)}


def split_states(states: StateSet, seed: int, train_fraction: float = 0.8) -> Split:
    """docs/learning.md §2: with 5 or more streams whole streams go to one side (the seeded shuffle
    of streams whose train share comes nearest the fraction); with fewer, each stream's
    first `train_fraction` of decisions trains and the rest is held out."""
    if not 0.0 < train_fraction < 1.0:
        raise LearnError(f"split: train fraction must be in (0, 1), got {train_fraction}")
    codes, n_streams = states.stream_codes()
    n = len(states)
    if n < 2:
        raise LearnError(f"data: {n} state(s); at least 2 are needed for a train/held-out split")
    if n_streams >= 5:
        sizes = np.bincount(codes, minlength=n_streams)
        shuffled = np.random.default_rng(seed).permutation(n_streams)
        cum = np.cumsum(sizes[shuffled])[:-1]  # at least one stream each side
        k = int(np.argmin(np.abs(cum - train_fraction * n))) + 1
        in_train = np.zeros(n_streams, dtype=bool)
        in_train[shuffled[:k]] = True
        mask = in_train[codes]
        method = "by_stream"
    else:
        mask = np.zeros(n, dtype=bool)
        for s in range(n_streams):
            pos = np.flatnonzero(codes == s)
            mask[pos[: int(math.floor(train_fraction * pos.size + 0.5))]] = True
        method = "in_time"
        if mask.all() or not mask.any():
            raise LearnError("split: too few states to hold any out")
    return Split(np.flatnonzero(mask), np.flatnonzero(~mask), method, train_fraction, seed)


# ------------------------------------------------------------------------- evaluation


def metrics_from_sums(sums: np.ndarray, weights: LossWeights) -> dict[str, Any]:
    """The feedback metrics and L from one row of engine sums."""
    n = sums[K.S_N]
    out = {
        "fail_safe_rate": sums[K.S_L2] / n,
        "mean_cus": sums[K.S_CUS] / n,
        "clamp_distortion": sums[K.S_DISTORTION] / n,
    }
    level_rates = [float(sums[K.S_L0 + j] / n) for j in range(3)]
    out = {"L": float(loss(out["fail_safe_rate"], out["mean_cus"], out["clamp_distortion"], weights,
                           level0_rate=level_rates[0], level1_rate=level_rates[1])),
           **{k: float(v) for k, v in out.items()}}
    out["level_rates"] = level_rates
    out["human_escalation_rate"] = float(sums[K.S_L2] / n)
    out["n"] = int(n)
    return out


def losses_from_sums(sums: np.ndarray, weights: LossWeights) -> np.ndarray:
    n = sums[:, K.S_N]
    return loss(sums[:, K.S_L2] / n, sums[:, K.S_CUS] / n, sums[:, K.S_DISTORTION] / n, weights,
                level0_rate=sums[:, K.S_L0] / n, level1_rate=sums[:, K.S_L1] / n)


def with_learned(baseline: Config, row: np.ndarray, space: SearchSpace) -> Config:
    return baseline.replace(**space.to_dict(row))


# --------------------------------------------------------------------------- search


@dataclass
class LearnSettings:
    strategy: str = "tpe"
    budget: int = 300
    seed: int = 0
    batch_size: int = DEFAULT_BATCH
    weights: LossWeights = field(default_factory=LossWeights)
    train_fraction: float = 0.8
    critical: CriticalFloor = field(default_factory=CriticalFloor)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    delta: float = DEFAULT_DELTA  # the suggestion's promise holds at 1 - delta
    memory: int = DEFAULT_MEMORY  # bytes; changes the speed, never the result
    rung0: int = RUNG0_DECISIONS  # decisions of the racing's first rung (racing.py)

    @property
    def shard_decisions(self) -> int:
        """Target decisions per shard: a rung 0 of at least a few shards."""
        return max(1, min(SHARD_DECISIONS, self.rung0 // 4))

    @property
    def gate_delta(self) -> float:
        """The certificate's delta for each finalist the gate tries (Bonferroni)."""
        return self.delta / MAX_GATE_TRIES


@dataclass
class LearnResult:
    suggestion: Config
    suggestion_toml: dict[str, Any]
    history: list[dict[str, Any]]
    gate: Any  # GateReport
    accepted: bool
    needless: dict[str, Any]
    summary: dict[str, Any]
    held_out: StateSet
    status: str = ACCEPTED
    grid_note: str | None = None


def _fingerprint(data: LearnData, baseline: Config, settings: LearnSettings, regression: StateSet | None) -> str:
    return make_fingerprint(
        data_sha256=data.sha256, baseline=baseline.config_id, strategy=settings.strategy,
        options=sorted(settings.strategy_options.items()), seed=settings.seed, budget=settings.budget,
        batch_size=settings.batch_size, weights=settings.weights.as_list(), split=settings.train_fraction,
        critical=[settings.critical.factor, settings.critical.margin], delta=settings.delta,
        regression=None if regression is None else hashlib.sha256(regression.values.tobytes()).hexdigest(),
        model=ENGINE_MODEL,
        racing=[settings.rung0, ETA, settings.shard_decisions, REFINE_ITERATIONS, REFINE_SHARE,
                refine.INITIAL_STEP, refine.GROW],
    )


def learn(
    data: LearnData,
    baseline: Config,
    settings: LearnSettings,
    *,
    regression: StateSet | None = None,
    study: str | None = None,
    gate_fn: Callable[..., Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    existing_study: str = "resume",
    evaluator: EvaluatorFactory | None = None,
) -> LearnResult:
    """Search the seven learned parameters; return the best candidate the gate accepts.

    The search races candidates over nested shards of the training data (racing.py): all
    on rung 0, the better ones on larger rungs, the finalists on all of it, then a local
    refinement of the best. `evaluator` makes the evaluator of a list of shards (default:
    in this process, within `settings.memory` bytes); every evaluator gives the same sums.

    `study` keeps the finished batches (see StudyStore.open); `existing_study` says what
    to do with a study already there: "resume" it, start it over ("fresh") or "refuse"."""
    if settings.budget < 1:
        raise LearnError(f"budget: must be >= 1, got {settings.budget}")
    if settings.batch_size < 1:
        raise LearnError(f"batch size: must be >= 1, got {settings.batch_size}")
    if settings.memory < MIN_MEMORY:
        raise LearnError(f"memory: must be at least {MIN_MEMORY >> 20} MiB, got {settings.memory} bytes")
    try:
        check_delta(settings.delta)
    except ValueError as exc:
        raise LearnError(str(exc)) from None
    split = split_states(data.states, settings.seed, settings.train_fraction)
    held_out = data.states.subset(split.held_out)
    space = SearchSpace()
    strategy = make_strategy(settings.strategy, space, seed=settings.seed, budget=settings.budget,
                             **settings.strategy_options)
    if settings.rung0 < 1:
        raise LearnError(f"rung 0: must be >= 1 decision, got {settings.rung0}")
    train_shards = make_shards(data.states, settings.seed, settings.shard_decisions, split.train)
    held_shards = make_shards(data.states, settings.seed, settings.shard_decisions, split.held_out)
    schedule = plan(train_shards.sizes, settings.budget, space.dim, rung0=settings.rung0)
    if evaluator is None:  # the training shards get most of the budget; held-out data is mostly streamed
        train_ev = InProcessEvaluator(train_shards.shards, baseline, settings.memory * 3 // 4)
        held_ev = InProcessEvaluator(held_shards.shards, baseline, settings.memory // 4)
    else:
        train_ev = evaluator(train_shards.shards, baseline)
        held_ev = evaluator(held_shards.shards, baseline)
    try:
        race = Race(schedule, train_ev, baseline, space, settings, regression)
        store = StudyStore.open(study, _fingerprint(data, baseline, settings, regression), space=space,
                                existing=existing_study)
        try:
            race.run(strategy, store, progress)
        finally:
            store.close()
        everything = range(len(train_shards))
        base_sums = train_ev.evaluate([baseline], everything)
        base_L = float(losses_from_sums(base_sums, settings.weights)[0])
        finalists = race.ranked()
        # Only a candidate that beats the baseline's own training loss is worth suggesting.
        better = [row for row, y in finalists if y < base_L - 1e-12 * max(1.0, abs(base_L))]
        tried = []
        gate_report = None
        chosen = None
        status = NO_IMPROVEMENT
        for row in better[:MAX_GATE_TRIES]:
            candidate = with_learned(baseline, row, space)
            if gate_fn is None:
                chosen, status = candidate, NOT_GATED
                break
            gate_report = gate_fn(candidate, baseline, held_out=held_out, regression=regression,
                                  critical=settings.critical, weights=settings.weights, delta=settings.gate_delta)
            tried.append(candidate)
            if gate_report.accepted:
                chosen, status = candidate, ACCEPTED
                break
            status = REJECTED
        if chosen is None:
            # Nothing passed (or nothing beat the baseline): report on the best tried, else the
            # baseline itself; never suggest it as accepted.
            chosen = tried[0] if tried else baseline
        history = race.history_lines(held_ev, range(len(held_shards)))
        sums = {"train": np.vstack([base_sums, train_ev.evaluate([chosen], everything)]),
                "heldout": held_ev.evaluate([baseline, chosen], range(len(held_shards)))}
    finally:
        train_ev.close()
        held_ev.close()
    note = strategy.note if hasattr(strategy, "note") else None
    racing_meta = {**schedule.meta(), "shards": len(train_shards), "shard_method": train_shards.method,
                   "evaluated": race.evaluated_per_rung()}
    return _result(data, baseline, settings, split, space, chosen, sums, held_out, history,
                   gate_report, status, note, racing_meta)


# ------------------------------------------------------------------ needless fail-safes


def needless_fail_safes(states: StateSet, baseline: Config, suggestion: Config, bins: int = 10) -> dict[str, Any]:
    """docs/learning.md §8: the decisions that are L2 under the baseline and not under the
    suggestion, by the baseline's reason and by state region."""
    base = run(states, baseline)
    sugg = run(states, suggestion)
    base_l2 = base.level == 2
    removed = base_l2 & (sugg.level < 2)
    still = base_l2 & (sugg.level == 2)
    by_reason = {REASONS[r]: int(np.sum(removed & (base.reason == r))) for r in range(len(REASONS))}
    by_reason = {k: v for k, v in by_reason.items() if v}
    edges = np.linspace(0.0, 1.0, bins + 1)
    fields, histograms, contrasts = [], {}, []
    values = states.values
    for j, name in enumerate(STATE_FIELDS):
        col = values[:, j]
        mean_all = float(col.mean())
        mean_removed = float(col[removed].mean()) if removed.any() else None
        mean_still = float(col[still].mean()) if still.any() else None
        fields.append({"field": name, "mean_needless": mean_removed, "mean_all": mean_all,
                       "mean_still_l2": mean_still})
        histograms[name] = {"edges": [float(e) for e in edges],
                            "all": np.histogram(col, edges)[0].tolist(),
                            "needless": np.histogram(col[removed], edges)[0].tolist()}
        if mean_removed is not None:
            spread = float(col.std()) or 1.0
            contrasts.append(((mean_removed - mean_all) / spread, name, mean_removed, mean_all))
    contrasts.sort(key=lambda c: -abs(c[0]))
    summary = [
        f"{name} is {'high' if z > 0 else 'low'} (mean {m:.2f} vs {a:.2f} over all states)"
        for z, name, m, a in contrasts[:3] if abs(z) >= 0.1
    ]
    n_removed = int(removed.sum())
    from ..check import check_columns

    broken = {v.line for v in check_columns(sugg, suggestion)}
    return {
        "definition": NEEDLESS_DEFINITION,
        "meet_invariants": int(n_removed - sum(1 for i in broken if removed[i])),
        "margins": {"J_minus_J_MIN": _spread(sugg.J[removed] - suggestion["J_MIN"]),
                    "H_MAX_minus_H": _spread(suggestion["H_MAX"] - sugg.H[removed])},
        "count": n_removed,
        "baseline_l2": int(base_l2.sum()),
        "n": len(states),
        "rate": n_removed / len(states),
        "by_reason": by_reason,
        "new_level": {"0": int(np.sum(removed & (sugg.level == 0))), "1": int(np.sum(removed & (sugg.level == 1)))},
        "fields": fields,
        "histograms": histograms,
        "summary": summary,
        "_mask": removed,
    }


NEEDLESS_DEFINITION = (
    "A baseline fail-safe is needless when the suggestion decides the same state without a fail-safe and "
    "that decision meets every invariant of the engine under the learned thresholds, which stay inside "
    "their safety bounds: its final action has J >= J_MIN, H <= H_MAX, C_MIN <= C <= C_MAX, J >= J_CRITICAL, "
    "H <= H_CRITICAL and a confidence of at least CONFIDENCE_ESCALATION_FORCE.")


def _spread(x: np.ndarray) -> dict[str, float] | dict[str, str]:
    """min, 10th percentile, median and max of a margin (how close decisions sit to a bound)."""
    if not x.size:
        return {"n": 0}
    q = np.quantile(x, [0.0, 0.1, 0.5, 1.0])
    return {"n": int(x.size), "min": float(q[0]), "p10": float(q[1]), "median": float(q[2]), "max": float(q[3])}


# --------------------------------------------------------------------------- result


def _scenario_figures(baseline: Config, suggestion: Config, weights: LossWeights) -> dict[str, Any]:
    out = {}
    for name, states in profile_suite().items():
        table = ScoreTable(states, baseline)
        sums = table.evaluate([baseline, suggestion])
        entry = {}
        for label, row in zip(("baseline", "suggestion"), sums):
            m = metrics_from_sums(row, weights)
            m["mean_H"] = float(row[K.S_H_FINAL] / row[K.S_N])
            entry[label] = m
        out[name] = entry
    return out


def _result(data, baseline, settings, split, space, chosen, sums, held_out, history, gate_report, status,
            note=None, racing=None) -> LearnResult:
    accepted = status == ACCEPTED
    w = settings.weights
    metrics = {part: {"baseline": metrics_from_sums(rows[0], w), "suggestion": metrics_from_sums(rows[1], w)}
               for part, rows in sums.items()}
    needless = needless_fail_safes(data.states, baseline, chosen)
    row = space.from_dict(chosen.learned())
    meta: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool_version": __version__,
        "engine_model": ENGINE_MODEL,
        "baseline": baseline.source,
        "baseline_config_id": baseline.config_id,
        "config_id": chosen.config_id,
        "seed": settings.seed,
        "strategy": settings.strategy,
        "strategy_options": dict(settings.strategy_options),
        "budget": settings.budget,
        "batch_size": settings.batch_size,
        "loss_weights": w.as_list(),
        "params_on_bound": space.on_bound(row),
        "baseline_params": baseline.learned(),
        "bounds": {k: list(v) for k, v in space.bounds.items()},
        "critical_floor": {"factor": settings.critical.factor, "margin": settings.critical.margin},
        "data": data.meta(),
        "split": split.meta(),
        "metrics": metrics,
        "scenarios": _scenario_figures(baseline, chosen, w),
        "needless": {k: v for k, v in needless.items() if not k.startswith("_")},
    }
    meta["status"] = status
    if racing is not None:
        meta["racing"] = racing
    if note is not None:
        meta["strategy_note"] = note
    meta["worse"] = worse_figures(metrics, meta["scenarios"])
    if gate_report is not None:
        meta["gate"] = gate_report.to_meta()
        certificate = _certificate_meta(gate_report, settings)
        if certificate is not None:
            meta["certificate"] = certificate
    doc: dict[str, Any] = {"extends": baseline.source}
    doc.update(chosen.learned())
    doc["meta"] = meta
    summary = {"accepted": accepted, "status": status, "metrics": metrics, "needless": meta["needless"]}
    return LearnResult(chosen, doc, history, gate_report, accepted, needless, summary, held_out, status,
                       note)


def _certificate_meta(gate_report, settings: LearnSettings) -> dict[str, Any] | None:
    """The certificate check's figure, its verdict and its promise in words, for [meta]."""
    try:
        check = gate_report.check("certificate")
    except KeyError:
        return None
    out = {**check.figure, "passed": check.passed, "bonferroni_finalists": MAX_GATE_TRIES,
           "family_delta": settings.delta}
    if check.passed:
        out["promise"] = promise(check.figure, settings.delta)
    return out


# The figures of a data set that learning may make worse (higher); each is compared per data set.
_WATCHED = ("L", "fail_safe_rate", "mean_cus", "clamp_distortion")


def worse_figures(metrics: dict[str, Any], scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure that is higher under the suggestion than under the baseline, on the
    training data, the held-out data and each scenario profile (mean H too, on those)."""
    out = []
    parts = [(part, m) for part, m in metrics.items()] + [(f"{name} profile", m) for name, m in scenarios.items()]
    for label, m in parts:
        names = _WATCHED + (("mean_H",) if "mean_H" in m["baseline"] else ())
        for name in names:
            before, after = m["baseline"][name], m["suggestion"][name]
            if after > before + 1e-12:
                out.append({"data": label, "figure": name, "baseline": before, "suggestion": after})
    return out

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
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config
from ..engine import ScoreTable
from ..io.stateset import StateSet
from ..suites import critical_set
from .bounds import check_delta
from .constraints import regression_failures
from .data import LearnData, data_from_scenario, data_from_states_file, data_from_traces_file, meta_field
from .needless import NEEDLESS_DEFINITION, needless_fail_safes
from .policy_optimizer import SearchSpace, make_strategy
from .result import ACCEPTED, NO_IMPROVEMENT, NOT_GATED, REJECTED, LearnResult, worse_figures
from .result import build_result as _result
from .settings import DEFAULT_BATCH, MAX_GATE_TRIES, LearnError, LearnSettings
from .split import Split, split_states
from .study import StudyLocation, StudyStore, make_fingerprint


def with_learned(baseline: Config, row: np.ndarray, space: SearchSpace) -> Config:
    return baseline.replace(**space.to_dict(row))


def _fingerprint(data: LearnData, baseline: Config, settings: LearnSettings, regression: StateSet | None) -> str:
    return make_fingerprint(
        data_sha256=data.sha256, baseline=baseline.config_id, strategy=settings.strategy,
        options=sorted(settings.strategy_options.items()), seed=settings.seed, budget=settings.budget,
        batch_size=settings.batch_size, weights=settings.weights.as_list(), split=settings.train_fraction,
        critical=[settings.critical.factor, settings.critical.margin], delta=settings.delta,
        regression=None if regression is None else hashlib.sha256(regression.values.tobytes()).hexdigest(),
        model=ENGINE_MODEL,
    )


def learn(
    data: LearnData,
    baseline: Config,
    settings: LearnSettings,
    *,
    regression: StateSet | None = None,
    study: str | StudyLocation | None = None,
    gate_fn: Callable[..., Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    existing_study: str = "resume",
    evaluator: Callable[..., Any] | None = None,
) -> LearnResult:
    """Search the seven learned parameters; return the best candidate the gate accepts.

    `study` keeps the finished batches: a path or URL, or a storage object such as
    study.JournalStorage (see StudyStore.open); `existing_study` says what to do with a
    study already there: "resume" it, start it over ("fresh") or "refuse".
    `evaluator(shards, baseline)` makes the evaluator of configs over shards of the
    training states (e.g. cluster.DaskShardEvaluator); None evaluates in this process."""
    if settings.budget < 1:
        raise LearnError(f"budget: must be >= 1, got {settings.budget}")
    if settings.batch_size < 1:
        raise LearnError(f"batch size: must be >= 1, got {settings.batch_size}")
    try:
        check_delta(settings.delta)
    except ValueError as exc:
        raise LearnError(str(exc)) from None
    split = split_states(data.states, settings.seed, settings.train_fraction)
    train, held_out = data.states.subset(split.train), data.states.subset(split.held_out)
    space = SearchSpace()
    strategy = make_strategy(settings.strategy_object or settings.strategy, space, seed=settings.seed,
                             budget=settings.budget,
                             **settings.strategy_options)
    train_table = ScoreTable(train, baseline)
    held_table = ScoreTable(held_out, baseline)
    crit_table = ScoreTable(critical_set(), baseline)
    reg_table = ScoreTable(regression, baseline) if regression is not None else None
    crit_base = crit_table.evaluate([baseline])[0]

    current = space.clamp(space.from_dict(baseline.learned()))
    store = StudyStore.open(study, _fingerprint(data, baseline, settings, regression), space=space,
                            existing=existing_study)
    try:
        done = store.completed_batches()
        X_hist = [b.X for b in done]
        y_hist = [b.y for b in done]
        evaluated = sum(len(b.y) for b in done)
        step = len(done)
        history: list[dict[str, Any]] = []
        best_so_far: tuple[float, np.ndarray] | None = None
        for b in done:  # rebuild the history lines of the finished steps
            best_so_far = _step_best(best_so_far, b.X, b.y)
            history.append(_history_line(b.step, best_so_far[1], baseline, space, train_table, held_table,
                                         settings.weights))
        if progress:
            progress(evaluated, settings.budget)
        while evaluated < settings.budget:
            n = min(settings.batch_size, settings.budget - evaluated)
            hx = np.concatenate(X_hist) if X_hist else np.empty((0, space.dim))
            hy = np.concatenate(y_hist) if y_hist else np.empty(0)
            if step == 0:
                X = np.vstack([current, strategy.propose(step, n - 1, hx, hy, current)]) if n > 1 else current[None]
            else:
                X = strategy.propose(step, n, hx, hy, current)
            if len(X) == 0:  # the strategy has nothing left to try (a finished grid)
                break
            X = space.clamp(X)
            configs = [with_learned(baseline, row, space) for row in X]
            y, extras = _evaluate_batch(configs, train_table, crit_table, crit_base, reg_table, regression,
                                        settings)
            store.record_batch(step, X, y, extras)
            X_hist.append(X)
            y_hist.append(y)
            best_so_far = _step_best(best_so_far, X, y)
            history.append(_history_line(step, best_so_far[1], baseline, space, train_table, held_table,
                                         settings.weights))
            evaluated += len(y)
            step += 1
            if progress:
                progress(evaluated, settings.budget)
    finally:
        store.close()

    X_all = np.concatenate(X_hist)
    y_all = np.concatenate(y_hist)
    base_L = float(train_table.evaluate([baseline]).loss(settings.weights)[0])
    order = np.argsort(y_all, kind="stable")
    # Only a candidate that beats the baseline's own training loss is worth suggesting.
    better = [int(i) for i in order if y_all[i] < base_L - 1e-12 * max(1.0, abs(base_L))]
    tried = []
    gate_report = None
    chosen = None
    status = NO_IMPROVEMENT
    for idx in better[:MAX_GATE_TRIES]:
        candidate = with_learned(baseline, X_all[idx], space)
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
    note = strategy.note if hasattr(strategy, "note") else None
    return _result(data, baseline, settings, split, space, chosen, train_table, held_table, history,
                   gate_report, status, note)


def _evaluate_batch(configs, train_table, crit_table, crit_base, reg_table, regression, settings):
    losses = train_table.evaluate(configs).loss(settings.weights)
    crit_sums = crit_table.evaluate(configs)
    # The floor on confidence bounds, as the gate's certificate judges it (not on point estimates).
    ok = settings.critical.certified(crit_sums, crit_base, settings.gate_delta)
    rates, mean_h = crit_sums.fail_safe_rate, crit_sums.mean_H
    extras = []
    for j, cfg in enumerate(configs):
        reg_fail = 0
        if ok[j] and regression is not None:
            reg_fail = len(regression_failures(regression, cfg, reg_table))
        feasible = bool(ok[j]) and reg_fail == 0
        extras.append({"train_L": float(losses[j]), "critical_fail_safe_rate": float(rates[j]),
                       "critical_mean_H": float(mean_h[j]), "regression_failures": reg_fail,
                       "feasible": feasible})
    y = np.array([e["train_L"] if e["feasible"] else np.inf for e in extras])
    return y, extras


def _step_best(best, X, y):
    j = int(np.argmin(y))
    if best is None or y[j] < best[0]:
        return float(y[j]), X[j]
    return best


def _history_line(step, row, baseline, space, train_table, held_table, weights) -> dict[str, Any]:
    cfg = with_learned(baseline, row, space)
    train = train_table.evaluate([cfg])[0].figures(weights)
    held = held_table.evaluate([cfg])[0].figures(weights)
    line: dict[str, Any] = {"step": step}
    line.update({k: train[k] for k in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion")})
    line.update(space.to_dict(row))
    line.update({f"heldout_{k}": held[k] for k in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion")})
    return line


# The names of the pipeline's other steps, as this module has always offered them.
__all__ = [
    "ACCEPTED", "DEFAULT_BATCH", "MAX_GATE_TRIES", "NEEDLESS_DEFINITION", "NOT_GATED", "NO_IMPROVEMENT", "REJECTED",
    "LearnData", "LearnError", "LearnResult", "LearnSettings", "Split", "data_from_scenario", "data_from_states_file",
    "data_from_traces_file", "learn", "meta_field", "needless_fail_safes", "split_states", "with_learned",
    "worse_figures",
]

"""The Phase 6.0 offline loop: data -> split -> search -> gate -> suggestion.

    states / scenario / replayable traces
        -> seeded train / held-out split (by stream, or in time with < 5 streams)
        -> shards of whole streams (shards.py); candidates of the strategy (policy_optimizer)
           raced over nested shards (racing.py, race.py: all on a small rung, the better
           ones promoted, the finalists on all the training data), the best refined
           locally (refine.py), under the search-time constraints (critical floor,
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
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config
from ..engine import DIRECT_MAX_CONFIGS, EngineSums
from ..engine.parts import run_parts
from ..io.stateset import StateSet
from . import refine
from .bounds import check_delta
from .data import LearnData, data_from_scenario, data_from_states_file, data_from_traces_file, meta_field
from .needless import NEEDLESS_DEFINITION, TrainingWatch, needless_fail_safes
from .policy_optimizer import SearchSpace, make_strategy
from .race import Race
from .racing import ETA, REFINE_ITERATIONS, REFINE_RUNG, REFINE_SHARE, VERSION, Schedule, plan, rung_shards
from .result import ACCEPTED, NO_IMPROVEMENT, NOT_GATED, REJECTED, LearnResult, worse_figures
from .result import build_result as _result
from .settings import DEFAULT_BATCH, MAX_GATE_TRIES, MIN_MEMORY, LearnError, LearnSettings
from .shards import EvaluatorFactory, InProcessEvaluator, make_shards, resident_bytes
from .split import Split, split_states
from .study import StudyLocation, StudyStore, make_fingerprint

# The held-out evaluator scores the history's bests (and the baseline and the suggestion
# when no gate judged them: the gate decides the held-out data itself); it gets this
# fraction of the budget and mostly scores it afresh.
HELD_OUT_SHARE = 16
# The needless tallies of the finalists (TrainingWatch) get this fraction of the budget.
WATCH_SHARE = 8


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
        racing=[VERSION, settings.rung0, ETA, settings.shard_decisions, REFINE_ITERATIONS, REFINE_SHARE, REFINE_RUNG,
                refine.INITIAL_STEP, refine.GROW],
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
    evaluator: EvaluatorFactory | None = None,
) -> LearnResult:
    """Search the seven learned parameters; return the best candidate the gate accepts.

    The search races candidates over nested shards of the training data (racing.py): all
    on rung 0, the better ones on larger rungs, the finalists on all of it, then a local
    refinement of the best. `evaluator(shards, baseline)` makes the evaluator of a list of
    shards (default: in this process, within `settings.memory` bytes; or e.g.
    cluster.DaskShardEvaluator); every evaluator gives the same sums.

    `study` keeps the finished batches: a path or URL, or a storage object such as
    study.JournalStorage (see StudyStore.open); `existing_study` says what to do with a
    study already there: "resume" it, start it over ("fresh") or "refuse"."""
    if settings.budget < 1:
        raise LearnError(f"budget: must be >= 1, got {settings.budget}")
    if settings.batch_size < 1:
        raise LearnError(f"batch size: must be >= 1, got {settings.batch_size}")
    if settings.memory < MIN_MEMORY:
        raise LearnError(f"memory: must be at least {MIN_MEMORY >> 20} MiB, got {settings.memory} bytes")
    if settings.rung0 < 1:
        raise LearnError(f"rung 0: must be >= 1 decision, got {settings.rung0}")
    try:
        check_delta(settings.delta)
    except ValueError as exc:
        raise LearnError(str(exc)) from None
    split = split_states(data.states, settings.seed, settings.train_fraction)
    # Without its t and ids when the data does not keep them: the gate does not read them,
    # and the report's traces get them for the few rows they show (LearnResult.held_out_keys).
    held_out = data.subset(split.held_out, keys=False)
    space = SearchSpace()
    strategy = make_strategy(settings.strategy_object or settings.strategy, space, seed=settings.seed,
                             budget=settings.budget, **settings.strategy_options)
    train_shards = make_shards(data.states, settings.seed, settings.shard_decisions, split.train)
    held_shards = make_shards(data.states, settings.seed, settings.shard_decisions, split.held_out)
    schedule = plan(train_shards.sizes, settings.budget, space.dim, rung0=settings.rung0)
    # What the data and the program hold already is not there to spend.
    room = max(MIN_MEMORY, settings.memory - resident_bytes())
    if evaluator is None:  # the training shards get most of the budget; held-out data is streamed
        # Tables are worth keeping where candidates are evaluated batch after batch: up to the
        # refinement rung. Above it each rung is one batch, scored shard by shard.
        train_ev = InProcessEvaluator(train_shards.shards, baseline, room * 3 // 4,
                                      keep_first=schedule.rungs[schedule.refine_rung].shards)
        held_ev = InProcessEvaluator(held_shards.shards, baseline, room // HELD_OUT_SHARE)
    else:
        train_ev = evaluator(train_shards.shards, baseline, keep_first=schedule.rungs[schedule.refine_rung].shards)
        held_ev = evaluator(held_shards.shards, baseline, keep_first=0)
    watch = _watch(data, split, settings, schedule, train_shards.positions, train_ev, room // WATCH_SHARE)
    try:
        everything = range(len(train_shards))
        base_sums = train_ev.evaluate([baseline], everything) if watch is None else \
            train_ev.evaluate([baseline], everything, reading=watch.baseline())
        base_L = float(base_sums.loss(settings.weights)[0])
        race = Race(schedule, train_ev, baseline, space, settings, regression,
                    watch=None if watch is None else watch.finalists)
        store = StudyStore.open(study, _fingerprint(data, baseline, settings, regression), space=space,
                                existing=existing_study)
        try:
            race.run(strategy, store, progress)
        finally:
            store.close()
        # Only a candidate that beats the baseline's own training loss is worth suggesting.
        better = [row for row, y in race.ranked() if y < base_L - 1e-12 * max(1.0, abs(base_L))]
        better = better[:MAX_GATE_TRIES]
        candidates = [with_learned(baseline, row, space) for row in better]
        # Their sums on all the training data, from the top rung (stored with its batches).
        train_sums = EngineSums.concat([race.top_sums[row.tobytes()] for row in better])
        # The training tables are let go: they and the gate's runs over the held-out data are
        # never held at once.
        train_ev.close()
        tried = []
        gate_report = None
        chosen = None
        status = NO_IMPROVEMENT
        for candidate in candidates:
            if gate_fn is None:
                chosen, status = candidate, NOT_GATED
                break
            shown = {}
            if watch is not None and _takes(gate_fn, "observe"):  # the gate decides the held-out data anyway
                shown["observe"] = watch.held_out(candidate, split.held_out)
            gate_report = gate_fn(candidate, baseline, held_out=held_out, regression=regression,
                                  critical=settings.critical, weights=settings.weights, delta=settings.gate_delta,
                                  **shown)
            tried.append(candidate)
            if gate_report.accepted:
                chosen, status = candidate, ACCEPTED
                break
            status = REJECTED
        if chosen is None:
            # Nothing passed (or nothing beat the baseline): report on the best tried, else the
            # baseline itself; never suggest it as accepted.
            chosen = tried[0] if tried else baseline
        sample = rung_shards(held_shards.sizes, ETA, settings.rung0 * ETA)[0] if len(held_shards) else 0
        history = race.history_lines(held_ev, range(sample), int(held_shards.sizes[:sample].sum()))
        chosen_sums = next((train_sums[i] for i, c in enumerate(candidates) if c is chosen), base_sums)
        sums = {"train": EngineSums.concat([base_sums, chosen_sums]),
                "heldout": _heldout_sums(gate_report, chosen, baseline, held_ev, len(held_shards))}
    finally:
        train_ev.close()
        held_ev.close()
    note = strategy.note if hasattr(strategy, "note") else None
    racing_meta = {**schedule.meta(), "shards": len(train_shards), "shard_method": train_shards.method,
                   "evaluated": race.evaluated_per_rung()}
    needless = _needless(data, baseline, chosen, watch, held_out, split)
    return _result(data, baseline, settings, split, space, chosen, sums, held_out, history,
                   gate_report, status, note, racing_meta, needless)


def _watch(data: LearnData, split: Split, settings: LearnSettings, schedule: Schedule, positions: list[np.ndarray],
           train_ev: Any, budget: int) -> TrainingWatch | None:
    """The needless fail-safes are tallied from the training decisions the search makes
    anyway (docs/learning.md §4) when the split keeps whole streams apart (so that they
    are those of one pass over all the states), the evaluator can read its decisions, the
    top rung's batches take the direct path, and the finalists' tallies fit the budget."""
    finalists = schedule.rungs[schedule.top].candidates
    if split.method != "by_stream" or not _takes(train_ev.evaluate, "reading") \
            or min(finalists, settings.batch_size) > DIRECT_MAX_CONFIGS \
            or TrainingWatch.bytes_needed(len(data.states), split.train.size, finalists) > budget:
        return None
    return TrainingWatch(len(data.states), positions, budget)


def _needless(data: LearnData, baseline: Config, chosen: Config, watch: TrainingWatch | None, held_out: StateSet,
              split: Split) -> dict[str, Any]:
    """The needless fail-safes of the chosen config over all the states: from its tally on
    the training shards, when it was a watched finalist, and on the held-out states, as the
    gate decided them or else decided here; without a tally, from a pass over all of them."""
    tally = None if watch is None else watch.tally(chosen)
    shown = 0 if tally is None else int(np.count_nonzero(tally.seen[split.held_out]))
    if tally is None or 0 < shown < split.held_out.size:
        return needless_fail_safes(data.states, baseline, chosen)
    if not shown:  # the gate did not show them (or did not run)
        for pos, (base, sugg) in run_parts(held_out, [baseline, chosen]):
            tally.add(split.held_out[pos], base.level, base.reason, sugg)
    return tally.figures(data.states)


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """True when the function names a parameter `name`: the gate function is shown the
    held-out decisions' observer when it takes `observe` (run_gate does), an evaluator
    is asked to read its decisions when its evaluate takes `reading`."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _heldout_sums(gate_report, chosen: Config, baseline: Config, held_ev, n_shards: int) -> EngineSums:
    """The sums of [baseline, chosen] on the held-out data: those the gate judged the chosen
    config by, when it did, else evaluated here."""
    decided = getattr(gate_report, "heldout_sums", None)
    if decided is not None and gate_report.config_id == chosen.config_id \
            and gate_report.baseline_id == baseline.config_id:
        return EngineSums.concat([decided[1], decided[0]])
    return held_ev.evaluate([baseline, chosen], range(n_shards))


# The names of the pipeline's other steps, as this module has always offered them.
__all__ = [
    "ACCEPTED", "DEFAULT_BATCH", "MAX_GATE_TRIES", "NEEDLESS_DEFINITION", "NOT_GATED", "NO_IMPROVEMENT", "REJECTED",
    "LearnData", "LearnError", "LearnResult", "LearnSettings", "Split", "data_from_scenario", "data_from_states_file",
    "data_from_traces_file", "learn", "meta_field", "needless_fail_safes", "split_states", "with_learned",
    "worse_figures",
]

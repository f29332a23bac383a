"""The search's batches, raced over the rungs of the schedule (racing.py).

The strategy's candidates are evaluated on rung 0, the better ones promoted rung by rung,
the best on the refinement rung refined there (refine.py), and the finalists evaluated on
all the training data.
The order of the batches is fixed by the schedule and their results, so a run resumed from
its study evaluates exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..engine import DIRECT_MAX_CONFIGS, EngineSums, ScoreTable
from ..suites import critical_set
from . import refine
from .constraints import regression_failures
from .study import StudyError


class Race:
    """The search's batches in their one order: the strategy's candidates on rung 0, then
    rung by rung the promotions, with the refinement after those of the refinement rung.
    Each batch is a history step; a batch the study already holds is taken from it, not
    evaluated again."""

    def __init__(self, schedule, ev, baseline, space, settings, regression, watch=None):
        """`watch(configs)`: what to read off the finalists' decisions on the top rung
        (shards.Reading, given to the evaluator as `reading`), or None; asked for promoted
        batches of at most DIRECT_MAX_CONFIGS configs only (the path that can show them)."""
        self.schedule, self.ev, self.baseline, self.space = schedule, ev, baseline, space
        self.watch = watch
        self.settings, self.regression = settings, regression
        self.crit_table = ScoreTable(critical_set(), baseline)
        self.crit_base = self.crit_table.evaluate(settings.critical.references(baseline))
        self.reg_table = ScoreTable(regression, baseline) if regression is not None else None
        self.batches: list[tuple[int, str, int, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []
        self.feasibility: dict[bytes, dict[str, Any]] = {}
        self.top_sums: dict[bytes, EngineSums] = {}  # each candidate's sums on all the training data

    # -- evaluation
    def _rung_sums(self, configs, rung, phase):
        shards = range(self.schedule.rungs[rung].shards)
        if phase == "promote" and rung == self.schedule.top and self.watch is not None \
                and len(configs) <= DIRECT_MAX_CONFIGS:
            reading = self.watch(configs)
            if reading is not None:
                return self.ev.evaluate(configs, shards, reading=reading)
        return self.ev.evaluate(configs, shards)

    def _evaluate(self, X, rung, phase, known=False):
        configs = [self.baseline.replace(**self.space.to_dict(row)) for row in X]
        sums = self._rung_sums(configs, rung, phase)
        w = self.settings.weights
        losses = sums.loss(w)
        if known:  # feasibility does not depend on the data: judged once per candidate
            checks = [self.feasibility[row.tobytes()] for row in X]
        else:
            checks = _feasibility(configs, self.crit_table, self.crit_base, self.reg_table, self.regression,
                                  self.settings)
        extras = []
        top = rung == self.schedule.top
        for j, row in enumerate(X):
            m = sums[j].figures(w)
            extras.append({**checks[j], "train_L": float(losses[j]), "rung": rung, "phase": phase,
                           **{k: m[k] for k in ("fail_safe_rate", "mean_cus", "clamp_distortion")}})
            if top:  # all the training data: the sums the suggestion reports, kept with the batch
                extras[-1]["sums"] = sums[j].to_array().tolist()
            self.feasibility.setdefault(row.tobytes(), checks[j])
        y = np.array([e["train_L"] if e["feasible"] else np.inf for e in extras])
        return y, extras

    # -- the batches
    def run(self, strategy, store, progress):
        done = {b.step: b for b in store.completed_batches()}
        total = self.schedule.evaluations
        count = [0]

        def step(X_of, rung, phase, known=False):
            number = len(self.batches)
            b = done.get(number)
            if b is not None:
                X, y, extras = b.X, b.y, [dict(e) for e in b.extras]
                for row, e in zip(X, extras, strict=True):
                    self.feasibility.setdefault(row.tobytes(), {k: e[k] for k in _CHECK_KEYS})
            else:
                X = X_of()
                if len(X) == 0:
                    return 0
                X = self.space.clamp(X)
                y, extras = self._evaluate(X, rung, phase, known)
                store.record_batch(number, X, y, extras)
            if rung == self.schedule.top:
                for row, e in zip(X, extras, strict=True):
                    self.top_sums.setdefault(row.tobytes(), _stored_sums(e, number))
            self.batches.append((number, phase, rung, X, y, extras))
            count[0] += len(y)
            if progress:
                progress(count[0], total)
            return len(y)

        if progress:
            progress(0, total)
        settings, space = self.settings, self.space
        current = space.clamp(space.from_dict(self.baseline.learned()))
        n0 = self.schedule.candidates
        proposed = 0
        while proposed < n0:  # rung 0: every candidate of the strategy
            n = min(settings.batch_size, n0 - proposed)
            hx, hy = self._history(0, "search")

            def propose(n=n, hx=hx, hy=hy):
                if not self.batches:
                    rest = strategy.propose(0, n - 1, hx, hy, current) if n > 1 else np.empty((0, space.dim))
                    return np.vstack([current, rest])
                return strategy.propose(len(self.batches), n, hx, hy, current)

            got = step(propose, 0, "search")
            if got == 0:  # the strategy has nothing left to try (a finished grid)
                break
            proposed += got
        for rung in range(len(self.schedule.rungs)):
            if rung:  # the better ones, promoted rung by rung
                pool = self._ranked(rung - 1)[: self.schedule.rungs[rung].candidates]
                for first in range(0, len(pool), settings.batch_size):
                    rows = np.array([row for row, _ in pool[first:first + settings.batch_size]])
                    step(lambda rows=rows: rows, rung, "promote", known=True)
            ranked = self._ranked(rung)
            if rung == self.schedule.refine_rung and ranked:  # the local refinement of the best feasible point
                start, start_loss = ranked[0]
                tells: list[tuple[np.ndarray, np.ndarray]] = []
                for _ in range(self.schedule.refine_batches):
                    step(lambda start=start, start_loss=start_loss, tells=tells:
                         refine.propose(space, settings.seed, start, start_loss, tells), rung, "refine")
                    tells.append((self.batches[-1][3], self.batches[-1][4]))

    def _history(self, rung, phase):
        rows = [(X, y) for _, p, r, X, y, _ in self.batches if r == rung and p == phase]
        if not rows:
            return np.empty((0, self.space.dim)), np.empty(0)
        return np.concatenate([X for X, _ in rows]), np.concatenate([y for _, y in rows])

    def _ranked(self, rung):
        """(row, loss) of the feasible candidates evaluated on a rung, best first (first
        evaluated first on ties), each candidate once."""
        seen, out = set(), []
        for _, _, r, X, y, _ in self.batches:
            if r != rung:
                continue
            for row, v in zip(X, y, strict=True):
                key = row.tobytes()
                if np.isfinite(v) and key not in seen:
                    seen.add(key)
                    out.append((row, float(v)))
        order = sorted(range(len(out)), key=lambda i: out[i][1])
        return [out[i] for i in order]

    def ranked(self):
        """The candidates evaluated on all the training data, best first."""
        return self._ranked(self.schedule.top)

    def evaluated_per_rung(self):
        return [sum(len(y) for _, _, r, _, y, _ in self.batches if r == k) for k in range(len(self.schedule.rungs))]

    def history_lines(self, held_ev, held_shards, held_decisions):
        """One line per batch: the best so far on that batch's rung, with its figures there,
        and its figures on the held-out shards given, of `held_decisions` decisions (each
        distinct best evaluated once)."""
        best: dict[int, tuple[float, np.ndarray, dict[str, Any]]] = {}
        picks = []
        for number, phase, rung, X, y, extras in self.batches:
            j = int(np.argmin(y))
            if rung not in best or y[j] < best[rung][0]:
                best[rung] = (float(y[j]), X[j], extras[j])
            picks.append((number, phase, rung, best[rung]))
        distinct: dict[bytes, int] = {}
        for *_, (_, row, _) in picks:
            distinct.setdefault(row.tobytes(), len(distinct))
        rows = [np.frombuffer(k) for k in distinct]
        configs = [self.baseline.replace(**self.space.to_dict(row)) for row in rows]
        held = held_ev.evaluate(configs, held_shards) if configs else EngineSums.zeros(0)
        lines = []
        for number, phase, rung, (_, row, extras) in picks:
            h = held[distinct[row.tobytes()]].figures(self.settings.weights)
            line: dict[str, Any] = {"step": number, "phase": phase, "rung": rung,
                                    "decisions": self.schedule.rungs[rung].decisions, "L": extras["train_L"]}
            line.update({k: extras[k] for k in ("fail_safe_rate", "mean_cus", "clamp_distortion")})
            line.update(self.space.to_dict(row))
            line.update({f"heldout_{k}": h[k] for k in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion")})
            line["heldout_decisions"] = held_decisions
            lines.append(line)
        return lines


def _stored_sums(extras: dict[str, Any], number: int) -> EngineSums:
    """The sums on all the training data a study batch keeps for one candidate."""
    try:
        sums = EngineSums(np.array(extras["sums"], dtype=np.float64))
        if sums.one and np.isfinite(sums.to_array()).all():
            return sums
    except (KeyError, TypeError, ValueError):
        pass
    raise StudyError(f"the study's batch {number} on all the training data does not hold its sums; start the "
                     "study over with --fresh")


_CHECK_KEYS = ("critical_fail_safe_rate", "critical_mean_H", "regression_failures", "feasible")


def _feasibility(configs, crit_table, crit_base, reg_table, regression, settings):
    """The search-time constraints of each config: they use no training data."""
    crit_sums = crit_table.evaluate(configs)
    # The floor on confidence bounds, as the gate's certificate judges it (not on point estimates).
    ok = settings.critical.certified(crit_sums, crit_base, settings.gate_delta)
    rates, mean_h = crit_sums.fail_safe_rate, crit_sums.mean_H
    out = []
    for j, cfg in enumerate(configs):
        reg_fail = 0
        if ok[j] and regression is not None:
            reg_fail = len(regression_failures(regression, cfg, reg_table))
        out.append({"critical_fail_safe_rate": float(rates[j]), "critical_mean_H": float(mean_h[j]),
                    "regression_failures": reg_fail, "feasible": bool(ok[j]) and reg_fail == 0})
    return out

"""Where a learning run keeps its finished batches, so that it can stop and resume.

The store is an optuna study: a SQLite file by default, any optuna RDB storage URL when
work is shared, in memory when no path is given. Each evaluated candidate is one trial
(its learned parameters, its loss, +inf when infeasible, and its extra metrics as the user
attribute "extras"). A batch counts as recorded only once its commit marker, the list of
its trial numbers, is written after all of its trials: a run stopped mid-batch leaves
trials that no marker names, and they are ignored.

The study also carries the run's fingerprint (data digest, seed, strategy, options,
weights, baseline) and the parameter bounds; reopening it with either different refuses
to resume rather than mixing two runs' histories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ami_engine.learning.policy_optimizer import SearchSpace, quiet_optuna

DEFAULT_STUDY_NAME = "ami_engine_learning"
_BATCH_MARKER = "ami_engine:batch:"
_FINGERPRINT = "fingerprint"
_BOUNDS = "bounds"


class StudyMismatchError(ValueError):
    """The stored study belongs to a different run setup than the one resuming it."""


@dataclass(frozen=True)
class Batch:
    """One recorded history step: its candidates, their losses and extra metrics."""

    step: int
    X: np.ndarray  # (n, dim), canonical parameter order
    y: np.ndarray  # (n,), +inf for infeasible candidates
    extras: tuple[dict[str, Any], ...]


def make_fingerprint(**parts: Any) -> str:
    """A canonical text for the parts that define a run (JSON, keys sorted)."""
    return json.dumps(parts, sort_keys=True, separators=(",", ":"))


def _fingerprint_difference(stored: str, given: str) -> str:
    try:
        a, b = json.loads(stored), json.loads(given)
    except ValueError:
        a = b = None
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "; ".join(f"{k}: stored {a.get(k)!r}, now {b.get(k)!r}" for k in keys)
    return f"stored {stored!r}, now {given!r}"


def _open_storage(url_or_path: str | os.PathLike[str] | None) -> Any:
    import optuna

    if url_or_path is None:
        return optuna.storages.InMemoryStorage()
    text = os.fspath(url_or_path)
    if "://" not in text:
        path = Path(text).resolve()
        if not path.parent.is_dir():
            raise FileNotFoundError(f"study: folder {str(path.parent)!r} does not exist")
        text = f"sqlite:///{path}"
    return optuna.storages.RDBStorage(text)


class StudyStore:
    """The finished batches of one run; open it with `StudyStore.open`."""

    def __init__(self, storage: Any, study_id: int, space: SearchSpace, fingerprint: str) -> None:
        self._storage = storage
        self._study_id = study_id
        self.space = space
        self.fingerprint = fingerprint

    @classmethod
    def open(
        cls,
        url_or_path: str | os.PathLike[str] | None,
        fingerprint: str,
        *,
        space: SearchSpace | None = None,
        study_name: str = DEFAULT_STUDY_NAME,
    ) -> StudyStore:
        """Open (or create) the study; raise StudyMismatchError when it was made for another run.

        `url_or_path` is a file path (SQLite), an optuna storage URL, or None for memory.
        """
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint: expected a non-empty string, got {fingerprint!r}")
        space = SearchSpace() if space is None else space
        bounds = {k: list(v) for k, v in space.bounds.items()}
        with quiet_optuna() as optuna:
            storage = _open_storage(url_or_path)
            try:
                study_id = storage.get_study_id_from_name(study_name)
            except KeyError:
                study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name)
                storage.set_study_user_attr(study_id, _BOUNDS, bounds)
                storage.set_study_user_attr(study_id, _FINGERPRINT, fingerprint)
                return cls(storage, study_id, space, fingerprint)

        store = cls(storage, study_id, space, fingerprint)
        attrs = storage.get_study_user_attrs(study_id)
        where = f"study {study_name!r} in {url_or_path!s}"
        problem = None
        if _FINGERPRINT not in attrs:
            problem = f"{where} was not written by a learning run (it has no fingerprint)"
        elif attrs[_FINGERPRINT] != fingerprint:
            diff = _fingerprint_difference(attrs[_FINGERPRINT], fingerprint)
            problem = f"{where} belongs to a different run setup, refusing to resume: {diff}"
        elif attrs.get(_BOUNDS) != bounds:
            problem = (
                f"{where} was searched within other bounds, refusing to resume: "
                f"stored {attrs.get(_BOUNDS)!r}, now {bounds!r}"
            )
        if problem is not None:
            store.close()
            raise StudyMismatchError(problem)
        return store

    def _markers(self) -> dict[int, list[int]]:
        attrs = self._storage.get_study_system_attrs(self._study_id)
        return {int(k[len(_BATCH_MARKER) :]): v for k, v in attrs.items() if k.startswith(_BATCH_MARKER)}

    def completed_batches(self) -> list[Batch]:
        """Every fully recorded batch, by step."""
        markers = self._markers()
        if not markers:
            return []
        by_number = {t.number: t for t in self._storage.get_all_trials(self._study_id, deepcopy=False)}
        batches = []
        for step in sorted(markers):
            trials = [by_number[i] for i in markers[step]]
            X = np.array([self.space.from_dict(t.params) for t in trials]).reshape(len(trials), self.space.dim)
            y = np.array([t.value for t in trials], dtype=float)
            extras = tuple(dict(t.user_attrs.get("extras", {})) for t in trials)
            batches.append(Batch(step, X, y, extras))
        return batches

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """All recorded candidates and losses in evaluation order, as a strategy takes them."""
        batches = self.completed_batches()
        if not batches:
            return np.empty((0, self.space.dim)), np.empty(0)
        return np.concatenate([b.X for b in batches]), np.concatenate([b.y for b in batches])

    def record_batch(
        self,
        step: int,
        X: Any,
        y: Any,
        extras: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Store one evaluated batch; it counts only once all of it is written."""
        import optuna

        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step: expected an integer >= 0, got {step!r}")
        step = int(step)
        if step in self._markers():
            raise ValueError(f"step: batch {step} is already recorded")
        X = np.asarray(X, dtype=float)
        if X.size == 0:
            X = X.reshape(0, self.space.dim)
        if X.ndim != 2 or X.shape[1] != self.space.dim:
            raise ValueError(f"X: expected shape (n, {self.space.dim}), got {X.shape}")
        outside = ~((X >= self.space.lower) & (X <= self.space.upper))
        if outside.any():
            i, j = map(int, np.argwhere(outside)[0])
            raise ValueError(
                f"X: row {i} has {self.space.names[j]}={float(X[i, j])!r} outside "
                f"[{self.space.lower[j]}, {self.space.upper[j]}]; candidates are clamped before evaluation"
            )
        y = np.asarray(y, dtype=float)
        if y.shape != (len(X),):
            raise ValueError(f"y: expected shape ({len(X)},) to match X, got {y.shape}")
        if np.isnan(y).any() or np.isneginf(y).any():
            raise ValueError("y: losses must be numbers or +inf (infeasible), not NaN or -inf")
        if extras is None:
            extras = [{}] * len(X)
        if len(extras) != len(X):
            raise ValueError(f"extras: expected {len(X)} mappings, one per candidate, got {len(extras)}")
        extras = [dict(e) for e in extras]
        for i, e in enumerate(extras):
            try:
                json.dumps(e)
            except (TypeError, ValueError) as err:
                raise ValueError(f"extras: candidate {i} is not JSON-serialisable: {err}") from None

        dists = self.space.optuna_distributions()
        numbers = []
        for row, loss, extra in zip(X, y, extras, strict=True):
            trial = optuna.trial.create_trial(
                params=self.space.to_dict(row),
                distributions=dists,
                value=float(loss),
                user_attrs={"step": step, "extras": extra},
            )
            trial_id = self._storage.create_new_trial(self._study_id, template_trial=trial)
            numbers.append(self._storage.get_trial_number_from_id(trial_id))
        # The marker is the commit: written last, in one statement.
        self._storage.set_study_system_attr(self._study_id, f"{_BATCH_MARKER}{step:09d}", numbers)

    def close(self) -> None:
        """Release the database connection (a no-op in memory)."""
        engine = getattr(self._storage, "engine", None)
        if engine is not None:
            self._storage.remove_session()
            engine.dispose()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Where a learning run keeps its finished batches, so that it can stop and resume.

The store is an optuna study: a journal file (optuna's journal storage) for a path, a
PostgreSQL database for a `postgresql://` URL, so that a run stopped on one host resumes
on another, and in memory when no location is given (`sqlite:///` URLs are read too).
Each evaluated candidate is one trial (its learned parameters, its loss, +inf when
infeasible, and its extra metrics as the user attribute "extras"). A batch counts as
recorded only once its commit marker, the list of its trial numbers, is written after all
of its trials: a run stopped mid-batch leaves trials that no marker names, and they are
ignored.

A run holds a lock on its study while it works on it (an exclusive `flock` on the study
file, a session-level advisory lock in PostgreSQL), so two runs never write one study.
Only a study this tool created is ever reopened, started over or deleted: a file that
holds anything else is refused, never touched.

The study also carries the run's fingerprint (data digest, seed, strategy, options,
weights, baseline) and the parameter bounds; reopening it with either different refuses
to resume rather than mixing two runs' histories.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ami_engine.errors import UsageError
from ami_engine.learning.policy_optimizer import SearchSpace, quiet_optuna

DEFAULT_STUDY_NAME = "ami_engine_learning"
_BATCH_MARKER = "ami_engine:batch:"
_FINGERPRINT = "fingerprint"
_BOUNDS = "bounds"


_JOURNAL_OP = b'"op_code"'
_SQLITE_MAGIC = b"SQLite format 3\x00"
_POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgres")
REFUSE, RESUME, FRESH = "refuse", "resume", "fresh"


class StudyError(UsageError):
    """The study location cannot be used as asked (bad input or usage: exit code 2)."""


class StudyMismatchError(StudyError):
    """The stored study belongs to a different run setup than the one resuming it."""


class StudyExistsError(StudyError):
    """A study already exists where a new run would start one."""

    def __init__(self, location: StudyLocation, finished: int) -> None:
        self.finished = finished
        super().__init__(f"{finished} finished evaluations in {location}; --resume to continue, "
                         "--fresh to start over")


class StudyBusyError(StudyError):
    """Another run holds the study's lock."""


@dataclass(frozen=True)
class StudyLocation:
    """Where a study is kept: `kind` is "journal", "postgresql", "sqlite" or "memory".

    Build one with study_location(path or URL) or with one of the storage classes below;
    each opens its own optuna storage (`optuna_storage`)."""

    text: str
    kind: str
    path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        if self.kind == "postgresql" and self.url is not None:
            return _hide_password(self.text)
        return self.text

    @property
    def is_file(self) -> bool:
        return self.path is not None

    def optuna_storage(self) -> Any:
        """The optuna storage that holds the study (opened; released with _release)."""
        raise NotImplementedError(f"{type(self).__name__} opens no optuna storage")

    def _check_folder(self) -> None:
        if self.path is not None and not self.path.parent.is_dir():
            raise StudyError(f"study {self}: folder {str(self.path.parent)!r} does not exist")

    def _database(self) -> Any:
        import optuna

        self._check_folder()
        try:
            return optuna.storages.RDBStorage(self.url)
        except ImportError as exc:
            raise StudyError(f"study {self}: {exc}; install the cluster extra: pip install "
                             "'ami-engine[cluster]'") from None
        except Exception as exc:  # connection and driver errors of the database
            raise StudyError(f"study {self}: cannot open the database: {_first_line(exc)}") from None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported as it was given
        return url


class JournalStorage(StudyLocation):
    """A study in an optuna journal file (the default: one file, safe to copy or move)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        super().__init__(text, "journal", path=Path(text).resolve())

    def optuna_storage(self) -> Any:
        from optuna.storages.journal import JournalFileBackend
        from optuna.storages.journal import JournalStorage as OptunaJournalStorage

        self._check_folder()
        return OptunaJournalStorage(JournalFileBackend(str(self.path)))


class SqliteStorage(StudyLocation):
    """A study in an SQLite file, given as a path or as a `sqlite:///PATH` URL."""

    def __init__(self, path_or_url: str | os.PathLike[str]) -> None:
        text = os.fspath(path_or_url)
        if "://" in text:
            rest = text.split("://", 1)[1]
            if not rest.startswith("/") or rest == "/":
                raise StudyError(f"study {text!r}: a sqlite URL names a file, as sqlite:///PATH")
            path = rest[1:]
        else:
            path, text = text, f"sqlite:///{text}"
        super().__init__(text, "sqlite", path=Path(path).resolve(), url=text)

    def optuna_storage(self) -> Any:
        return self._database()


class PostgresStorage(StudyLocation):
    """A study in a PostgreSQL database, shared by runs on several hosts."""

    def __init__(self, url: str) -> None:
        scheme, rest = url.split("://", 1) if "://" in url else ("", "")
        if scheme.lower() not in _POSTGRES_SCHEMES:
            raise StudyError(f"study {_hide_password(url)!r}: expected a postgresql:// URL")
        # SQLAlchemy's default PostgreSQL driver is psycopg2; this package uses psycopg 3.
        super().__init__(url, "postgresql", url="postgresql+psycopg://" + rest)

    def optuna_storage(self) -> Any:
        return self._database()


class InMemoryStorage(StudyLocation):
    """A study kept in memory: gone when the run ends (no resume)."""

    def __init__(self) -> None:
        super().__init__("memory", "memory")

    def optuna_storage(self) -> Any:
        import optuna

        return optuna.storages.InMemoryStorage()


# Where a study is kept, as an object (like optuna's storages): pass one of the classes
# above wherever a study location is taken, or give a path or URL to study_location.
StudyStorage = StudyLocation


def study_location(url_or_path: str | os.PathLike[str] | StudyLocation | None) -> StudyLocation:
    """Parse a study location: None (memory), a file path (journal), a `postgresql://`
    URL or a `sqlite:///` URL; a storage object is returned as it is. Any other scheme is
    a StudyError."""
    if isinstance(url_or_path, StudyLocation):
        return url_or_path
    if url_or_path is None:
        return InMemoryStorage()
    text = os.fspath(url_or_path)
    if "://" not in text:
        return JournalStorage(text)
    scheme = text.split("://", 1)[0].lower()
    if scheme in _POSTGRES_SCHEMES:
        return PostgresStorage(text)
    if scheme == "sqlite":
        return SqliteStorage(text)
    raise StudyError(f"study {text!r}: unknown storage scheme {scheme!r}; give a file path (a journal file) "
                     "or a postgresql:// URL")


def _check_study_file(location: StudyLocation) -> bool:
    """True when the location's file holds a study store, False when there is none (no file,
    or an empty one); a StudyError when it holds anything else."""
    path = location.path
    assert path is not None
    if not path.exists():
        return False
    if not path.is_file():
        raise StudyError(f"study {location}: is not a file; give the path of a study file")
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return False
    if location.kind == "journal":
        first = head.split(b"\n", 1)[0]
        ours = first.startswith(b"{") and _JOURNAL_OP in first
        what = "an optuna journal"
    else:
        ours = head.startswith(_SQLITE_MAGIC) and _sqlite_has_studies(path)
        what = "an optuna SQLite study"
    if not ours and location.kind == "journal" and head.startswith(_SQLITE_MAGIC) and _sqlite_has_studies(path):
        raise StudyError(f"study {location}: is an SQLite study (the former default); give it as sqlite:///{path}")
    if not ours:
        raise StudyError(f"study {location}: the file exists and is not {what}; refusing to use or replace it "
                         "(give another --study path)")
    return True


def _sqlite_has_studies(path: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return False
    return {"studies", "trials"} <= names


def _storage_of(location: StudyLocation) -> Any:
    return location.optuna_storage()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _finished(storage: Any, study_id: int) -> int:
    attrs = storage.get_study_system_attrs(study_id)
    return sum(len(v) for k, v in attrs.items() if k.startswith(_BATCH_MARKER))


def finished_evaluations(
    url_or_path: str | os.PathLike[str] | StudyLocation | None, study_name: str = DEFAULT_STUDY_NAME
) -> int | None:
    """The finished evaluations of the study at a location, or None when there is none.

    A file that is not a study store is a StudyError: nothing is opened or written then."""
    location = study_location(url_or_path)
    if location.kind == "memory":
        return None
    if location.is_file and not _check_study_file(location):
        return None
    with quiet_optuna():
        storage = _storage_of(location)
        try:
            try:
                study_id = storage.get_study_id_from_name(study_name)
            except KeyError:
                return None
            return _finished(storage, study_id)
        finally:
            _release(storage)


def _release(storage: Any) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        storage.remove_session()
        engine.dispose()


class _StudyLock:
    """An exclusive lock on one study, held until released; refused, not waited for."""

    def __init__(self, location: StudyLocation, study_name: str) -> None:
        self._fd: int | None = None
        self._connection: Any = None
        self._engine: Any = None
        if location.is_file:
            assert location.path is not None
            fd = os.open(location.path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _busy(location) from None
            self._fd = fd
        elif location.kind == "postgresql":
            import sqlalchemy

            key = int.from_bytes(hashlib.sha256(f"ami-engine study {study_name}".encode()).digest()[:8], "big",
                                 signed=True)
            self._engine = sqlalchemy.create_engine(location.url, poolclass=sqlalchemy.pool.NullPool)
            try:
                self._connection = self._engine.connect()
                got = self._connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:key)"),
                                               {"key": key}).scalar()
                self._connection.commit()
            except Exception as exc:
                self.release()
                raise StudyError(f"study {location}: cannot open the database: {_first_line(exc)}") from None
            if not got:
                self.release()
                raise _busy(location)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if self._connection is not None:
            self._connection.close()  # a session-level advisory lock ends with its session
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def _busy(location: StudyLocation) -> StudyBusyError:
    return StudyBusyError(f"study {location}: another learning run is using it (its lock is held); wait for that "
                          "run to end, or give another --study")


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


class StudyStore:
    """The finished batches of one run; open it with `StudyStore.open`."""

    def __init__(self, storage: Any, study_id: int, space: SearchSpace, fingerprint: str,
                 lock: _StudyLock | None = None) -> None:
        self._storage = storage
        self._study_id = study_id
        self.space = space
        self.fingerprint = fingerprint
        self._lock = lock

    @classmethod
    def open(
        cls,
        url_or_path: str | os.PathLike[str] | StudyLocation | None,
        fingerprint: str,
        *,
        space: SearchSpace | None = None,
        study_name: str = DEFAULT_STUDY_NAME,
        existing: str = RESUME,
    ) -> StudyStore:
        """Open (or create) the study and hold its lock until `close`.

        `url_or_path` is a file path (journal), a `postgresql://` or `sqlite:///` URL, or
        None for memory. When the study exists, `existing` says what to do: "resume" it
        (StudyMismatchError when it was made for another run), "fresh" (delete it and
        start over) or "refuse" (StudyExistsError). A file that is not a study store is a
        StudyError whatever `existing` says, and is left as it is.
        """
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError(f"fingerprint: expected a non-empty string, got {fingerprint!r}")
        if existing not in (RESUME, FRESH, REFUSE):
            raise ValueError(f"existing: expected one of resume, fresh, refuse, got {existing!r}")
        location = study_location(url_or_path)
        space = SearchSpace() if space is None else space
        bounds = {k: list(v) for k, v in space.bounds.items()}
        if location.is_file:
            _check_study_file(location)  # before the lock creates the file: refuse what is not ours
            if not location.path.parent.is_dir():
                raise StudyError(f"study {location}: folder {str(location.path.parent)!r} does not exist")
        lock = _StudyLock(location, study_name)
        try:
            if location.is_file:
                _check_study_file(location)  # again, now that no other run can write it
            with quiet_optuna() as optuna:
                storage = _storage_of(location)
                try:
                    study_id = storage.get_study_id_from_name(study_name)
                except KeyError:
                    study_id = None
                if study_id is not None and existing == REFUSE:
                    finished = _finished(storage, study_id)
                    _release(storage)
                    raise StudyExistsError(location, finished)
                if study_id is not None and existing == FRESH:
                    storage.delete_study(study_id)
                    study_id = None
                if study_id is None:
                    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name)
                    storage.set_study_user_attr(study_id, _BOUNDS, bounds)
                    storage.set_study_user_attr(study_id, _FINGERPRINT, fingerprint)
                    return cls(storage, study_id, space, fingerprint, lock)
        except BaseException:
            lock.release()
            raise

        store = cls(storage, study_id, space, fingerprint, lock)
        attrs = storage.get_study_user_attrs(study_id)
        where = f"study {study_name!r} in {location}"
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

    @property
    def finished(self) -> int:
        """The number of evaluations in fully recorded batches."""
        return _finished(self._storage, self._study_id)

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
        """Release the database connection and the study's lock."""
        _release(self._storage)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

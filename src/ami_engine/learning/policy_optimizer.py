"""What to try next: the space of the seven learned parameters and the search strategies.

The offline loop asks a strategy for a batch of candidate configs, evaluates them and
appends them to the history; one batch is one history step. A strategy is a pure function
of (seed, step, history): it keeps nothing between calls, so equal inputs give identical
candidates and a run resumed from its stored history proposes exactly what an
uninterrupted run would have proposed.

Losses in the history may be +inf: a candidate that failed a search-time constraint.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from ami_engine.config.params import LEARNED_BOUNDS


def _as_rows(space: SearchSpace, X: Any, arg: str, *, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """X as a float array whose last axis is the space's dimension, or a ValueError naming `arg`."""
    A = np.asarray(X, dtype=float)
    if A.ndim not in ndim or A.shape[-1] != space.dim:
        want = " or ".join({1: f"({space.dim},)", 2: f"(n, {space.dim})"}[d] for d in ndim)
        raise ValueError(f"{arg}: expected shape {want}, got {A.shape}")
    if np.isnan(A).any():
        raise ValueError(f"{arg}: contains NaN")
    return A


class SearchSpace:
    """The box of learned parameters, in canonical order (LEARNED_BOUNDS by default)."""

    def __init__(self, bounds: Mapping[str, tuple[float, float]] | None = None) -> None:
        bounds = LEARNED_BOUNDS if bounds is None else bounds
        if not bounds:
            raise ValueError("bounds: at least one parameter is needed")
        for name, (lo, hi) in bounds.items():
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds: {name} has ({lo!r}, {hi!r}); need finite lower < upper")
        self.names: tuple[str, ...] = tuple(bounds)
        self.lower = np.array([float(bounds[k][0]) for k in self.names])
        self.upper = np.array([float(bounds[k][1]) for k in self.names])
        self.width = self.upper - self.lower
        for a in (self.lower, self.upper, self.width):
            a.flags.writeable = False

    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        return {k: (float(lo), float(hi)) for k, lo, hi in zip(self.names, self.lower, self.upper, strict=True)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.bounds == other.bounds

    def __hash__(self) -> int:
        return hash(tuple(self.bounds.items()))

    def __repr__(self) -> str:
        return f"SearchSpace({self.bounds!r})"

    def optuna_distributions(self) -> dict[str, Any]:
        """One optuna FloatDistribution per parameter, for trials stored or sampled in this box."""
        from optuna.distributions import FloatDistribution

        return {k: FloatDistribution(lo, hi) for k, (lo, hi) in self.bounds.items()}

    def clamp(self, X: Any) -> np.ndarray:
        """Each value moved to the nearest point inside its bounds (one row or many)."""
        return np.clip(_as_rows(self, X, "X"), self.lower, self.upper)

    def to_unit(self, X: Any) -> np.ndarray:
        """Map the box onto [0, 1] per axis."""
        return (_as_rows(self, X, "X") - self.lower) / self.width

    def from_unit(self, U: Any) -> np.ndarray:
        """Inverse of to_unit."""
        return self.lower + _as_rows(self, U, "U") * self.width

    def to_dict(self, row: Any) -> dict[str, float]:
        r = _as_rows(self, row, "row", ndim=(1,))
        return {k: float(v) for k, v in zip(self.names, r, strict=True)}

    def from_dict(self, mapping: Mapping[str, Any]) -> np.ndarray:
        """The learned parameters of `mapping` as a row; other keys (a full config) are ignored."""
        missing = [k for k in self.names if k not in mapping]
        if missing:
            raise KeyError(f"mapping: missing learned parameter(s) {', '.join(missing)}")
        return _as_rows(self, [mapping[k] for k in self.names], "mapping", ndim=(1,))

    def on_bound(self, row: Any, tol: float = 1e-12) -> list[str]:
        """Names whose value sits on (within `tol` of) its lower or upper bound."""
        r = _as_rows(self, row, "row", ndim=(1,))
        hit = (np.abs(r - self.lower) <= tol) | (np.abs(r - self.upper) <= tol)
        return [k for k, h in zip(self.names, hit, strict=True) if h]


def _step_seed(seed: int, step: int) -> int:
    """A 32-bit seed for one step, mixed from (seed, step) so that no two pairs collide in practice."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint32)[0])


def _best_row(history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The feasible history row with the lowest loss (first on ties), else `current`."""
    finite = np.isfinite(history_y)
    if not finite.any():
        return current
    return history_X[int(np.argmin(np.where(finite, history_y, np.inf)))]


def _penalised(history_y: np.ndarray) -> np.ndarray:
    """Losses with +inf (infeasible) replaced by one unit above the worst finite loss.

    The model-based samplers rank losses, so such a value means "worse than every feasible
    candidate" while keeping the point in the model; dropping it (a failed trial) would let
    the sampler walk straight back into the infeasible region.
    """
    finite = np.isfinite(history_y)
    penalty = float(history_y[finite].max()) + 1.0 if finite.any() else 1.0
    return np.where(finite, history_y, penalty)


class Strategy(ABC):
    """Proposes candidate configs; subclasses implement `_propose` and name their options."""

    name: ClassVar[str]
    OPTIONS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, space: SearchSpace, *, seed: int, budget: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"budget: expected an integer >= 1, got {budget!r}")
        self.space = space
        self.seed = int(seed)
        self.budget = budget

    @property
    def options(self) -> dict[str, Any]:
        """The options in effect (defaults resolved), for the run's fingerprint and report."""
        return {k: getattr(self, k) for k in self.OPTIONS}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}(seed={self.seed}{', ' if opts else ''}{opts})"

    def propose(
        self,
        step: int,
        n: int,
        history_X: Any,
        history_y: Any,
        current: Any,
    ) -> np.ndarray:
        """The next `n` candidates, shape (n, dim), inside the bounds (grid: fewer once exhausted).

        `history_X` (m, dim) and `history_y` (m,) are every evaluated candidate so far, in
        evaluation order; `history_y` may hold +inf for infeasible ones. `current` is the
        config the run started from. Equal arguments give identical arrays.
        """
        for arg, v in (("step", step), ("n", n)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"{arg}: expected an integer >= 0, got {v!r}")
        hX = np.asarray(history_X, dtype=float)
        if hX.size == 0:
            hX = hX.reshape(0, self.space.dim)
        hX = self.space.clamp(_as_rows(self.space, hX, "history_X", ndim=(2,)))
        hy = np.asarray(history_y, dtype=float).reshape(-1)
        if hy.shape != (len(hX),):
            raise ValueError(f"history_y: expected shape ({len(hX)},) to match history_X, got {np.shape(history_y)}")
        if np.isnan(hy).any() or np.isneginf(hy).any():
            raise ValueError("history_y: losses must be numbers or +inf (infeasible), not NaN or -inf")
        cur = self.space.clamp(_as_rows(self.space, current, "current", ndim=(1,)))
        if n == 0:
            return np.empty((0, self.space.dim))
        return self.space.clamp(self._propose(int(step), int(n), hX, hy, cur))

    @abstractmethod
    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        """Candidates for validated, clamped inputs; the caller clamps the result again."""


class GridStrategy(Strategy):
    """The full product of `points_per_axis` evenly spaced values per parameter.

    The product is enumerated in one fixed order (C order over the canonical parameter
    order); each call proposes the first `n` grid points not yet in the history, so extra
    rows in the history (the current config) neither shift nor repeat the enumeration.
    Fewer than `n` rows come back once the grid is exhausted.

    A grid larger than the budget cannot be evaluated whole, and its first points in C
    order would all share the first parameters' lower bounds. So then the order is that of
    an (unscrambled) Sobol sequence snapped to the grid: the first `budget` points cover
    the whole box at the resolution the budget allows. `note` says so.
    """

    name = "grid"
    OPTIONS = ("points_per_axis",)

    def __init__(
        self, space: SearchSpace, *, seed: int, budget: int | None = None, points_per_axis: int | None = None
    ) -> None:
        super().__init__(space, seed=seed, budget=budget)
        if points_per_axis is None and budget is None:
            points_per_axis = 3  # the bounds and the middle
        elif points_per_axis is None:
            # The densest grid whose product fits the budget, and never less than the corners
            # (a run that stops early proposes the first `budget` points of it).
            points_per_axis = 2
            while (points_per_axis + 1) ** space.dim <= budget:
                points_per_axis += 1
        if isinstance(points_per_axis, bool) or not isinstance(points_per_axis, int) or points_per_axis < 1:
            raise ValueError(f"points_per_axis: expected an integer >= 1, got {points_per_axis!r}")
        self.points_per_axis = points_per_axis
        k = points_per_axis
        self._axis = (
            (space.lower + space.upper)[None, :] / 2
            if k == 1
            else space.lower + np.linspace(0.0, 1.0, k)[:, None] * space.width
        )  # (k, dim)

    @property
    def size(self) -> int:
        return self.points_per_axis**self.space.dim

    @property
    def note(self) -> str | None:
        """What the budget does to the grid, in one sentence (None when it fits exactly)."""
        k, d, size, budget = self.points_per_axis, self.space.dim, self.size, self.budget
        if budget is None or budget == size:
            return None
        if size > budget:
            return (f"the grid of {k}^{d} = {size:,} points exceeds the budget of {budget:,}: the {budget:,} "
                    "evaluated are spread over the whole box (a Sobol sequence snapped to the grid)")
        return (f"the grid has {k}^{d} = {size:,} points, the densest that fits the budget of {budget:,}; "
                f"up to {budget - size:,} evaluations of the budget are left unused")

    @cached_property
    def _order(self) -> np.ndarray | None:
        """Flat grid indices in the order to propose them when the grid exceeds the budget
        (None: C order)."""
        if self.budget is None or self.size <= self.budget:
            return None
        from scipy.stats import qmc

        k, d = self.points_per_axis, self.space.dim
        m = int(np.ceil(np.log2(max(2, 4 * self.budget))))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            U = qmc.Sobol(d, scramble=False).random_base2(m)
        idx = np.clip(np.floor(U * k), 0, k - 1).astype(np.int64) if k > 1 else np.zeros(U.shape, np.int64)
        flat = np.ravel_multi_index(tuple(idx.T), (k,) * d)
        _, first = np.unique(flat, return_index=True)
        return flat[np.sort(first)]

    def _grid_indices(self, X: np.ndarray) -> set[int]:
        """Flat grid indices of the rows of X that are grid points."""
        k, d = self.points_per_axis, self.space.dim
        if len(X) == 0:
            return set()
        if k == 1:
            idx = np.zeros(X.shape, dtype=np.int64)
        else:
            idx = np.clip(np.rint(self.space.to_unit(X) * (k - 1)), 0, k - 1).astype(np.int64)
        on_grid = np.all(np.abs(self._axis[idx, np.arange(d)] - X) <= 1e-9 * self.space.width, axis=1)
        return set(np.ravel_multi_index(tuple(idx[on_grid].T), (k,) * d).tolist())

    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        seen = self._grid_indices(history_X)
        flat: list[int] = []
        order = self._order
        if order is not None:
            flat = [int(i) for i in order if int(i) not in seen][:n]
        i = 0
        while len(flat) < n and i < self.size and order is None:
            if i not in seen:
                flat.append(i)
            i += 1
        if not flat:
            return np.empty((0, self.space.dim))
        idx = np.unravel_index(np.array(flat), (self.points_per_axis,) * self.space.dim)
        return np.stack([self._axis[idx[j], j] for j in range(self.space.dim)], axis=1)


class RandomStrategy(Strategy):
    """Uniform draws inside the bounds, or Gaussian perturbations of the best config so far.

    In "perturb" mode each parameter moves by N(0, (step_scale * its bound width)^2) around
    the best feasible config in the history (`current` while there is none); the result is
    clamped, so points beyond a bound land on it.
    """

    name = "random"
    OPTIONS = ("mode", "step_scale")

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        mode: str = "uniform",
        step_scale: float = 0.1,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget)
        if mode not in ("uniform", "perturb"):
            raise ValueError(f"mode: expected 'uniform' or 'perturb', got {mode!r}")
        if not (isinstance(step_scale, (int, float)) and 0.0 < step_scale <= 1.0):
            raise ValueError(f"step_scale: expected a fraction of the bound width in (0, 1], got {step_scale!r}")
        self.mode = mode
        self.step_scale = float(step_scale)

    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        rng = np.random.default_rng(_step_seed(self.seed, step))
        if self.mode == "uniform":
            return self.space.from_unit(rng.random((n, self.space.dim)))
        center = _best_row(history_X, history_y, current)
        return center + rng.normal(0.0, 1.0, (n, self.space.dim)) * (self.step_scale * self.space.width)


class SobolStrategy(Strategy):
    """A scrambled Sobol sequence seeded by the run's seed.

    The position in the sequence is the history length, so successive batches continue
    the sequence (a row added by the caller skips one point; none is ever repeated).
    """

    name = "sobol"

    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        from scipy.stats import qmc

        sobol = qmc.Sobol(self.space.dim, scramble=True, rng=self.seed)
        if len(history_X):  # scipy rejects fast_forward(0)
            sobol.fast_forward(len(history_X))
        with warnings.catch_warnings():
            # Balance properties want powers of two; a batch size is what the run asks for.
            warnings.simplefilter("ignore", UserWarning)
            return self.space.from_unit(sobol.random(n))


@contextmanager
def quiet_optuna() -> Iterator[Any]:
    """Optuna with its INFO logging and experimental-feature warnings silenced, restored after."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(before)


class TpeStrategy(Strategy):
    """Optuna's multivariate TPE, rebuilt from the history on every call.

    Each call creates a fresh in-memory study, adds the history as completed trials
    (infeasible losses penalised, see `_penalised`), seeds the sampler from (seed, step)
    and asks `n` trials. The constant liar treats the trials asked earlier in the same
    batch as bad, which spreads a batch out instead of stacking it on one optimum.
    `current` reaches TPE only through the history (the caller evaluates it in the first
    batch); until `n_startup_trials` completed trials exist TPE samples at random.
    """

    name = "tpe"
    OPTIONS = ("n_startup_trials", "n_ei_candidates")

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget)
        for arg, v, low in (("n_startup_trials", n_startup_trials, 0), ("n_ei_candidates", n_ei_candidates, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{arg}: expected an integer >= {low}, got {v!r}")
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates

    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        with quiet_optuna() as optuna:
            dists = self.space.optuna_distributions()
            sampler = optuna.samplers.TPESampler(
                seed=_step_seed(self.seed, step),
                n_startup_trials=self.n_startup_trials,
                n_ei_candidates=self.n_ei_candidates,
                multivariate=True,
                constant_liar=True,
            )
            study = optuna.create_study(direction="minimize", sampler=sampler)
            study.add_trials(
                [
                    optuna.trial.create_trial(params=self.space.to_dict(x), distributions=dists, value=float(v))
                    for x, v in zip(history_X, _penalised(history_y), strict=True)
                ]
            )
            return np.array([self.space.from_dict(study.ask(dists).params) for _ in range(n)])


def _import_cmaes() -> Any:
    try:
        import cmaes
    except ImportError as e:
        raise ImportError(
            "strategy 'cmaes' needs the 'cmaes' package (the CMA-ES library behind optuna's "
            "CmaEsSampler), which is not installed: pip install cmaes"
        ) from e
    return cmaes


class CmaesStrategy(Strategy):
    """CMA-ES, replayed over the history on every call.

    Optuna's CmaEsSampler keeps its evolving state (mean, step size, covariance) pickled
    in the trials it asked itself and advances one generation per ask, so a study rebuilt
    from plain history trials would always sample around its start and ignore every
    result. Instead this drives the same `cmaes` library directly: start at `current` (in
    unit coordinates) with step size `sigma0`, tell the history in evaluation order as
    consecutive generations of `popsize` (a trailing partial generation is not told), then
    ask `n` points with the sampling seeded from (seed, step). `popsize` defaults to `n`
    (at least CMA-ES's own default), so with a constant batch size each history step is
    one generation.
    """

    name = "cmaes"
    OPTIONS = ("sigma0", "popsize")

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        budget: int | None = None,
        sigma0: float = 1.0 / 6.0,
        popsize: int | None = None,
    ) -> None:
        super().__init__(space, seed=seed, budget=budget)
        _import_cmaes()
        if not (isinstance(sigma0, (int, float)) and 0.0 < sigma0 <= 1.0):
            raise ValueError(f"sigma0: expected a fraction of the bound width in (0, 1], got {sigma0!r}")
        if popsize is not None and (isinstance(popsize, bool) or not isinstance(popsize, int) or popsize < 2):
            raise ValueError(f"popsize: expected an integer >= 2, got {popsize!r}")
        self.sigma0 = float(sigma0)
        self.popsize = popsize

    def _propose(
        self, step: int, n: int, history_X: np.ndarray, history_y: np.ndarray, current: np.ndarray
    ) -> np.ndarray:
        cmaes = _import_cmaes()
        d = self.space.dim
        popsize = self.popsize or max(n, 4 + int(3 * np.log(d)))
        optimizer = cmaes.CMA(
            mean=self.space.to_unit(current),
            sigma=self.sigma0,
            bounds=np.tile([0.0, 1.0], (d, 1)),
            seed=_step_seed(self.seed, step),
            population_size=popsize,
        )
        U = self.space.to_unit(history_X)
        y = _penalised(history_y)
        for g in range(len(U) // popsize):
            part = slice(g * popsize, (g + 1) * popsize)
            optimizer.tell([(u, float(v)) for u, v in zip(U[part], y[part], strict=True)])
        return self.space.from_unit(np.array([optimizer.ask() for _ in range(n)]))


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (GridStrategy, RandomStrategy, SobolStrategy, TpeStrategy, CmaesStrategy)
}


def make_strategy(
    name: str | Strategy, space: SearchSpace | None = None, *, seed: int, budget: int | None = None, **options: Any
) -> Strategy:
    """The strategy called `name` over `space` (the learned bounds when None).

    `budget` (total candidates of the run) is accepted by every strategy; only grid uses it,
    to size its default grid. Other options are the strategy's own (see its OPTIONS).

    `name` may also be a strategy object, as optuna takes a sampler object: it is used as
    it is, once it is found to search `space` with `seed` and `options` (the run's
    fingerprint records them, so they must be the strategy's own).
    """
    if isinstance(name, Strategy):
        return _given_strategy(name, SearchSpace() if space is None else space, seed, options)
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ValueError(f"strategy: unknown {name!r}; choose one of {', '.join(STRATEGIES)}")
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        have = ", ".join(cls.OPTIONS) or "none"
        raise ValueError(f"strategy {name!r}: unknown option(s) {', '.join(unknown)}; its options: {have}")
    return cls(SearchSpace() if space is None else space, seed=seed, budget=budget, **options)


def _given_strategy(strategy: Strategy, space: SearchSpace, seed: int, options: Mapping[str, Any]) -> Strategy:
    if strategy.space != space:
        raise ValueError(f"strategy: searches {strategy.space!r}, not the run's {space!r}")
    if strategy.seed != seed:
        raise ValueError(f"strategy: seeded with {strategy.seed}, but the run's seed is {seed}; one seed seeds "
                         "the whole run")
    strategy_spec(strategy, options)
    return strategy


def strategy_spec(strategy: str | Strategy, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The name and options that describe `strategy` (a name with its options, or an object)."""
    if isinstance(strategy, Strategy):
        if options and dict(options) != strategy.options:
            raise ValueError(f"strategy options: {dict(options)!r} differ from the strategy object's own "
                             f"{strategy.options!r}; set options on the object")
        return strategy.name, dict(strategy.options)
    return strategy, dict(options)


def settle_strategy(
    strategy: str | Strategy, options: Mapping[str, Any], *, seed: int, given: Strategy | None = None
) -> tuple[str, dict[str, Any], Strategy | None]:
    """(name, options, object) of a run's strategy, given by name or as an object.

    An object stands for its name and options (what a run records); it must search the
    learned bounds with the run's `seed`. `given` is an object settled before: kept while
    `strategy` still names it."""
    if isinstance(strategy, Strategy):
        given = strategy
    elif given is not None and strategy != given.name:
        given = None  # another strategy was named since
    if given is not None:
        make_strategy(given, seed=seed, **options)
        return *strategy_spec(given, options), given
    return *strategy_spec(strategy, options), None

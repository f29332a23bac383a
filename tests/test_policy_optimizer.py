"""The search space, the candidate strategies and the study store (docs/learning.md §4)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ami_engine.config.params import LEARNED_BOUNDS, LEARNED_PARAMS
from ami_engine.learning.policy_optimizer import STRATEGIES, SearchSpace, Strategy, make_strategy
from ami_engine.learning.study import StudyMismatchError, StudyStore, make_fingerprint

SPACE = SearchSpace()
HAVE_CMAES = importlib.util.find_spec("cmaes") is not None
ALL_STRATEGIES = [
    pytest.param(name, marks=pytest.mark.skipif(name == "cmaes" and not HAVE_CMAES, reason="cmaes not installed"))
    for name in STRATEGIES
]
SEEDED = [p for p in ALL_STRATEGIES if p.values[0] != "grid"]  # grid ignores the seed
TARGET = np.array([0.3, 0.7, 0.4, 0.6, 0.25, 0.55, 0.8])  # optimum of the toy loss, unit coordinates


def quadratic(X: np.ndarray) -> np.ndarray:
    return ((SPACE.to_unit(X) - TARGET) ** 2).sum(axis=1)


def toy_loss_with_infeasible(X: np.ndarray) -> np.ndarray:
    """The quadratic, with candidates whose J_MIN is in the lowest eighth of its range infeasible."""
    y = quadratic(X)
    y[SPACE.to_unit(X)[:, 0] < 0.125] = np.inf
    return y


def middle() -> np.ndarray:
    return (SPACE.lower + SPACE.upper) / 2


def empty_history() -> tuple[np.ndarray, np.ndarray]:
    return np.empty((0, SPACE.dim)), np.empty(0)


def run_loop(
    strategy: Strategy,
    steps: range,
    n: int,
    loss: Callable[[np.ndarray], np.ndarray],
    history: tuple[np.ndarray, np.ndarray] | None = None,
    store: StudyStore | None = None,
) -> list[np.ndarray]:
    """What the offline loop does: the current config joins the first batch; one step per batch."""
    HX, Hy = empty_history() if history is None else history
    current = middle()
    batches = []
    for step in steps:
        if step == 0:
            X = np.vstack([SPACE.clamp(current), strategy.propose(0, n - 1, HX, Hy, current)])
        else:
            X = strategy.propose(step, n, HX, Hy, current)
        y = loss(X)
        if store is not None:
            extras = [{"row": i, "unit_j_min": float(u)} for i, u in enumerate(SPACE.to_unit(X)[:, 0])]
            store.record_batch(step, X, y, extras)
        HX, Hy = np.vstack([HX, X]), np.concatenate([Hy, y])
        batches.append(X)
    return batches


def best_after(name: str, seed: int, steps: int, n: int) -> float:
    strategy = make_strategy(name, SPACE, seed=seed)
    X = np.vstack(run_loop(strategy, range(steps), n, quadratic))
    return float(quadratic(X).min())


# --- the search space -------------------------------------------------------------------


def test_search_space_is_the_learned_bounds_in_canonical_order():
    assert SPACE.names == LEARNED_PARAMS
    assert SPACE.lower.tolist() == [lo for lo, _ in LEARNED_BOUNDS.values()]
    assert SPACE.upper.tolist() == [hi for _, hi in LEARNED_BOUNDS.values()]
    assert SPACE == SearchSpace(LEARNED_BOUNDS)


def test_a_value_outside_its_bounds_is_clamped_onto_the_bound():
    X = np.vstack([SPACE.lower - 1.0, SPACE.upper + 1.0, middle()])
    out = SPACE.clamp(X)
    assert np.array_equal(out[0], SPACE.lower)
    assert np.array_equal(out[1], SPACE.upper)
    assert np.array_equal(out[2], middle())
    assert np.array_equal(SPACE.clamp(SPACE.upper + 5), SPACE.upper)  # one row as well


def test_clamp_refuses_nan_and_wrong_shapes():
    with pytest.raises(ValueError, match="NaN"):
        SPACE.clamp(np.full(SPACE.dim, np.nan))
    with pytest.raises(ValueError, match="shape"):
        SPACE.clamp(np.zeros((2, SPACE.dim + 1)))


def test_unit_and_dict_round_trips():
    X = SPACE.from_unit(np.random.default_rng(0).random((5, SPACE.dim)))
    assert np.allclose(SPACE.from_unit(SPACE.to_unit(X)), X)
    row = X[0]
    assert list(SPACE.to_dict(row)) == list(LEARNED_PARAMS)
    assert np.array_equal(SPACE.from_dict(SPACE.to_dict(row) | {"C_MIN": 0.1}), row)  # a full config is fine
    with pytest.raises(KeyError, match="H_MAX"):
        SPACE.from_dict({k: v for k, v in SPACE.to_dict(row).items() if k != "H_MAX"})


def test_on_bound_names_the_parameters_sitting_on_a_bound():
    row = middle()
    assert SPACE.on_bound(row) == []
    row[0], row[3] = SPACE.lower[0], SPACE.upper[3]
    assert SPACE.on_bound(row) == ["J_MIN", "SOFT_CLAMP_BETA"]
    row[1] = SPACE.upper[1] - 1e-6
    assert SPACE.on_bound(row) == ["J_MIN", "SOFT_CLAMP_BETA"]
    assert SPACE.on_bound(row, tol=1e-5) == ["J_MIN", "H_MAX", "SOFT_CLAMP_BETA"]


# --- every strategy -----------------------------------------------------------------------

unit_rows = hnp.arrays(float, st.tuples(st.integers(0, 24), st.just(SPACE.dim)), elements=st.floats(-0.5, 1.5))
losses = st.one_of(st.floats(0.0, 5.0), st.just(np.inf))


@pytest.mark.parametrize("name", ALL_STRATEGIES)
@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    step=st.integers(0, 50),
    n=st.integers(1, 8),
    U=unit_rows,
    loss_values=st.lists(losses, min_size=24, max_size=24),
    current=hnp.arrays(float, SPACE.dim, elements=st.floats(-0.5, 1.5)),
)
def test_every_strategy_stays_inside_the_bounds(name, seed, step, n, U, loss_values, current):
    """Histories and the current config may lie outside the bounds; candidates never do."""
    to_box = SPACE.lower + U * SPACE.width  # unit rows past [0, 1] land outside the bounds
    y = np.array(loss_values[: len(U)])
    X = make_strategy(name, SPACE, seed=seed).propose(step, n, to_box, y, SPACE.lower + current * SPACE.width)
    assert X.ndim == 2 and X.shape[1] == SPACE.dim and len(X) <= n
    assert name == "grid" or len(X) == n
    assert np.all(X >= SPACE.lower) and np.all(X <= SPACE.upper)


def some_history(seed: int = 7, m: int = 30) -> tuple[np.ndarray, np.ndarray]:
    X = SPACE.from_unit(np.random.default_rng(seed).random((m, SPACE.dim)))
    return X, toy_loss_with_infeasible(X)


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_equal_inputs_give_identical_candidates(name):
    HX, Hy = some_history()
    a = make_strategy(name, SPACE, seed=11).propose(3, 6, HX, Hy, middle())
    b = make_strategy(name, SPACE, seed=11).propose(3, 6, HX.copy(), Hy.copy(), middle())
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", SEEDED)
def test_different_seeds_or_steps_give_different_candidates(name):
    HX, Hy = some_history()
    a = make_strategy(name, SPACE, seed=1).propose(3, 6, HX, Hy, middle())
    b = make_strategy(name, SPACE, seed=2).propose(3, 6, HX, Hy, middle())
    assert not np.array_equal(a, b)
    if name != "sobol":  # sobol's position is the history length, not the step
        c = make_strategy(name, SPACE, seed=1).propose(4, 6, HX, Hy, middle())
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["tpe", "random", "sobol"] + (["cmaes"] if HAVE_CMAES else []))
def test_an_all_infeasible_history_is_accepted(name):
    HX, _ = some_history()
    X = make_strategy(name, SPACE, seed=3).propose(2, 5, HX, np.full(len(HX), np.inf), middle())
    assert X.shape == (5, SPACE.dim)


def test_propose_validates_its_inputs():
    strategy = make_strategy("random", SPACE, seed=0)
    HX, Hy = some_history(m=4)
    with pytest.raises(ValueError, match="history_y"):
        strategy.propose(0, 2, HX, np.array([0.1, np.nan, 0.2, 0.3]), middle())
    with pytest.raises(ValueError, match="history_y"):
        strategy.propose(0, 2, HX, Hy[:3], middle())
    with pytest.raises(ValueError, match="current"):
        strategy.propose(0, 2, HX, Hy, middle()[:3])
    with pytest.raises(ValueError, match="n:"):
        strategy.propose(0, -1, HX, Hy, middle())


def test_make_strategy_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown 'bayes'.*grid, random, sobol, tpe, cmaes"):
        make_strategy("bayes", SPACE, seed=0)
    with pytest.raises(ValueError, match="'tpe': unknown option.*points_per_axis.*n_startup_trials"):
        make_strategy("tpe", SPACE, seed=0, points_per_axis=3)
    with pytest.raises(ValueError, match="mode"):
        make_strategy("random", SPACE, seed=0, mode="gaussian")
    with pytest.raises(ValueError, match="seed"):
        make_strategy("random", SPACE, seed=-1)


# --- grid -------------------------------------------------------------------------------------


def test_grid_enumerates_the_full_product_in_a_fixed_order():
    grid = make_strategy("grid", SPACE, seed=0, points_per_axis=2)
    assert grid.size == 2**SPACE.dim
    HX, Hy = empty_history()
    for step in range(3):
        X = grid.propose(step, 50, HX, Hy, middle())
        HX, Hy = np.vstack([HX, X]), np.concatenate([Hy, quadratic(X)])
    assert len(HX) == 128 and len(grid.propose(3, 50, HX, Hy, middle())) == 0
    corners = SPACE.lower + np.array(np.unravel_index(np.arange(128), (2,) * SPACE.dim)).T * SPACE.width
    assert np.allclose(HX, corners)  # every corner once, in C order


def test_grid_skips_points_already_in_the_history():
    grid = make_strategy("grid", SPACE, seed=0, points_per_axis=3)
    first = grid.propose(0, 4, *empty_history(), middle())
    history = np.vstack([middle(), first[1]])  # the current config and one grid point
    X = grid.propose(1, 4, history, np.zeros(2), middle())
    assert np.array_equal(X[0], first[0]) and np.array_equal(X[1:3], first[2:])
    assert not any(np.array_equal(x, middle()) for x in X)


def test_grid_default_is_the_densest_that_fits_the_budget():
    assert make_strategy("grid", SPACE, seed=0, budget=2186).points_per_axis == 2
    assert make_strategy("grid", SPACE, seed=0, budget=2187).points_per_axis == 3
    assert make_strategy("grid", SPACE, seed=0, budget=10).points_per_axis == 2


# --- random and sobol ---------------------------------------------------------------------------


def test_perturb_stays_near_the_best_config_so_far():
    HX, Hy = some_history()
    best = HX[np.argmin(Hy)]
    X = make_strategy("random", SPACE, seed=5, mode="perturb", step_scale=0.05).propose(1, 400, HX, Hy, middle())
    z = (X - best) / (0.05 * SPACE.width)
    assert np.all(np.abs(z) <= 5.0)
    interior = ~np.isin(X, np.vstack([SPACE.lower, SPACE.upper]))  # clamped values are not N(0, 1)
    assert np.all(interior.any(axis=0))
    assert 0.8 < z[interior].std() < 1.2


def test_perturb_starts_from_current_when_nothing_feasible_is_known():
    HX, _ = some_history()
    current = SPACE.from_unit(np.full(SPACE.dim, 0.4))
    X = make_strategy("random", SPACE, seed=5, mode="perturb").propose(1, 200, HX, np.full(len(HX), np.inf), current)
    assert np.allclose(X.mean(axis=0), current, atol=0.03 * SPACE.width.max())


def test_sobol_batches_continue_one_sequence():
    sobol = make_strategy("sobol", SPACE, seed=9)
    whole = sobol.propose(0, 16, *empty_history(), middle())
    rest = sobol.propose(1, 8, whole[:8], quadratic(whole[:8]), middle())
    assert np.array_equal(rest, whole[8:])


# --- model-based strategies -----------------------------------------------------------------------


def test_tpe_finds_a_better_config_than_random_on_a_quadratic():
    """Six batches of sixteen: TPE's best is well below uniform random's, seed for seed on average."""
    tpe = np.mean([best_after("tpe", seed, steps=6, n=16) for seed in range(3)])
    uniform = np.mean([best_after("random", seed, steps=6, n=16) for seed in range(3)])
    assert tpe < 0.5 * uniform


@pytest.mark.skipif(not HAVE_CMAES, reason="cmaes not installed")
def test_cmaes_finds_a_better_config_than_random_on_a_quadratic():
    cma = np.mean([best_after("cmaes", seed, steps=6, n=16) for seed in range(3)])
    uniform = np.mean([best_after("random", seed, steps=6, n=16) for seed in range(3)])
    assert cma < 0.5 * uniform


def test_cmaes_without_its_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cmaes", None)  # makes `import cmaes` fail
    with pytest.raises(ImportError, match="pip install cmaes"):
        make_strategy("cmaes", SPACE, seed=0)


# --- study store and resume ------------------------------------------------------------------------

FINGERPRINT = make_fingerprint(data="sha256:abc", seed=4, strategy="tpe", options={}, weights=[1.5, 1.0, 0.5])


def test_study_store_round_trip(tmp_path):
    X = np.vstack([SPACE.lower, SPACE.upper, SPACE.from_unit(np.full(SPACE.dim, 1 / 3))])
    y = np.array([0.25, np.inf, 1 / 7])
    extras = [{"fail_safe_rate": 0.1}, {"failed": "critical floor"}, {}]
    with StudyStore.open(tmp_path / "study.db", FINGERPRINT) as store:
        assert store.completed_batches() == []
        store.record_batch(0, X, y, extras)
        store.record_batch(1, X[:1], y[:1])
    with StudyStore.open(str(tmp_path / "study.db"), FINGERPRINT) as store:
        first, second = store.completed_batches()
        HX, Hy = store.history()
    assert first.step == 0 and np.array_equal(first.X, X) and np.array_equal(first.y, y)
    assert first.extras == tuple(extras)
    assert second.step == 1 and second.extras == ({},)
    assert np.array_equal(HX, np.vstack([X, X[:1]])) and np.array_equal(Hy, np.concatenate([y, y[:1]]))


def test_in_memory_store_when_no_path_is_given():
    store = StudyStore.open(None, FINGERPRINT)
    store.record_batch(0, SPACE.lower[None, :], [0.5])
    assert [b.step for b in store.completed_batches()] == [0]
    store.close()


def test_resuming_with_a_different_setup_is_refused(tmp_path):
    StudyStore.open(tmp_path / "study.db", FINGERPRINT).close()
    other = make_fingerprint(data="sha256:abc", seed=5, strategy="tpe", options={}, weights=[1.5, 1.0, 0.5])
    with pytest.raises(StudyMismatchError, match="seed: stored 4, now 5"):
        StudyStore.open(tmp_path / "study.db", other)
    narrower = SearchSpace(LEARNED_BOUNDS | {"J_MIN": (0.6, 0.9)})
    with pytest.raises(StudyMismatchError, match="bounds"):
        StudyStore.open(tmp_path / "study.db", FINGERPRINT, space=narrower)


def test_record_batch_refuses_unclamped_rows_and_repeated_steps():
    store = StudyStore.open(None, FINGERPRINT)
    with pytest.raises(ValueError, match="J_MIN=0.99 outside"):
        store.record_batch(0, np.vstack([middle(), SPACE.upper + np.eye(SPACE.dim)[0] * 0.04]), [1.0, 2.0])
    store.record_batch(0, middle()[None, :], [1.0])
    with pytest.raises(ValueError, match="already recorded"):
        store.record_batch(0, middle()[None, :], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        store.record_batch(1, middle()[None, :], [np.nan])


def test_a_batch_interrupted_while_being_written_is_not_recorded(tmp_path, monkeypatch):
    path = tmp_path / "study.db"
    store = StudyStore.open(path, FINGERPRINT)
    store.record_batch(0, middle()[None, :], [1.0])
    create = store._storage.create_new_trial
    written = []

    def crash_on_third(*args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(1)
        return create(*args, **kwargs)

    monkeypatch.setattr(store._storage, "create_new_trial", crash_on_third)
    X = SPACE.from_unit(np.random.default_rng(1).random((4, SPACE.dim)))
    with pytest.raises(KeyboardInterrupt):
        store.record_batch(1, X, quadratic(X))
    store.close()
    with StudyStore.open(path, FINGERPRINT) as store:
        assert [b.step for b in store.completed_batches()] == [0]
        store.record_batch(1, X, quadratic(X))  # the step can be written again, whole
        assert np.array_equal(store.completed_batches()[1].X, X)


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_a_resumed_run_proposes_what_an_uninterrupted_run_proposes(name, tmp_path):
    steps, stop_after, n = 5, 2, 8
    uninterrupted = run_loop(make_strategy(name, SPACE, seed=21), range(steps), n, toy_loss_with_infeasible)

    path = tmp_path / "study.db"
    with StudyStore.open(path, FINGERPRINT) as store:
        before = run_loop(
            make_strategy(name, SPACE, seed=21), range(stop_after), n, toy_loss_with_infeasible, store=store
        )
    with StudyStore.open(path, FINGERPRINT) as store:
        done = store.completed_batches()
        assert [b.step for b in done] == list(range(stop_after))
        after = run_loop(
            make_strategy(name, SPACE, seed=21),
            range(done[-1].step + 1, steps),
            n,
            toy_loss_with_infeasible,
            history=store.history(),
            store=store,
        )
        assert len(store.completed_batches()) == steps
    for a, b in zip(uninterrupted, before + after, strict=True):
        assert np.array_equal(a, b)

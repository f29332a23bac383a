"""The shortcuts the kernels take to visit fewer actions or sort less, each held to the
plain way they stand for: the fallback of section 8 scored on the first action of each
group, the run-wise sorts, and stream codes carried from a state set to its subsets."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_engine.engine import ActionSpace
from ami_engine.engine import _kernel as K
from ami_engine.engine import rules as R
from ami_engine.io.stateset import STATE_FIELDS, StateSet, renumber
from ami_engine.learning.shards import make_shards
from ami_engine.scenario import generate

unit = st.floats(0.0, 1.0, allow_nan=False)


def _grid(draw_values: list[float]) -> tuple[float, ...]:
    return tuple(sorted(set(draw_values)))


@settings(max_examples=300, deadline=None)
@given(state=st.lists(unit, min_size=len(STATE_FIELDS), max_size=len(STATE_FIELDS)),
       grid=st.lists(unit, min_size=2, max_size=5).map(_grid).filter(lambda g: len(g) >= 2),
       weights=st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=4, max_size=4))
def test_the_fallback_scores_only_each_groups_first_action_and_finds_the_grids_action(state, grid, weights):
    """Section 8 without candidates: the first action within TIE of the best S of the whole
    grid. S never rises with the delay inside a group, in floating point, so the first
    action of each group is enough; held here to the scan of every action."""
    space = _space(grid, weights)
    st_row = np.asarray(state, dtype=np.float64)
    n, g = space.actions.shape[0], space.comp_values.shape[0]
    s_all = np.empty(n)
    j_grp, h_grp, c_comp = np.empty(n // g), np.empty(n // g), np.empty(g)
    order = np.empty(n, dtype=np.int64)
    m = K.score_state(st_row, space.actions, space.comp_of, space.comp_values, space.score_weights, -np.inf, np.inf,
                      -np.inf, np.inf, s_all, j_grp, h_grp, c_comp, order)
    assert m == n
    every = R.no_candidate_action(s_all)
    # S does not rise with the delay inside any group.
    per_group = s_all.reshape(n // g, g)
    assert np.all(np.diff(per_group, axis=1) <= 0.0)
    firsts = np.empty(n // g, dtype=np.int64)
    fresh = np.full(n, np.nan)
    got = K._grid_fallback(st_row, space.actions, space.comp_of, space.score_weights, g, j_grp, h_grp, c_comp, fresh,
                           firsts)
    assert got == every


def _space(grid, weights) -> ActionSpace:
    return ActionSpace.of({"ACTION_GRID": list(grid), "SCORE_WEIGHTS": list(weights)})


def _held_to_a_stable_sort(k: np.ndarray, run: int) -> None:
    m = k.size
    expected = np.argsort(-k, kind="stable")
    values, items = k.copy(), np.arange(m, dtype=np.int64)
    K.sort_descending(values, items, m, True, run, K.sort_scratch(m))
    assert items.tolist() == expected.tolist()
    assert values.tolist() == k[expected].tolist()
    alone, untouched = k.copy(), np.arange(m, dtype=np.int64)
    K.sort_descending(alone, untouched, m, False, run, K.sort_scratch(m))
    assert alone.tolist() == k[expected].tolist()
    assert untouched.tolist() == list(range(m))


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.one_of(st.sampled_from([0.0, -0.0, 0.25, 0.5, 0.5 + 1e-13, 0.75, 1.0, -1.0, 3.0, 1e300, -1e300,
                                                5e-324]),
                               st.floats(-2.0, 2.0, allow_nan=False)), min_size=0, max_size=80),
       run=st.integers(1, 9))
def test_the_sort_gives_the_stable_descending_order(keys, run):
    """Any keys, any run length, runs already descending or not: the order of a stable sort
    by the keys descending (equal keys in input order), with or without items."""
    _held_to_a_stable_sort(np.asarray(keys, dtype=np.float64), run)


def test_crowded_keys_and_keys_too_close_to_spread_are_sorted_by_merging():
    """Keys packed into one bucket in rising order (one far key widens the buckets), so the
    insertion sort runs out of moves; and keys whose range is too narrow to scale: both
    finish by merging, in the same order."""
    crowded = np.concatenate([[1000.0], np.linspace(0.0, 1e-3, 120), [1000.0], np.zeros(5)])
    _held_to_a_stable_sort(crowded, 5)
    _held_to_a_stable_sort(np.array([5e-324, 0.0, 1e-323, 5e-324, 0.0, 1e-323]), 2)
    with_inf = np.array([0.5, np.inf, 0.25, -np.inf, 0.5, np.inf])
    _held_to_a_stable_sort(with_inf, 3)


def _codes_by_labels(streams):
    seen = {}
    return [seen.setdefault((type(s).__name__, s), len(seen)) for s in streams]


def test_stream_codes_follow_first_appearance_for_any_labels():
    for streams in (["b", "a", "b", "c"], [3, 1, 3, 2**70, 1], [3, "3", 3, None, True, 1], [True, 1, False], [],
                    ["a", "\ud800", "a", "b\x00c", "\ud800"]):
        s = StateSet(np.zeros((len(streams), len(STATE_FIELDS))), list(streams), [None] * len(streams),
                     [None] * len(streams))
        codes, n = s.stream_codes()
        assert codes.tolist() == _codes_by_labels(streams)
        assert n == len(set(_codes_by_labels(streams)))


def test_subsets_carry_the_codes_their_labels_give():
    states = generate("chaos", 3000, 4, streams=17)
    rng = np.random.default_rng(3)
    index = rng.permutation(len(states))[:1000]
    pieces = [states.lean(index), states.subset(index)]
    pieces += make_shards(states, 5, 400).shards
    for piece in pieces:
        codes, n = piece.stream_codes()
        assert codes.tolist() == _codes_by_labels(piece.streams)
        assert n == len(set(piece.streams))
    assert renumber(np.array([7, 7, 2, 9, 2]))[0].tolist() == [0, 0, 1, 2, 1]

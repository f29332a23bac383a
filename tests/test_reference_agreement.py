"""The engine and the plain reference (tests/reference_engine.py) give the same traces.

Random states and streams, random configs inside the learning bounds over every built-in
profile: every field of every record must agree, floats to 1e-9, everything else
exactly. The one allowance is that of docs/engine.md (introduction): where a decision compares a value
within 1e-12 of its threshold, implementations may differ, and that decision's stream
is not compared from there on (the reference measures how close each decision came).

The reference decides one action at a time in pure Python (~3 ms a decision), so the
sizes here are chosen to keep this file well under a minute.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami_engine.config import LEARNED_BOUNDS, PROFILE_NAMES, load_config
from ami_engine.engine import run_records
from reference_engine import (
    STATE_FIELDS,
    draw_states,
    record_differences,
    reference_run,
    stream_key,
    threshold_distance,
)

# docs/engine.md, introduction: closer than this to a threshold, a comparison may go either way.
EITHER_WAY = 1e-12
# Fields copied from the state, which no threshold can explain.
COPIED = frozenset({"t", "stream", "id"})


def compare_runs(states: list[dict], config, max_problems: int = 5) -> tuple[list[str], int]:
    """Differences between the engine's and the reference's records (the first of each
    stream, at most max_problems), and how many streams were left out from a decision
    that sat within EITHER_WAY of a threshold."""
    params = config.to_dict()
    actual = run_records(states, config)
    expected = reference_run(states, params)
    assert len(actual) == len(expected)
    history: dict[tuple, list[float]] = {}
    left_out: set[tuple] = set()
    failed: set[tuple] = set()
    problems = []
    for i, (state, a, e) in enumerate(zip(states, actual, expected)):
        key = stream_key(state.get("stream"))
        past = history.setdefault(key, [])
        if key not in left_out and key not in failed:
            diff = record_differences(a, e)
            if diff:
                nine = {name: state[name] for name in STATE_FIELDS}
                copied_only = all(d.split(":")[0] in COPIED for d in diff)
                if not copied_only and threshold_distance(nine, params, past) < EITHER_WAY:
                    left_out.add(key)
                else:
                    failed.add(key)
                    problems.append(f"record {i} ({config.source}): " + "; ".join(diff) + f"\n  state {state}")
                    if len(problems) >= max_problems:
                        break
        past.append(e["cus_raw"])
    return problems, len(left_out)


def bounded_config(profile: str, learned: dict[str, float], window: int | None):
    changes = dict(learned)
    if window is not None:
        changes["CUS_MEAN_WINDOW"] = window
    return load_config(profile).replace(**changes)


# -- strategies ---------------------------------------------------------------------------

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, allow_infinity=False)
# "1" and 1 are different streams; a missing stream and None are the default stream.
stream_ids = st.sampled_from(["absent", None, "a", "b", "1", 1, 2])
ids = st.one_of(st.integers(-(2**53), 2**53), st.text(alphabet="abcxyz-_019", max_size=6))
times = st.one_of(st.integers(-(10**6), 10**6), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))


@st.composite
def state_records(draw) -> dict:
    state = {name: draw(unit) for name in STATE_FIELDS}
    stream = draw(stream_ids)
    if stream != "absent":
        state["stream"] = stream
    if draw(st.booleans()):
        state["t"] = draw(times)
    if draw(st.booleans()):
        state["id"] = draw(ids)
    return state


@st.composite
def configs(draw):
    profile = draw(st.sampled_from(PROFILE_NAMES))
    learned = {name: draw(st.floats(lo, hi)) for name, (lo, hi) in LEARNED_BOUNDS.items()}
    # The window is not learned; varying it now and then exercises the drift window.
    window = draw(st.one_of(st.none(), st.sampled_from([1, 2, 3])))
    return bounded_config(profile, learned, window)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(states=st.lists(state_records(), min_size=1, max_size=14), config=configs())
def test_engine_matches_reference_on_random_streams_and_configs(states, config):
    problems, _ = compare_runs(states, config)
    assert not problems, "\n".join(problems[:5])


# -- the scenario ranges ------------------------------------------------------------------


def _learned_draw(seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    return {name: rng.uniform(lo, hi) for name, (lo, hi) in LEARNED_BOUNDS.items()}


def _scenario_states(n_each: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    states = []
    for scenario in ("safe", "balanced", "critical", "chaos"):
        part = draw_states(scenario, n_each, 4, rng)
        for s in part:
            s["stream"] = f"{scenario}-{s['stream']}"
        states += part
    return states


@pytest.mark.parametrize(
    ("config", "n_each", "seed"),
    [
        (load_config("base"), 500, 1),
        (bounded_config("production_safe", _learned_draw(1), None), 250, 2),
        (bounded_config("chaos_tuning", _learned_draw(2), None), 250, 3),
        (bounded_config("high_critical", _learned_draw(3), 4), 250, 4),
    ],
    ids=["base", "production_safe-learned", "chaos_tuning-learned", "high_critical-learned-window4"],
)
def test_engine_matches_reference_on_scenario_states(config, n_each, seed):
    problems, left_out = compare_runs(_scenario_states(n_each, seed), config)
    assert not problems, f"{len(problems)} records differ:\n" + "\n".join(problems[:5])
    assert left_out == 0


# ------------------------------------------------------------- the ends of the ranges


def _extreme_case_agrees(params_changes, states):
    config = load_config("base").replace(**params_changes)
    params = dict(config.values)
    expected = reference_run(states, params)
    actual = run_records(states, config)
    for a, e in zip(actual, expected, strict=True):
        assert record_differences(a, e) == []
    return actual


def test_a_temperature_so_small_that_the_softmax_is_one_hot_agrees():
    # (gap between scores) / DE_TEMPERATURE overflows to -inf: the probabilities of all
    # but the best are 0 and add nothing to the entropy (not -inf * 0 = NaN).
    state = {k: 0.5 for k in STATE_FIELDS} | {"risk": 0.3, "compassion": 0.8, "empathy": 0.7}
    for temperature in (1e-310, 5e-324, 1e-300):
        record = _extreme_case_agrees({"DE_TEMPERATURE": temperature}, [state])[0]
        assert record["cus"] is not None and record["reason"] == "divergence"


def test_a_drift_window_longer_than_the_stream_agrees():
    states = draw_states("chaos", 40, 1, random.Random(3))
    for window in (39, 40, 41, 20_000, 2**63 - 1):
        _extreme_case_agrees({"CUS_MEAN_WINDOW": window}, states)

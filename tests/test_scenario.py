"""Scenario generator (docs/engine.md §15, docs/formats.md "States")."""

import numpy as np
import pytest

from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.scenario import PROFILES, generate


@pytest.mark.parametrize("name", ["safe", "balanced", "critical", "chaos"])
def test_every_field_is_drawn_inside_its_profile_range(name):
    states = generate(name, 2000, 3)
    for j, field in enumerate(STATE_FIELDS):
        lo, hi = PROFILES[name][field]
        col = states.values[:, j]
        assert col.min() >= lo and col.max() <= hi
        assert col.max() - col.min() > 0.8 * (hi - lo)  # spread over the range, not a constant


def test_same_seed_same_states_and_other_seed_other_states():
    a, b, c = generate("chaos", 500, 7), generate("chaos", 500, 7), generate("chaos", 500, 8)
    assert np.array_equal(a.values, b.values) and a.streams == b.streams
    assert not np.array_equal(a.values, c.values)


def test_streams_are_consecutive_blocks_with_ids_in_order():
    states = generate("balanced", 10, 1, streams=3)
    assert states.streams == ["balanced-0"] * 4 + ["balanced-1"] * 3 + ["balanced-2"] * 3
    assert states.ids == [f"s{i}" for i in range(10)]


def test_curriculum_is_four_parts_in_order_each_with_its_own_streams():
    states = generate("curriculum", 400, 2, streams=2)
    parts = [s.split("-")[0] for s in states.streams]
    assert parts == ["safe"] * 100 + ["balanced"] * 100 + ["critical"] * 100 + ["chaos"] * 100
    assert len(set(states.streams)) == 8
    risk = states.values[:, STATE_FIELDS.index("risk")]
    assert risk[200:300].min() >= 0.5  # the critical part


def test_unknown_scenario_is_an_error():
    with pytest.raises(ValueError, match="scenario"):
        generate("stormy", 10, 1)

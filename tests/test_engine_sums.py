"""The one metrics type: what ScoreTable.evaluate returns, its figures by name, L under any
weights, and an ordered merge of the sums of parts of the data (docs/learning.md §3)."""

from __future__ import annotations

import numpy as np
import pytest

from ami_engine.config import load_config
from ami_engine.engine import EngineSums, ScoreTable, run
from ami_engine.learning.feedback_metrics import sums_from_columns
from ami_engine.learning.loss import LossWeights, loss
from ami_engine.scenario import generate

BASE = load_config("base")
CONFIGS = [BASE, BASE.replace(J_MIN=0.5, H_MAX=0.4), BASE.replace(SOFT_CLAMP_ALPHA=0.2, CUS_MEAN_THRESHOLD=0.9)]


@pytest.fixture(scope="module")
def states():
    return generate("chaos", 1200, 4, streams=6)


@pytest.fixture(scope="module")
def sums(states):
    return ScoreTable(states, BASE).evaluate(CONFIGS)


def test_evaluate_returns_one_entry_per_config_in_order(states, sums):
    assert isinstance(sums, EngineSums) and len(sums) == len(CONFIGS)
    for config, one in zip(CONFIGS, sums, strict=True):
        assert one == ScoreTable(states, BASE).evaluate([config])[0]
    assert [one.n for one in sums] == [len(states)] * len(CONFIGS)
    assert sums[1:] == EngineSums.concat([sums[1], sums[2]])


def test_the_figures_of_many_configs_are_arrays_of_the_figures_of_each(sums):
    for name in ("fail_safe_rate", "mean_cus", "clamp_distortion", "mean_H", "soft_clamp_rate", "n"):
        many = getattr(sums, name)
        assert isinstance(many, np.ndarray) and many.shape == (len(CONFIGS),)
        assert many.tolist() == [getattr(one, name) for one in sums], name
    assert isinstance(sums[0].fail_safe_rate, float)


def test_the_engines_figures_are_those_of_the_traces_metrics(states, sums):
    """One definition of each figure: the engine's sums and the exact sums of the same
    decisions' columns give the same fail-safe rate, level rates, mean CUS and distortion."""
    for config, one in zip(CONFIGS, sums, strict=True):
        cols = run(states, config)
        traced = sums_from_columns(cols.level, cols.cus, cols.soft_clamp, cols.raw_action, cols.final_action,
                                   cols.human_escalation)
        assert one.fail_safe_rate == traced.fail_safe_rate
        assert one.level_rates == traced.level_rates
        assert one.human_escalation_rate == traced.human_escalation_rate
        assert one.mean_cus == pytest.approx(traced.mean_cus, abs=1e-12)
        assert one.clamp_distortion == pytest.approx(traced.clamp_distortion, abs=1e-12)
        for w in (LossWeights(), LossWeights(1.0, 2.0, 0.5, 0.7)):
            assert one.loss(w) == pytest.approx(traced.loss(w), abs=1e-12)


@pytest.mark.parametrize("weights", [LossWeights(), LossWeights(1.0, 1.0, 0.5, 0.8)])
def test_L_of_many_configs_is_L_of_each(sums, weights):
    many = sums.loss(weights)
    for j, one in enumerate(sums):
        l0, l1, _ = one.level_rates
        assert many[j] == one.figures(weights)["L"] == loss(one.fail_safe_rate, one.mean_cus, one.clamp_distortion,
                                                            weights, level0_rate=l0, level1_rate=l1)


def test_the_figures_of_one_config_as_plain_data(sums):
    figures = sums[0].figures(LossWeights())
    assert list(figures) == ["L", "fail_safe_rate", "mean_cus", "clamp_distortion", "level_rates",
                             "human_escalation_rate", "n"]
    assert all(type(figures[k]) is float for k in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion"))
    assert type(figures["n"]) is int and sum(figures["level_rates"]) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="one config"):
        sums.figures(LossWeights())
    with pytest.raises(TypeError):
        sums[0][0]


def test_merging_the_sums_of_whole_streams_gives_the_sums_of_all(states):
    codes, n_streams = states.stream_codes()
    shards = [states.subset(np.flatnonzero(np.isin(codes, part))) for part in ([0, 3], [1, 4, 5], [2])]
    parts = [ScoreTable(shard, BASE).evaluate(CONFIGS) for shard in shards]
    merged = EngineSums.merge(parts)
    whole = ScoreTable(states, BASE).evaluate(CONFIGS)
    assert merged.n.tolist() == whole.n.tolist()
    assert merged.level_rates[2].tolist() == whole.level_rates[2].tolist()
    assert merged.reason_counts["drift"].tolist() == whole.reason_counts["drift"].tolist()
    np.testing.assert_allclose(merged.to_array(), whole.to_array(), rtol=1e-12, atol=1e-9)


def test_a_merge_adds_in_the_order_given():
    width = EngineSums.empty().to_array().shape[1]
    a, b, c = (EngineSums(np.full((1, width), x)) for x in (1e16, 1.0, -1e16))
    # Floating-point addition is not associative: the order given is the order added.
    assert EngineSums.merge([a, b, c]).to_array()[0, 0] == (1e16 + 1.0) - 1e16
    assert EngineSums.merge([a, c, b]).to_array()[0, 0] == (1e16 - 1e16) + 1.0
    assert EngineSums.merge([a, b, c]) != EngineSums.merge([a, c, b])
    with pytest.raises(ValueError, match="nothing to merge"):
        EngineSums.merge([])
    with pytest.raises(ValueError, match="cannot merge"):
        EngineSums.merge([a, EngineSums.concat([a, b])])


def test_no_configs_give_empty_sums(states):
    empty = ScoreTable(states, BASE).evaluate([])
    assert len(empty) == 0 and empty.n.tolist() == []

"""The loss and its weights: three by default, an optional fourth (the original's non-fail reward)."""

import tomllib

import pytest

from ami_engine.config import load_config
from ami_engine.engine import ScoreTable
from ami_engine.gate import gate_suggestion_file
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.loss import LossWeights, loss
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.scenario import generate

BASE = load_config("base")


def test_three_weights_are_the_default_and_stay_three():
    assert LossWeights().as_list() == [1.5, 1.0, 0.5]
    assert LossWeights.parse("1.5,1.0,0.5") == LossWeights()
    assert LossWeights.parse("1.5, 1.0, 0.5, 0") == LossWeights()
    assert LossWeights.parse("1.5,1.0,0.5,0").as_list() == [1.5, 1.0, 0.5]


def test_a_fourth_weight_is_kept_and_written_out():
    w = LossWeights.parse("1.5,1.0,0.5,0.8")
    assert w.non_fail_reward == 0.8 and w.as_list() == [1.5, 1.0, 0.5, 0.8]
    assert LossWeights.from_list(w.as_list()) == w


@pytest.mark.parametrize("text", ["1,2", "1,2,3,4,5", "1,2,x", "1,2,3,-0.1", "1,2,3,nan"])
def test_bad_weights_are_refused(text):
    with pytest.raises(ValueError, match="weights"):
        LossWeights.parse(text)


def test_L_with_a_fourth_weight_subtracts_the_non_fail_reward():
    w = LossWeights(2.0, 1.0, 0.5, 0.8)
    got = loss(0.25, 0.5, 0.1, w, level0_rate=0.45, level1_rate=0.3)
    assert got == pytest.approx(2.0 * 0.25 + 0.5 + 0.5 * 0.1 - 0.8 * (0.45 + 0.5 * 0.3))
    assert loss(0.25, 0.5, 0.1, LossWeights(2.0, 1.0, 0.5)) == pytest.approx(2.0 * 0.25 + 0.5 + 0.05)
    with pytest.raises(ValueError, match="w4"):
        loss(0.25, 0.5, 0.1, w)


def test_the_learning_loop_computes_L_with_the_fourth_weight():
    states = generate("chaos", 400, 2)
    configs = [BASE, BASE.replace(J_MIN=0.5, H_MAX=0.4)]
    sums = ScoreTable(states, BASE).evaluate(configs)
    w = LossWeights(1.5, 1.0, 0.5, 0.8)
    for j, one in enumerate(sums):
        l0, l1, _ = one.level_rates
        expected = 1.5 * one.fail_safe_rate + one.mean_cus + 0.5 * one.clamp_distortion - 0.8 * (l0 + 0.5 * l1)
        assert one.figures(w)["L"] == pytest.approx(expected)
        assert sums.loss(w)[j] == one.figures(w)["L"]
    assert sums.loss(w)[0] != sums.loss(LossWeights(1.5, 1.0, 0.5))[0]


def _learn(weights):
    data = data_from_scenario("chaos", 600, 3)
    settings = LearnSettings(strategy="random", budget=6, seed=1, batch_size=6, weights=weights)
    return learn(data, BASE, settings)


def test_a_suggestion_made_with_three_weights_is_written_as_before():
    # A zero fourth weight is the same weights (so the same search and the same file).
    assert LossWeights.parse("1.5,1.0,0.5,0") == LossWeights(1.5, 1.0, 0.5)
    meta = _learn(LossWeights(1.5, 1.0, 0.5)).suggestion_toml["meta"]
    assert meta["loss_weights"] == [1.5, 1.0, 0.5]
    for part in ("train", "heldout"):
        for who in ("baseline", "suggestion"):
            m = meta["metrics"][part][who]
            # bit for bit the three-term L, computed in the same order as always
            assert m["L"] == 1.5 * m["fail_safe_rate"] + 1.0 * m["mean_cus"] + 0.5 * m["clamp_distortion"]


def test_the_fourth_weight_flows_into_the_suggestion_and_the_gate(tmp_path):
    w = LossWeights(1.5, 1.0, 0.5, 0.8)
    result = _learn(w)
    meta = result.suggestion_toml["meta"]
    assert meta["loss_weights"] == [1.5, 1.0, 0.5, 0.8]
    for part in ("train", "heldout"):
        for who in ("baseline", "suggestion"):
            m = meta["metrics"][part][who]
            rates = m["level_rates"]
            expected = (1.5 * m["fail_safe_rate"] + m["mean_cus"] + 0.5 * m["clamp_distortion"]
                        - 0.8 * (rates[0] + 0.5 * rates[1]))
            assert m["L"] == pytest.approx(expected, abs=1e-12)
    path = tmp_path / "s.toml"
    path.write_text(dumps_toml(result.suggestion_toml))
    assert tomllib.loads(path.read_text())["meta"]["loss_weights"] == [1.5, 1.0, 0.5, 0.8]
    report = gate_suggestion_file(path)
    heldout = next(c for c in report.checks if c.name == "heldout_loss")
    assert "[1.5, 1.0, 0.5, 0.8]" in heldout.detail
    assert heldout.figure == pytest.approx(meta["metrics"]["heldout"]["suggestion"]["L"], abs=1e-12)


def test_the_report_labels_four_weights_as_four():
    from ami_engine.report._provenance import _weights_label

    assert _weights_label([1.5, 1.0, 0.5]) == "loss weights (w1, w2, w3)"
    assert _weights_label([1.5, 1.0, 0.5, 0.8]) == "loss weights (w1, w2, w3, w4)"

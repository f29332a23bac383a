"""The safety gate: ACCEPT what is safe, REJECT each unsafe case naming the failing check."""

import json

import pytest

from ami_engine.check import check_columns
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.gate import CriticalFloor, gate_suggestion_file, run_gate
from ami_engine.gate.gate import check_bounds, check_critical_floor, check_heldout_loss, check_regression
from ami_engine.io.states import states_from_records
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.loss import LossWeights
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.scenario import generate

BASE = load_config("base")


def test_gate_accepts_base_against_itself_and_lists_every_check():
    report = run_gate(BASE, BASE, held_out=generate("balanced", 500, 3))
    assert report.verdict == "ACCEPT"
    names = [c.name for c in report.checks]
    assert names == ["bounds", "invariants", "determinism", "heldout_loss", "critical_fail_safe_rate",
                     "critical_mean_H", "regression"]
    for check in report.checks:
        assert check.threshold and check.detail
    meta = json.loads(report.to_json())
    assert meta["verdict"] == "ACCEPT" and len(meta["checks"]) == 7


def test_gate_accepts_a_real_suggestion_from_learn():
    result = learn(data_from_scenario("balanced", 2000, 1), BASE, LearnSettings(strategy="random", budget=24, seed=1),
                   gate_fn=run_gate)
    assert result.accepted
    assert result.suggestion_toml["meta"]["gate"]["verdict"] == "ACCEPT"
    assert run_gate(result.suggestion, BASE, held_out=result.held_out).accepted


def test_a_learned_parameter_outside_its_bounds_is_rejected_by_bounds():
    check = check_bounds(BASE.replace(J_MIN=0.97), BASE)
    assert not check.passed and "J_MIN" in check.detail


def test_a_changed_hard_floor_is_rejected_by_bounds():
    check = check_bounds(BASE.replace(J_CRITICAL=0.6), BASE)
    assert not check.passed and "J_CRITICAL" in check.detail


def test_a_config_that_worsens_heldout_loss_is_rejected():
    worse = BASE.replace(J_MIN=0.95, H_MAX=0.15)
    check = check_heldout_loss(worse, BASE, generate("balanced", 1000, 2), LossWeights())
    assert not check.passed and check.name == "heldout_loss"


def test_removing_nearly_all_critical_fail_safes_is_rejected_by_the_critical_floor():
    loose = BASE.replace(J_MIN=0.5, H_MAX=0.5)
    checks = check_critical_floor(loose, BASE, CriticalFloor())
    assert not checks[0].passed and checks[0].name == "critical_fail_safe_rate"
    off = check_critical_floor(loose, BASE, CriticalFloor(factor=0))
    assert all(c.passed for c in off)


def test_a_regression_failure_names_the_state():
    state = {"physical": 0.5, "social": 0.5, "context": 0.5, "risk": 0.2, "compassion": 0.8, "justice": 0.9,
             "harm_sens": 0.2, "responsibility": 0.6, "empathy": 0.8, "id": "calm"}
    level = run(states_from_records([state]), BASE).level[0]
    assert level < 2
    suite = states_from_records([{**state, "expect_level_min": 2}], allow_expect_level=True)
    check = check_regression(BASE, suite)
    assert not check.passed and "calm" in check.detail
    ok = states_from_records([{**state, "expect_level_min": int(level)}], allow_expect_level=True)
    assert check_regression(BASE, ok).passed


def test_the_full_gate_rejects_and_names_each_failed_check():
    report = run_gate(BASE.replace(J_MIN=0.5, H_MAX=0.5, J_CRITICAL=0.6), BASE)
    assert report.verdict == "REJECT"
    assert "bounds" in report.failed and "critical_fail_safe_rate" in report.failed


def test_traces_of_a_hand_made_config_break_invariants_under_stricter_thresholds():
    """Traces decided under chaos_tuning, checked against base: level < 2 records below base's floors."""
    loose = load_config("chaos_tuning")
    cols = run(generate("chaos", 2000, 5), loose)
    assert check_columns(cols, loose) == []
    violations = check_columns(cols, BASE)
    assert violations and {v.invariant for v in violations} >= {2}


def test_gate_on_a_suggestion_file_rebuilds_its_heldout_data(tmp_path):
    result = learn(data_from_scenario("chaos", 1500, 2), BASE, LearnSettings(strategy="sobol", budget=16, seed=2),
                   gate_fn=run_gate)
    path = tmp_path / "s.toml"
    path.write_text(dumps_toml(result.suggestion_toml))
    report = gate_suggestion_file(str(path))
    held = next(c for c in report.checks if c.name == "heldout_loss")
    assert held.figure != "n/a" and "held-out records" in held.detail
    assert report.accepted == result.accepted


def test_gate_refuses_a_suggestion_whose_data_changed(tmp_path):
    import tomli_w

    doc = {"extends": "base", "J_MIN": 0.8, "meta": {"data": {"source": "scenario", "sha256": "0" * 64,
                                                              "scenario": {"name": "chaos", "n": 100, "seed": 1,
                                                                           "streams": 8}},
                                                     "split": {"seed": 1, "train_fraction": 0.8}}}
    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(doc))
    with pytest.raises(ValueError, match="SHA-256"):
        gate_suggestion_file(str(path))

"""The package root is the public API: a tiny end-to-end run that uses only its names."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import ami_engine as ae


def test_every_public_name_resolves():
    for name in ae.__all__:
        assert getattr(ae, name) is not None, name
    assert set(ae.__all__) <= set(dir(ae))


def test_the_io_layer_names_its_public_api():
    import ami_engine.io as io

    for name in io.__all__:
        assert getattr(io, name) is not None, name
    assert io.read_traces is ae.read_traces and io.InputError is ae.InputError


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        ae.no_such_name  # noqa: B018


def test_importing_the_package_loads_no_engine():
    code = ("import sys, ami_engine; "
            "print(sorted(m for m in ('numpy', 'msgspec', 'numba', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_decide_run_traces_learn_and_gate_from_the_root(tmp_path):
    cfg = ae.load_config("base")
    states = ae.generate("chaos", 240, 1, 4)

    # one decision is the record the batch path writes for the same state
    cols = ae.run(states, cfg)
    single = ae.decide(dict(zip(ae.STATE_FIELDS, states.values[0].tolist(), strict=True)), cfg)
    assert single["level"] == int(cols.level[0])
    assert single["final_action"] == cols.final_action[0].tolist()

    # traces written and read back
    path = tmp_path / "traces.jsonl"
    ae.write_traces(path, cols, states, config_id=cfg.config_id, model=ae.ENGINE_MODEL, chaos=True)
    back = ae.read_traces(path)
    assert len(back) == len(states)
    np.testing.assert_array_equal(back.level, cols.level)
    assert back.chaos.all()

    # a score table evaluates configs on the states without writing traces
    table = ae.ScoreTable(states, cfg)
    again = ae.ScoreTable(states, cfg)
    np.testing.assert_array_equal(np.asarray(table.evaluate([cfg])), np.asarray(again.evaluate([cfg])))

    # learn with a strategy object and an in-memory study, through the gate
    strategy = ae.make_strategy("random", ae.SearchSpace(), seed=3)
    settings = ae.LearnSettings(strategy=strategy, budget=6, batch_size=3, seed=3)
    assert settings.strategy == "random" and settings.strategy_object is strategy
    data = ae.data_from_scenario("chaos", 400, seed=3, streams=4)
    result = ae.learn(data, cfg, settings, study=ae.InMemoryStorage(), gate_fn=ae.run_gate)
    assert isinstance(result, ae.LearnResult)
    assert len(result.history) == 2  # two batches of three
    assert result.suggestion_toml["meta"]["strategy"] == "random"
    assert result.status in ("accepted", "rejected", "no improvement")
    if result.gate is not None:
        assert isinstance(result.gate, ae.GateReport)
        assert result.accepted == result.gate.accepted


def test_a_bad_config_is_an_input_error_caught_as_the_package_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("J_MIN = 7\n")
    with pytest.raises(ae.AmiEngineError) as caught:
        ae.load_config(str(bad))
    assert isinstance(caught.value, ae.InputError)
    assert isinstance(caught.value, ae.ConfigError)
    assert caught.value.exit_code == 2
    assert "J_MIN" in str(caught.value)


"""The states learning reads stay lean: one object per stream label, stream codes worked
out once, and the same states as before."""

from __future__ import annotations

import numpy as np
import pytest

from ami_engine import ENGINE_MODEL
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.io.stateset import StateSet
from ami_engine.io.traces import read_trace_states, write_traces
from ami_engine.scenario import generate

BASE = load_config("base")


def test_parquet_trace_states_share_one_label_per_stream(tmp_path):
    states = generate("chaos", 2000, 5, streams=7)
    cols = run(states, BASE)
    for name in ("t.jsonl", "t.parquet"):
        write_traces(tmp_path / name, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    lean, plain = read_trace_states(tmp_path / "t.parquet").states, read_trace_states(tmp_path / "t.jsonl").states
    assert lean.streams == plain.streams == states.streams
    assert lean.t == plain.t and lean.ids == plain.ids
    assert np.array_equal(lean.values, plain.values)
    assert len({id(s) for s in lean.streams}) == 7  # one object per stream, not per record


def test_stream_codes_are_worked_out_once_and_handed_out_as_copies():
    streams = ["a", 1, "1", "a", 1, "b"]
    states = StateSet(np.full((6, 9), 0.5), streams, [None] * 6, [None] * 6)
    codes, n = states.stream_codes()
    assert codes.tolist() == [0, 1, 2, 0, 1, 3] and n == 4  # "1" and 1 are different streams
    codes[:] = 9
    again, _ = states.stream_codes()
    assert again.tolist() == [0, 1, 2, 0, 1, 3]
    assert "_codes" not in repr(states)


def test_learn_takes_scenarios_of_millions_of_states_on_a_24_gib_machine(monkeypatch):
    from ami_engine import scenario

    monkeypatch.setattr(scenario, "physical_memory", lambda: 24 << 30)
    scenario.check_scenario_size(10_000_000, 1000, bytes_per_state=scenario.LEARN_BYTES_PER_STATE)
    with pytest.raises(ValueError, match="30000000 states need about 29 GiB of memory, more than the 24 GiB"):
        scenario.check_scenario_size(30_000_000, 1000, bytes_per_state=scenario.LEARN_BYTES_PER_STATE)

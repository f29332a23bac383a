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


def test_stream_codes_are_worked_out_once_and_shared_read_only():
    streams = ["a", 1, "1", "a", 1, "b"]
    states = StateSet(np.full((6, 9), 0.5), streams, [None] * 6, [None] * 6)
    codes, n = states.stream_codes()
    assert codes.tolist() == [0, 1, 2, 0, 1, 3] and n == 4  # "1" and 1 are different streams
    with pytest.raises(ValueError, match="read-only"):
        codes[:] = 9
    again, _ = states.stream_codes()
    assert again is codes and again.tolist() == [0, 1, 2, 0, 1, 3]
    given = np.array([0, 0, 1, 1, 2, 2])
    assert states.with_codes((given, 3)).stream_codes()[0] is given and not given.flags.writeable
    assert "_codes" not in repr(states)


def test_learn_takes_scenarios_of_millions_of_states_on_a_24_gib_machine(monkeypatch):
    from ami_engine import scenario

    monkeypatch.setattr(scenario, "physical_memory", lambda: 24 << 30)
    scenario.check_scenario_size(10_000_000, 1000, bytes_per_state=scenario.LEARN_BYTES_PER_STATE)
    with pytest.raises(ValueError, match="30000000 states need about 29 GiB of memory, more than the 24 GiB"):
        scenario.check_scenario_size(30_000_000, 1000, bytes_per_state=scenario.LEARN_BYTES_PER_STATE)


def test_learning_from_parquet_traces_keeps_t_and_id_only_for_the_rows_that_need_them(tmp_path):
    from ami_engine.io.parquet import trace_keys
    from ami_engine.learning.data import data_from_traces_file
    from ami_engine.learning.split import split_states

    states = generate("chaos", 3000, 5, streams=9)
    states = StateSet(states.values, states.streams, [10.5 * i if i % 7 else None for i in range(3000)],
                      [f"r{i}" if i % 5 else None for i in range(3000)])
    cols = run(states, BASE)
    path = tmp_path / "t.parquet"
    write_traces(path, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    full = read_trace_states(path).states
    data = data_from_traces_file(str(path))
    assert set(data.states.t) == {None} and set(data.states.ids) == {None}  # not kept: they are the bulk
    assert data.states.streams == full.streams and np.array_equal(data.states.values, full.values)
    split = split_states(data.states, 3, 0.8)
    for positions in (split.held_out, split.train, np.array([0, 2999]), np.array([], dtype=np.int64)):
        got, want = data.subset(positions), full.subset(positions)
        assert got.t == want.t and got.ids == want.ids and got.streams == want.streams
        assert np.array_equal(got.values, want.values)
    with pytest.raises(ValueError, match="ascending"):
        trace_keys(path, np.array([5, 3]))
    with pytest.raises(ValueError, match="3001 asked for"):
        trace_keys(path, np.arange(3001))


@pytest.mark.parametrize("limit", [150, 10_000])  # a cut, and all of the held-out data
def test_the_reports_traces_of_lean_held_out_data_carry_their_t_and_id(tmp_path, limit):
    from ami_engine.learning.data import data_from_traces_file
    from ami_engine.learning.split import split_states
    from ami_engine.workflow import report_traces_states

    states = generate("chaos", 3000, 6, streams=12)
    states = StateSet(states.values, states.streams, [None if i % 3 == 0 else i + 0.25 for i in range(3000)],
                      [f"x{i}" for i in range(3000)])
    cols = run(states, BASE)
    for name in ("t.jsonl", "t.parquet"):
        write_traces(tmp_path / name, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    eager, lean = data_from_traces_file(str(tmp_path / "t.jsonl")), data_from_traces_file(str(tmp_path / "t.parquet"))
    assert eager.keys is None and lean.keys is not None
    split = split_states(eager.states, 1, 0.8)
    want, want_note = report_traces_states(eager.subset(split.held_out), limit)
    held = lean.subset(split.held_out, keys=False)
    got, got_note = report_traces_states(held, limit, keys=lambda pos: lean.subset(split.held_out[pos]))
    assert got_note == want_note and (got_note is None) == (limit == 10_000)
    assert got.t == want.t and got.ids == want.ids and got.streams == want.streams
    assert np.array_equal(got.values, want.values)


def test_trace_states_read_the_same_when_the_footers_count_is_not_trusted(tmp_path, monkeypatch):
    from ami_engine.io import parquet

    states = generate("chaos", 2500, 4, streams=5)
    write_traces(tmp_path / "t.parquet", run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL,
                 chaos=False)
    whole = read_trace_states(tmp_path / "t.parquet").states
    monkeypatch.setattr(parquet, "_PREALLOCATE_ROWS", 7)  # the matrix grows as the rows come
    grown = read_trace_states(tmp_path / "t.parquet").states
    assert np.array_equal(grown.values, whole.values) and grown.values.shape == (2500, 9)


def test_traces_changed_after_learning_read_them_give_no_report_keys(tmp_path):
    from ami_engine.learning.data import data_from_traces_file
    from ami_engine.learning.settings import LearnError

    states = generate("chaos", 1000, 2, streams=4)
    path = tmp_path / "t.parquet"
    write_traces(path, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    data = data_from_traces_file(str(path))
    assert data.subset(np.arange(10)).ids == states.ids[:10]
    other = StateSet(states.values, states.streams, states.t, [f"other{i}" for i in range(1000)])
    write_traces(path, run(other, BASE), other, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    with pytest.raises(LearnError, match="changed since it was read for learning"):
        data.subset(np.arange(10))

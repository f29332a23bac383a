"""States' values kept in a temporary file (io.spill): learning from Parquet traces reads
them from there, a shard or a part at a time, with the same bytes as from memory."""

import dataclasses
import gc
import glob
import os
import shutil
import tempfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from ami_engine import ENGINE_MODEL
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.io.files import InputError
from ami_engine.io.parquet import read_trace_states
from ami_engine.io.parquet import write_traces as write_parquet_traces
from ami_engine.io.spill import PREFIX, RowSpill, SpilledRows, column, let_go, rows_kept_alike, take_rows
from ami_engine.io.states import read_states, write_states
from ami_engine.io.stateset import Nones, StateSet
from ami_engine.learning import offline_loop
from ami_engine.learning.data import data_from_states_file, data_from_traces_file
from ami_engine.learning.needless import needless_fail_safes
from ami_engine.learning.settings import LearnSettings
from ami_engine.learning.shards import make_shards
from ami_engine.scenario import generate

BASE = load_config("base")


@pytest.fixture()
def spill_dir(tmp_path, monkeypatch):
    """The temporary folder the spilled files go to, watched by the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _spilled(folder):
    return sorted(glob.glob(os.path.join(folder, PREFIX + "*")))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    states = generate("chaos", 4000, seed=7, streams=30)
    path = tmp_path_factory.mktemp("spill") / "t.parquet"
    write_parquet_traces(path, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    return path


def plain(figures):
    return {k: v for k, v in figures.items() if not k.startswith("_")}


def _resident_pages(values):
    """Pages of a mapped array resident in this process (its mapping's lines in smaps)."""
    start = values.ctypes.data
    with open("/proc/self/smaps", encoding="ascii") as fh:
        lines = fh.read().splitlines()
    for i, line in enumerate(lines):
        low, high = (int(x, 16) for x in line.split()[0].split("-")) if "-" in line.split()[0] else (0, 0)
        if low <= start < high:
            rss = next(v for v in lines[i + 1:] if v.startswith("Rss:"))
            return int(rss.split()[1]) // 4
    raise AssertionError("the mapping is not in smaps")


def test_rows_written_block_by_block_come_back_mapped_and_the_file_goes_with_the_last_view(spill_dir):
    rng = np.random.default_rng(1)
    blocks = [rng.random((n, 9)) for n in (5, 0, 1000, 37)]
    spill = RowSpill(9)
    for block in blocks:
        spill.add(block)
    values = spill.finish()
    assert isinstance(values, np.memmap) and not values.flags.writeable
    assert values.tobytes() == np.concatenate(blocks).tobytes()
    assert len(_spilled(spill_dir)) == 1
    view = values[10:20]
    del values
    gc.collect()
    assert len(_spilled(spill_dir)) == 1  # a view still reads it
    del view
    gc.collect()
    assert _spilled(spill_dir) == []


def test_no_rows_give_an_empty_array_and_no_file_and_an_abandoned_spill_leaves_none(spill_dir):
    empty = RowSpill(9).finish()
    assert empty.shape == (0, 9) and not isinstance(empty, np.memmap)
    spill = RowSpill(9)
    spill.add(np.zeros((3, 9)))
    with pytest.raises(ValueError, match="expected"):
        spill.add(np.zeros((3, 8)))
    spill.abandon()
    assert _spilled(spill_dir) == []


def test_a_full_disk_is_an_error_naming_the_file_and_what_it_is_for_and_leaves_nothing(spill_dir, monkeypatch):
    real = tempfile.mkstemp

    def on_a_full_disk(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, fd)
        os.close(full)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", on_a_full_disk)
    for rows in (10, 100_000):  # caught when written, or when the last of it is
        spill = RowSpill(9)
        with pytest.raises(OSError) as caught:
            spill.add(np.zeros((rows, 9)))
            spill.finish()
        assert caught.value.filename == spill.path and "set TMPDIR" in str(caught.value)
        assert "No space left" in str(caught.value) and _spilled(spill_dir) == []


def test_taking_rows_copies_them_and_lets_the_mapped_pages_go(spill_dir):
    rng = np.random.default_rng(2)
    data = rng.random((1 << 20, 8))  # 64 MB, 16,384 pages
    spill = RowSpill(8)
    spill.add(data)
    values = spill.finish()
    index = np.sort(rng.choice(data.shape[0], 5000, replace=False))
    taken = take_rows(values, index)
    assert type(taken) is np.ndarray and taken.tobytes() == data[index].tobytes()
    piece = take_rows(values, slice(100, 200))
    assert type(piece) is np.ndarray and not np.shares_memory(piece, values)
    assert piece.tobytes() == data[100:200].tobytes()
    for j in (0, 7):
        assert column(values, j, block_rows=100_000).tobytes() == np.ascontiguousarray(data[:, j]).tobytes()
    float(values.sum())  # every page read
    assert _resident_pages(values) > 15_000
    let_go(values)
    assert _resident_pages(values) < 100
    assert column(data, 3) is not None and np.shares_memory(column(data, 3), data)  # in memory: a view


def test_rows_kept_alike_go_to_a_file_of_their_own_when_the_values_are_in_one(spill_dir):
    rng = np.random.default_rng(3)
    data = rng.random((5000, 9))
    spill = RowSpill(9)
    spill.add(data)
    values = spill.finish()
    index = np.sort(rng.choice(5000, 1234, replace=False))[::-1].copy()  # any order
    kept = rows_kept_alike(values, index, block_rows=100)
    assert isinstance(kept, np.memmap) and kept.filename != values.filename
    assert kept.tobytes() == data[index].tobytes() and len(_spilled(spill_dir)) == 2
    in_memory = rows_kept_alike(data, index)
    assert type(in_memory) is np.ndarray and in_memory.tobytes() == data[index].tobytes()
    states = StateSet(values, ["a"] * 5000, Nones(5000), Nones(5000))
    lean = states.lean(index)
    assert isinstance(lean.values, np.memmap) and lean.values.tobytes() == data[index].tobytes()
    del kept, lean
    gc.collect()
    assert len(_spilled(spill_dir)) == 1


def test_a_spilled_file_replaced_under_the_same_name_is_refused(spill_dir):
    spill = RowSpill(9)
    spill.add(np.ones((10, 9)))
    values = spill.finish()
    rows = SpilledRows.of(values)
    assert rows is not None and rows.open().tobytes() == values.tobytes()
    assert SpilledRows.of(values[2:5]) is None and SpilledRows.of(np.ones((10, 9))) is None
    other = spill_dir / "other"
    np.ones((10, 9)).tofile(other)
    shutil.move(other, rows.path)  # the same size, another file
    with pytest.raises(OSError, match="not the states file"):
        rows.open()


def test_parquet_trace_states_spilled_are_the_states_read_into_memory(traces, spill_dir):
    here = read_trace_states(traces, keys=False)
    there = read_trace_states(traces, keys=False, spill=True)
    assert isinstance(there.states.values, np.memmap) and not isinstance(here.states.values, np.memmap)
    assert there.states.values.tobytes() == here.states.values.tobytes()
    assert there.states.streams == here.states.streams
    assert (there.n_records, there.missing, there.first_missing) == (here.n_records, here.missing, here.first_missing)
    assert there.lines.tobytes() == here.lines.tobytes()


def test_a_parquet_states_file_spilled_gives_the_states_read_into_memory(tmp_path, spill_dir):
    states = generate("chaos", 3000, seed=9, streams=7)
    path = tmp_path / "s.parquet"
    write_states(path, states)
    here, there = read_states(path), read_states(path, spill=True)
    assert isinstance(there.values, np.memmap) and there.values.tobytes() == here.values.tobytes()
    assert (there.streams, there.t, there.ids) == (here.streams, here.t, here.ids)
    data = data_from_states_file(str(path))
    assert isinstance(data.states.values, np.memmap) and data.states.values.tobytes() == here.values.tobytes()
    with pytest.raises(InputError, match="no states"):
        empty = tmp_path / "empty.parquet"
        pq.write_table(pq.read_table(path).slice(0, 0), empty)
        read_states(empty, spill=True)
    del data, there
    gc.collect()
    assert _spilled(spill_dir) == []


def test_a_bad_value_while_spilling_is_the_same_error_and_leaves_no_file(traces, tmp_path, spill_dir):
    table = pq.read_table(traces)
    state = table.column("state").combine_chunks()
    risk = state.field("risk").to_numpy(zero_copy_only=False).copy()
    risk[2345] = 1.5
    fields = [state.field(i) if state.type.field(i).name != "risk" else risk for i in range(state.type.num_fields)]
    import pyarrow as pa

    bad_state = pa.StructArray.from_arrays(fields, fields=list(state.type))
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("state"), "state", bad_state), bad,
                   row_group_size=500)
    with pytest.raises(InputError) as in_memory:
        read_trace_states(bad, keys=False)
    with pytest.raises(InputError) as spilled:
        read_trace_states(bad, keys=False, spill=True)
    assert str(spilled.value) == str(in_memory.value) and "row 2346" in str(spilled.value)
    assert _spilled(spill_dir) == []


def test_shard_recipes_build_the_shards_the_spilled_states_give(traces, spill_dir):
    data = data_from_traces_file(str(traces))
    assert isinstance(data.states.values, np.memmap)
    for seed in (1, 2):
        sharding = make_shards(data.states, seed, 300, np.arange(0, len(data.states), 2))
        for i in range(len(sharding)):
            made, built = sharding.shards[i], sharding.shards.recipe(i).build()
            assert built.values.tobytes() == made.values.tobytes() and built.streams == made.streams
            for a, b in zip(made.stream_codes(), built.stream_codes(), strict=True):
                assert np.array_equal(a, b)
    in_memory = dataclasses.replace(data.states, values=np.array(data.states.values))
    assert make_shards(in_memory, 1, 300).shards.recipe(0) is None


def test_learning_from_spilled_states_gives_the_suggestion_of_the_states_in_memory(traces, spill_dir):
    data = data_from_traces_file(str(traces))
    values = data.states.values
    assert isinstance(values, np.memmap)
    in_memory = dataclasses.replace(data, states=dataclasses.replace(data.states, values=np.array(values)))
    settings = LearnSettings(strategy="tpe", budget=40, seed=3, batch_size=8, rung0=300)
    spilled = offline_loop.learn(data, BASE, settings)
    held = offline_loop.learn(in_memory, BASE, settings)
    drop = {"created"}
    assert {k: v for k, v in spilled.suggestion_toml["meta"].items() if k not in drop} == \
        {k: v for k, v in held.suggestion_toml["meta"].items() if k not in drop}
    assert spilled.suggestion.kernel_row() == held.suggestion.kernel_row()
    assert plain(spilled.needless) == plain(held.needless)
    assert spilled.history == held.history
    # The pass over all the states (used where the search's own decisions cannot tell).
    whole = needless_fail_safes(data.states, BASE, spilled.suggestion)
    assert plain(whole) == plain(needless_fail_safes(in_memory.states, BASE, spilled.suggestion))
    del data, values, spilled
    gc.collect()


def test_learn_with_no_usable_temporary_folder_says_so_and_writes_nothing(traces, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ami_engine.cli import app

    missing = tmp_path / "no-such-folder"
    monkeypatch.setattr(tempfile, "tempdir", str(missing))
    out = tmp_path / "s.toml"
    result = CliRunner().invoke(app, ["learn", "--traces", str(traces), "--budget", "5", "--out", str(out)])
    assert result.exit_code == 2 and str(missing) in result.output and "no such file or directory" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_states_read_without_keys_have_the_stream_labels_of_the_full_reading(tmp_path):
    """The lean reading (no t or id kept) makes the stream labels from each batch's distinct
    values: the same labels, one object per label, "1" and 1 apart, None for null."""
    import pyarrow as pa

    folder = tmp_path / "set"
    folder.mkdir()
    first = generate("chaos", 900, seed=1, streams=6)
    labels = ["1" if c == 0 else None if c == 1 else f"s{c}" for c in first.stream_codes()[0].tolist()]
    first = StateSet(first.values, labels, first.t, first.ids)
    second = generate("chaos", 700, seed=2, streams=4)
    second = StateSet(second.values, [int(c) for c in second.stream_codes()[0].tolist()], second.t, second.ids)
    for name, states in (("day=1", first), ("day=2", second)):
        path = folder / f"{name}.parquet"
        write_parquet_traces(path, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL,
                             chaos=False)
    # Some records without a state (null), as the original engine's traces may have.
    table = pq.read_table(folder / "day=1.parquet")
    state = table.column("state").combine_chunks()
    keep = np.ones(len(state), dtype=bool)
    keep[[3, 4, 500]] = False
    nulled = pa.StructArray.from_arrays([state.field(i) for i in range(state.type.num_fields)],
                                        fields=list(state.type), mask=pa.array(~keep))
    pq.write_table(table.set_column(table.schema.get_field_index("state"), "state", nulled),
                   folder / "day=1.parquet", row_group_size=128)
    lean, full = read_trace_states(folder, keys=False), read_trace_states(folder, keys=True)
    assert lean.states.streams == full.states.streams and len(lean.states) == 1597
    assert (lean.missing, lean.first_missing) == (full.missing, full.first_missing) == (3, 4)
    assert lean.states.values.tobytes() == full.states.values.tobytes()
    found = {(type(s), s): id(s) for s in lean.states.streams}
    assert len({id(s) for s in lean.states.streams}) == len(found)  # one object per label
    assert (str, "1") in found and (int, 1) in found and (type(None), None) in found

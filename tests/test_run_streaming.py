"""`run` decides and writes its traces slice by slice: the files are the same bytes as those
written from one run over all the states, in Parquet and JSON lines; and a temporary folder
of parts left by a killed `run --cluster` is cleared by a later run, and nothing else is."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ami_engine import ENGINE_MODEL
from ami_engine.cli import app
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.engine import write as write_module
from ami_engine.engine._batch import StreamRun, pre_decisions, run_slices
from ami_engine.engine.write import write_run
from ami_engine.io import parquet
from ami_engine.io.files import InputError, part_file, remove_stale_temps, temp_folder_for
from ami_engine.io.stateset import StateSet
from ami_engine.io.traces import encode_traces
from ami_engine.scenario import generate

BASE = load_config("base")
CHAOS = BASE.replace(CUS_MEAN_WINDOW=7, DELTA_CUS_THRESHOLD=0.05)
COLUMNS = ("cus", "cus_raw", "delta_cus", "cus_mean", "confidence", "delta_confidence", "raw_action", "final_action",
           "soft_clamp", "human_escalation", "level", "reason", "W", "J", "H", "C")
GROUP = 64  # rows per row group in these tests, so that a few hundred states make many


def interleaved(n: int = 1000, seed: int = 4) -> StateSet:
    """States whose streams take turns (every slice holds part of every stream), with own
    times for some and none for others, and ids."""
    rng = np.random.default_rng(seed)
    streams = [f"s{int(k)}" for k in rng.integers(0, 11, n)]
    t = [None if i % 3 else 1000 + i for i in range(n)]
    return StateSet(values=rng.uniform(0, 1, (n, 9)), streams=streams, t=t, ids=[f"r{i}" for i in range(n)])


@pytest.fixture
def small_groups(monkeypatch):
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", GROUP)


@pytest.fixture
def slices_seen(monkeypatch):
    """The slices run_slices hands out while a test writes."""
    seen: list[slice] = []

    def counted(states, config, rows, pres=None):
        for part, cols in run_slices(states, config, rows, pres):
            seen.append(part)
            yield part, cols

    monkeypatch.setattr(write_module, "run_slices", counted)
    return seen


def one_shot_parquet(path, states, config, chaos=False):
    parquet.write_traces(path, run(states, config), states, config_id=config.config_id, model=ENGINE_MODEL,
                         chaos=chaos)
    return path.read_bytes()


def one_shot_jsonl(states, config, chaos=False):
    return b"".join(encode_traces(run(states, config), states, config_id=config.config_id, model=ENGINE_MODEL,
                                  chaos=chaos))


@pytest.mark.parametrize("rows", [1, 37, 100, 999, 5000])
def test_slices_give_the_columns_of_one_run(rows):
    states = interleaved()
    whole = run(states, CHAOS)
    at = 0
    for part, cols in run_slices(states, CHAOS, rows):
        assert part.start == at and len(cols) == part.stop - part.start <= rows
        for name in COLUMNS:
            assert np.array_equal(getattr(cols, name), getattr(whole, name)[part], equal_nan=True), name
        assert cols.t == whole.t[part]  # a state's own t, else its position in all the states
        at = part.stop
    assert at == len(states)
    with pytest.raises(ValueError, match="rows"):
        next(run_slices(states, CHAOS, 0))


@pytest.mark.parametrize("make", [interleaved, lambda: generate("curriculum", 1000, 3, streams=7)])
def test_parquet_written_slice_by_slice_is_the_one_shot_file(tmp_path, small_groups, slices_seen, make):
    states = make()
    expected = one_shot_parquet(tmp_path / "one.parquet", states, CHAOS, chaos=True)
    counts = write_run(tmp_path / "sliced.parquet", states, CHAOS, chaos=True, rows=100)
    assert (tmp_path / "sliced.parquet").read_bytes() == expected
    # 100 rows is rounded up to whole row groups: slices of two groups each.
    assert [p.start for p in slices_seen] == list(range(0, 1000, 2 * GROUP))
    assert pq.ParquetFile(tmp_path / "sliced.parquet").metadata.num_row_groups == -(-1000 // GROUP)
    assert counts.tolist() == np.bincount(run(states, CHAOS).level, minlength=3).tolist()


def test_a_later_slice_that_widens_the_layout_gives_the_one_shot_file(tmp_path, small_groups, slices_seen):
    # The first slices have integer times, a later one a fractional time: the writer starts
    # again with float times, and the decisions are gone through again from the first.
    states = interleaved(600)
    states.t[450] = 12.5
    expected = one_shot_parquet(tmp_path / "one.parquet", states, BASE)
    counts = write_run(tmp_path / "sliced.parquet", states, BASE, rows=GROUP)
    assert (tmp_path / "sliced.parquet").read_bytes() == expected
    assert len(slices_seen) > len(range(0, 600, GROUP))  # gone through more than once
    assert counts.tolist() == np.bincount(run(states, BASE).level, minlength=3).tolist()  # counted once


def test_a_stream_of_two_types_is_refused_naming_the_record_as_before(tmp_path, small_groups):
    states = interleaved(400)
    states.streams[300] = 7
    with pytest.raises(InputError) as one:
        one_shot_parquet(tmp_path / "one.parquet", states, BASE)
    with pytest.raises(InputError) as sliced:
        write_run(tmp_path / "sliced.parquet", states, BASE, rows=GROUP)
    assert str(sliced.value) == str(one.value).replace("one.parquet", "sliced.parquet")
    assert "sliced.parquet:301: stream:" in str(sliced.value)
    assert sorted(os.listdir(tmp_path)) == []


def test_slices_that_are_not_whole_row_groups_in_order_are_refused_and_nothing_is_written(tmp_path, small_groups):
    states = interleaved(300)
    parts = list(run_slices(states, BASE, 100))  # the second begins inside a row group
    write = lambda given: parquet.write_decided(tmp_path / "x.parquet", lambda: given, states,  # noqa: E731
                                                config_id="c", model=ENGINE_MODEL, chaos=False)
    for given, problem in ((parts, "does not begin"), (parts[:1], "first 100 of 300"),
                           (list(run_slices(states, BASE, 2 * GROUP))[1:], "does not begin")):
        with pytest.raises(ValueError, match=problem):
            write(given)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.gz"])
def test_jsonl_written_slice_by_slice_is_the_one_shot_file(tmp_path, slices_seen, name):
    states = interleaved()
    expected = one_shot_jsonl(states, CHAOS, chaos=True)
    counts = write_run(tmp_path / name, states, CHAOS, chaos=True, rows=77)
    data = (tmp_path / name).read_bytes()
    assert (gzip.decompress(data) if name.endswith(".gz") else data) == expected
    assert len(slices_seen) == -(-1000 // 77)
    assert counts.tolist() == np.bincount(run(states, CHAOS).level, minlength=3).tolist()


def test_no_states_write_what_the_one_shot_writers_write(tmp_path):
    empty = StateSet(values=np.empty((0, 9)), streams=[], t=[], ids=[])
    assert write_run(tmp_path / "e.jsonl", empty, BASE).tolist() == [0, 0, 0]
    assert (tmp_path / "e.jsonl").read_bytes() == one_shot_jsonl(empty, BASE) == b""
    write_run(tmp_path / "e.parquet", empty, BASE)
    assert (tmp_path / "e.parquet").read_bytes() == one_shot_parquet(tmp_path / "one.parquet", empty, BASE)


def test_the_run_command_writes_the_one_shot_files(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", GROUP)
    monkeypatch.setattr(write_module, "SLICE_ROWS", 3 * GROUP)
    states = generate("chaos", 700, 3, streams=5)
    runner = CliRunner()
    for name in ("t.parquet", "t.jsonl"):
        result = runner.invoke(app, ["run", "--scenario", "chaos", "--n", "700", "--seed", "3", "--streams", "5",
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        counts = np.bincount(run(states, BASE).level, minlength=3)
        assert f"(L0 {counts[0]}, L1 {counts[1]}, L2 {counts[2]})" in result.stderr
    assert (tmp_path / "t.parquet").read_bytes() == one_shot_parquet(tmp_path / "one.parquet", states, BASE)
    assert (tmp_path / "t.jsonl").read_bytes() == one_shot_jsonl(states, BASE)


# ------------------------------------------------------- stale temporary folders of parts


def test_stale_folders_of_parts_are_removed_and_nothing_else(tmp_path):
    dead, dead_worker = 999999999, 999999998  # above any process id Linux hands out
    mark = ".t.parquet.ami-tmp-"

    def folder(name, files=("part-00000.parquet", "part-00001.parquet")):
        path = tmp_path / name
        path.mkdir()
        for f in files:
            (path / f).write_bytes(b"PAR1")
        return path

    stale = folder(f"{mark}{dead}-0a1b2c3d", ("part-00000.parquet", "part-00001.parquet",
                                              f".part-00002.parquet.ami-tmp-{dead_worker}-00ff00ff"))
    empty = folder(f"{mark}{dead}-0a1b2c3e", ())
    live = folder(f"{mark}{os.getppid()}-0a1b2c3d")  # its run is still going
    foreign = folder(f"{mark}{dead}-1a1b2c3d", ("part-00000.parquet", "notes.txt"))
    nested = folder(f"{mark}{dead}-2a1b2c3d")
    (nested / "part-00002.parquet").mkdir()
    writing = folder(f"{mark}{dead}-3a1b2c3d", (f".part-00000.parquet.ami-tmp-{os.getppid()}-00ff00ff",))
    elsewhere = folder("elsewhere")
    linked = folder(f"{mark}{dead}-4a1b2c3d", ("part-00000.parquet",))
    (linked / "part-00001.parquet").symlink_to(elsewhere / "part-00000.parquet")
    (tmp_path / f"{mark}{dead}-5a1b2c3d").symlink_to(elsewhere, target_is_directory=True)
    plain = folder(f"t.parquet.ami-tmp-{dead}-6a1b2c3d")  # not hidden: not a name we give

    result = CliRunner().invoke(app, ["run", "--scenario", "safe", "--n", "5", "--out", str(tmp_path / "t.parquet")])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and not empty.exists()
    for kept in (live, foreign, nested, writing, linked, elsewhere, plain):
        assert kept.is_dir() and any(kept.iterdir()), kept
    assert sorted(p.name for p in elsewhere.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert (tmp_path / f"{mark}{dead}-5a1b2c3d").is_symlink()
    assert remove_stale_temps(tmp_path) == []


def test_the_folder_of_parts_run_cluster_makes_is_cleared_once_its_process_is_gone(tmp_path, monkeypatch):
    from ami_engine.io import _atomic

    target = tmp_path / "x.parquet"
    monkeypatch.setattr(_atomic.os, "getpid", lambda: 999999999)  # as if made by a process now gone
    folder = temp_folder_for(target)
    monkeypatch.undo()
    for p in range(3):
        part_file(folder, p).write_bytes(b"PAR1")
    assert folder.is_dir() and folder.parent == tmp_path and folder.name.startswith(".x.parquet.")
    assert remove_stale_temps(tmp_path) == [folder] and list(tmp_path.iterdir()) == []


def test_pre_decisions_made_elsewhere_are_checked_before_they_index_anything():
    states = generate("chaos", 300, seed=4, streams=3)
    good = pre_decisions(states.values, BASE)
    cols = StreamRun(states, [BASE]).decide(slice(0, 300), good)[0]
    assert np.array_equal(cols.level, run(states, BASE).level)
    for field, value in (("a", 10**6), ("level", 3), ("reason", 100)):
        bad = pre_decisions(states.values, BASE)
        getattr(bad, field)[0, 7] = value
        with pytest.raises(ValueError, match="out of range"):
            StreamRun(states, [BASE]).decide(slice(0, 300), bad)
    with pytest.raises(ValueError, match="shapes"):
        StreamRun(states, [BASE]).decide(slice(0, 200), good)

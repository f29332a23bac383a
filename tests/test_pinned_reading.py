"""What is hashed is what is read: a data file replaced or rewritten while it is read
cannot pass for the file a suggestion names (io._pinned)."""

import json
import os
import shutil

import pytest

from ami_engine import ENGINE_MODEL
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.io import _pinned, parquet
from ami_engine.io.files import InputError
from ami_engine.io.states import write_states
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.traces import read_trace_states, write_traces
from ami_engine.learning.data import data_from_states_file, data_from_traces_file
from ami_engine.scenario import generate
from ami_engine.suggestion import Suggestion, SuggestionError

BASE = load_config("base")


def _traces(path, seed):
    states = generate("chaos", 1200, seed, streams=4)
    write_traces(path, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    return path


@pytest.fixture
def folder(tmp_path):
    """A data set of two days, and other traces of the same size to swap in."""
    data = tmp_path / "month"
    for day, seed in ((1, 1), (2, 2)):
        (data / f"day={day}").mkdir(parents=True)
        _traces(data / f"day={day}" / "traces.parquet", seed)
    return data, _traces(tmp_path / "other.parquet", 3)


def _on_open(monkeypatch, act):
    """Run `act(name)` each time a Parquet file of the data set is opened for reading, after
    the reader has taken hold of it and before it reads a byte through pyarrow."""
    opened = parquet._open

    def opening(source, name=None):
        if name is not None and source != name:  # opened through the descriptor held (not a footer looked at)
            act(name)
        return opened(source, name)

    monkeypatch.setattr(parquet, "_open", opening)


def test_a_file_swapped_for_another_and_back_while_it_is_read_is_refused(folder, monkeypatch):
    data, other = folder
    before = parquet.dataset_sha256(data)
    first_day = data / "day=1" / "traces.parquet"
    kept = data.parent / "kept.parquet"
    read = []

    def swap(name):
        if name == str(first_day) and not read:
            os.link(first_day, kept)  # the file itself, kept to be put back
            saved = data.parent / "saved.parquet"
            shutil.copy(other, saved)
            os.replace(saved, first_day)  # other traces under its name, as `mv` puts them there
            read.append(name)

    _on_open(monkeypatch, swap)
    with pytest.raises(InputError, match="changed while it was being read") as caught:
        read_trace_states(data, keys=False, digest=parquet.DatasetDigest(data))
    assert caught.value.source == str(first_day)
    os.replace(kept, first_day)  # and back: the data set is the one hashed before
    assert read and parquet.dataset_sha256(data) == before


def test_a_file_written_in_place_while_it_is_read_is_refused(folder, monkeypatch):
    data, _ = folder
    second_day = str(data / "day=2" / "traces.parquet")

    def rewrite(name):
        if name == second_day:
            with open(name, "r+b") as fh:  # the same bytes again: its change time moves all the same
                fh.write(fh.read())

    _on_open(monkeypatch, rewrite)
    with pytest.raises(InputError, match="changed while it was being read") as caught:
        read_trace_states(data, keys=False, digest=parquet.DatasetDigest(data))
    assert caught.value.source == second_day


def test_learning_data_carries_the_digest_of_the_bytes_it_read(folder, tmp_path):
    data, _ = folder
    assert data_from_traces_file(str(data)).sha256 == parquet.dataset_sha256(data)
    states = tmp_path / "states.parquet"
    write_states(states, generate("balanced", 500, 4))
    assert data_from_states_file(str(states)).sha256 == parquet.dataset_sha256(states)


def test_a_digest_is_known_only_once_every_file_is_read(folder):
    data, _ = folder
    digest = parquet.DatasetDigest(data)
    blocks = parquet.iter_trace_blocks(data, ("state",), digest=digest)
    next(blocks)
    with pytest.raises(RuntimeError, match="once every file"):
        digest.hexdigest()
    blocks.close()


def test_a_file_changed_a_moment_ago_is_looked_at_once_its_change_is_settled(tmp_path, monkeypatch):
    path = _traces(tmp_path / "fresh.parquet", 5)
    waits = []
    monkeypatch.setattr(_pinned, "SETTLE_SECONDS", 3600.0)  # every file is "a moment ago" now
    monkeypatch.setattr(_pinned.time, "sleep", waits.append)
    with _pinned.pinned(str(path), digest=False):
        pass
    assert len(waits) == 1 and 0 < waits[0] <= 3600.0
    os.utime(path, ns=(0, 0))  # times a user can set change the change time, to now
    waits.clear()
    with _pinned.pinned(str(path), digest=False):
        pass
    assert len(waits) == 1


def test_a_regression_suite_put_in_place_after_its_check_is_not_read(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ami_engine.cli import app

    states = generate("balanced", 500, 2)
    write_states(tmp_path / "states.jsonl", states)
    first = dict(zip(STATE_FIELDS, states.values[0].tolist()))
    suite = tmp_path / "regression.jsonl"
    suite.write_text(json.dumps({**first, "expect_level_min": 0}) + "\n")
    result = CliRunner().invoke(app, ["learn", "--states", str(tmp_path / "states.jsonl"), "--regression", str(suite),
                                      "--strategy", "random", "--budget", "6", "--seed", "1",
                                      "--out", str(tmp_path / "s.toml")])
    assert result.exit_code == 0, result.output
    suggestion = Suggestion.read(tmp_path / "s.toml")
    assert len(suggestion.regression()) == 1
    checked = Suggestion._named_file

    def then_swapped(self, key, table, override, option):
        path = checked(self, key, table, override, option)
        if key == "regression":  # another suite, put there once the check has looked
            suite.write_text(json.dumps({**first, "expect_level_min": 1}) + "\n")
        return path

    monkeypatch.setattr(Suggestion, "_named_file", then_swapped)
    with pytest.raises(SuggestionError, match="does not match"):
        suggestion.regression()

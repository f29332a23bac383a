"""Where a learning run keeps its finished evaluations: a journal file or PostgreSQL, one
run at a time, never a file the tool did not create, and a Ctrl-C that says how to go on."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import load_config
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.learning.policy_optimizer import SearchSpace
from ami_engine.learning.study import (
    StudyBusyError,
    StudyError,
    StudyExistsError,
    StudyStore,
    finished_evaluations,
    make_fingerprint,
)

BASE = load_config("base")
SPACE = SearchSpace()
FINGERPRINT = make_fingerprint(data="sha256:abc", seed=4, strategy="tpe")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def middle():
    return (SPACE.lower + SPACE.upper) / 2


# --- the store ------------------------------------------------------------------------------------


def test_a_path_is_a_journal_file_that_a_later_run_resumes(tmp_path):
    path = tmp_path / "s.journal"
    with StudyStore.open(path, FINGERPRINT) as store:
        store.record_batch(0, np.vstack([middle(), SPACE.lower]), [1.0, np.inf])
    assert json.loads(path.read_text().splitlines()[0])["op_code"] == 0
    assert finished_evaluations(path) == 2
    with StudyStore.open(str(path), FINGERPRINT) as store:
        (batch,) = store.completed_batches()
        assert np.array_equal(batch.X, np.vstack([middle(), SPACE.lower])) and batch.y.tolist() == [1.0, np.inf]


@pytest.mark.parametrize("existing", ["resume", "fresh", "refuse"])
def test_a_file_that_is_not_a_study_is_never_used_or_replaced(tmp_path, existing):
    data = tmp_path / "traces.jsonl"
    data.write_text('{"t": 0, "cus": 0.5}\n')
    with pytest.raises(StudyError, match="is not an optuna journal; refusing"):
        StudyStore.open(data, FINGERPRINT, existing=existing)
    assert data.read_text() == '{"t": 0, "cus": 0.5}\n'
    with pytest.raises(StudyError, match="is not a file"):
        StudyStore.open(tmp_path, FINGERPRINT, existing=existing)


def test_an_existing_study_is_refused_or_started_over_only_when_asked(tmp_path):
    path = tmp_path / "s.journal"
    with StudyStore.open(path, FINGERPRINT) as store:
        store.record_batch(0, middle()[None, :], [1.0])
    before = path.read_bytes()
    with pytest.raises(StudyExistsError, match=r"^1 finished evaluations in .*s.journal; --resume to continue, "
                                               r"--fresh to start over$"):
        StudyStore.open(path, FINGERPRINT, existing="refuse")
    assert path.read_bytes() == before
    with StudyStore.open(path, FINGERPRINT, existing="fresh") as store:
        assert store.completed_batches() == [] and store.finished == 0


def test_a_study_is_used_by_one_run_at_a_time(tmp_path):
    path = tmp_path / "s.journal"
    first = StudyStore.open(path, FINGERPRINT)
    with pytest.raises(StudyBusyError, match="another learning run is using it"):
        StudyStore.open(path, FINGERPRINT)
    first.close()
    StudyStore.open(path, FINGERPRINT).close()


def test_an_unknown_storage_scheme_is_refused():
    with pytest.raises(StudyError, match="unknown storage scheme 'foo'"):
        StudyStore.open("foo://x", FINGERPRINT)


def test_a_sqlite_url_is_read_and_a_file_behind_it_that_is_no_study_refused(tmp_path):
    with StudyStore.open(f"sqlite:///{tmp_path / 's.db'}", FINGERPRINT) as store:
        store.record_batch(0, middle()[None, :], [1.0])
    assert finished_evaluations(f"sqlite:///{tmp_path / 's.db'}") == 1
    (tmp_path / "notes.db").write_text("mine")
    with pytest.raises(StudyError, match="is not an optuna SQLite study"):
        StudyStore.open(f"sqlite:///{tmp_path / 'notes.db'}", FINGERPRINT)
    assert (tmp_path / "notes.db").read_text() == "mine"
    with pytest.raises(StudyError, match="is an SQLite study .*; give it as sqlite:///"):
        StudyStore.open(tmp_path / "s.db", FINGERPRINT)


@pytest.mark.postgres
def test_a_postgres_study_resumes_refuses_and_locks_like_a_file(postgres_url):
    with StudyStore.open(postgres_url, FINGERPRINT) as store:
        store.record_batch(0, middle()[None, :], [0.5])
        with pytest.raises(StudyBusyError):
            StudyStore.open(postgres_url, FINGERPRINT)
    assert finished_evaluations(postgres_url) == 1
    with pytest.raises(StudyExistsError, match="1 finished evaluations in postgresql://"):
        StudyStore.open(postgres_url, FINGERPRINT, existing="refuse")
    with StudyStore.open(postgres_url, FINGERPRINT) as store:
        assert [b.y.tolist() for b in store.completed_batches()] == [[0.5]]
    with StudyStore.open(postgres_url, FINGERPRINT, existing="fresh") as store:
        assert store.finished == 0


# --- resume on another host -------------------------------------------------------------------------


def _learn(study, progress=None, existing="resume"):
    data = data_from_scenario("chaos", 800, 3)
    settings = LearnSettings(strategy="tpe", budget=16, seed=2, batch_size=8)
    return learn(data, BASE, settings, study=study, progress=progress, existing_study=existing)


def _suggestion_bytes(result):
    doc = json.loads(json.dumps(result.suggestion_toml, default=str))
    doc["meta"].pop("created")
    return dumps_toml(doc).encode()


@pytest.fixture(scope="module")
def uninterrupted():
    return _learn(None)


@pytest.mark.parametrize("store", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_run_stopped_on_one_host_resumes_on_another_to_the_same_bytes(store, tmp_path, request, uninterrupted):
    whole = uninterrupted

    def stop_after_one_step(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    if store == "journal":
        first_host, second_host = tmp_path / "a" / "s.journal", tmp_path / "b" / "s.journal"
        first_host.parent.mkdir()
        study = str(first_host)
    else:
        study = request.getfixturevalue("postgres_url")
    with pytest.raises(KeyboardInterrupt):
        _learn(study, progress=stop_after_one_step, existing="refuse")
    assert finished_evaluations(study) == 8
    if store == "journal":
        second_host.parent.mkdir()
        shutil.copy(first_host, second_host)  # what a shared disk shows the other host
        study = str(second_host)
    resumed = _learn(study)
    assert _suggestion_bytes(resumed) == _suggestion_bytes(whole)
    assert resumed.history == whole.history


# --- the command line -------------------------------------------------------------------------------

LEARN = ("learn", "--scenario", "chaos", "--n", 1200, "--seed", 3, "--strategy", "sobol", "--budget", 8,
         "--batch-size", 8)


def test_learn_never_touches_a_study_path_that_holds_other_data(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"physical": 0.5}\n')
    result = invoke(*LEARN, "--out", tmp_path / "s.toml", "--study", data, "--fresh")
    assert result.exit_code == 2 and "--study" in result.output and "refusing to use or replace" in result.output
    assert data.read_text() == '{"physical": 0.5}\n' and not (tmp_path / "s.toml").exists()
    result = invoke(*LEARN, "--out", tmp_path / "s.toml", "--study", "foo://x")
    assert result.exit_code == 2 and "--study" in result.output and "unknown storage URL scheme" in result.output


def test_a_rerun_without_resume_or_fresh_changes_nothing_and_says_what_to_do(tmp_path):
    out = tmp_path / "s.toml"
    assert invoke(*LEARN, "--out", out).exit_code == 0
    study = tmp_path / "s.study.journal"
    kept = {p: p.read_bytes() for p in (out, study)}
    again = invoke(*LEARN, "--out", out)
    assert again.exit_code == 2
    assert f"8 finished evaluations in {study}; --resume to continue, --fresh to start over" in again.output
    bad_option = invoke(*LEARN[:-4], "--budget", 0, "--batch-size", 8, "--out", out, "--fresh")
    assert bad_option.exit_code == 2
    both = invoke(*LEARN, "--out", out, "--fresh", "--resume")
    assert both.exit_code == 2 and "mutually exclusive" in both.output
    assert {p: p.read_bytes() for p in kept} == kept


def test_a_second_learn_on_a_study_in_use_is_refused(tmp_path):
    study = tmp_path / "s.journal"
    holder = StudyStore.open(study, FINGERPRINT)
    try:
        result = invoke(*LEARN, "--out", tmp_path / "s.toml", "--study", study, "--resume")
    finally:
        holder.close()
    assert result.exit_code == 2 and "another learning run is using it" in result.output
    assert not (tmp_path / "s.toml").exists()


def test_ctrl_c_says_how_far_it_got_and_how_to_continue(tmp_path):
    out, history = tmp_path / "s.toml", tmp_path / "h.jsonl"
    args = ["learn", "--scenario", "chaos", "--n", "1200", "--strategy", "random", "--budget", "100000",
            "--batch-size", "8", "--out", str(out), "--history", str(history)]
    # Ctrl-C's own handler, even where this test was started in the background of a
    # non-interactive shell (which starts its commands with SIGINT ignored, and Python keeps that).
    launch = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "runpy.run_module('ami_engine.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", launch, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "400"})
    study = tmp_path / "s.study.journal"
    try:
        while "ami_engine:batch:" not in (study.read_text() if study.exists() else ""):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    finished = finished_evaluations(study)
    assert finished >= 8 and finished % 8 == 0
    line = err.strip().splitlines()[-1]
    command = "ami-engine " + " ".join(args) + " --resume"
    assert line == f"interrupted after {finished} of 100000 evaluations; continue with: {command}"
    assert not out.exists() and not history.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.study.journal"]


def test_ctrl_c_counts_the_evaluations_the_schedule_plans_not_the_budget(tmp_path, monkeypatch):
    from ami_engine import cli, workflow

    def interrupted(job, baseline, *, progress, **_):
        progress(0, 777)  # racing plans more evaluations than the budget on large data
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "run_learn_job", interrupted)
    monkeypatch.setattr(cli, "_learn_planned", [])
    result = invoke("learn", "--scenario", "chaos", "--n", "1200", "--budget", "300", "--out", tmp_path / "s.toml")
    assert result.exit_code == 130
    assert "interrupted after 0 of 777 evaluations; continue with: ami-engine" in result.output


def test_ctrl_c_is_an_interrupt_even_when_a_cleanup_fails_on_the_way_out(tmp_path, monkeypatch):
    """The study's lock file half cleaned up when Ctrl-C lands in it: still exit 130, not
    an error about the lock file; an error without an interrupt stays an error."""
    from ami_engine import cli, workflow

    def interrupted_in_a_lock(job, baseline, *, progress, **_):
        progress(0, 300)
        try:
            raise KeyboardInterrupt
        finally:
            raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "s.journal.lock.rename"))

    monkeypatch.setattr(workflow, "run_learn_job", interrupted_in_a_lock)
    monkeypatch.setattr(cli, "_learn_planned", [])
    result = invoke("learn", "--scenario", "chaos", "--n", "1200", "--budget", "300", "--out", tmp_path / "s.toml")
    assert result.exit_code == 130, result.output
    assert "interrupted after 0 of 300 evaluations" in result.output and "lock" not in result.output

    def failed(job, baseline, **_):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone.jsonl"))

    monkeypatch.setattr(workflow, "run_learn_job", failed)
    result = invoke("learn", "--scenario", "chaos", "--n", "1200", "--budget", "300", "--out", tmp_path / "s.toml")
    assert result.exit_code == 2 and "gone.jsonl" in result.output

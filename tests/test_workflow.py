"""A learning run from files to files (workflow.py): the checks made before any work, and
the run's outputs written as one set."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ami_engine.config import load_config
from ami_engine.errors import UsageError
from ami_engine.learning.policy_optimizer import SearchSpace
from ami_engine.learning.study import StudyStore, make_fingerprint
from ami_engine.workflow import plan_learn, run_learn_job, study_path


def test_the_study_sits_beside_the_output_unless_one_is_given():
    assert study_path(None, "out/suggestion.toml") == "out/suggestion.study.journal"
    assert study_path("elsewhere.journal", "out/suggestion.toml") == "elsewhere.journal"


@pytest.mark.parametrize(("options", "message"), [
    ({"states": "s.jsonl", "scenario": "chaos"}, "give exactly one of --states FILE, --traces FILE or --scenario"),
    ({}, "give exactly one of --states FILE, --traces FILE or --scenario"),
    ({"states": "-", "regression": "-"}, "--states and --regression: only one input can be read from stdin"),
    ({"scenario": "chaos", "history": "-", "report": "-"}, "--history and --report: only one output can be written"),
    ({"scenario": "chaos", "resume": True, "fresh": True}, "--resume and --fresh are mutually exclusive"),
    ({"scenario": "chaos", "drop_unknown": True}, "--drop-unknown applies to --states FILE only"),
    ({"scenario": "chaos", "study": "ftp://host/x"}, "--study: study 'ftp://host/x': unknown storage scheme"),
])
def test_a_run_is_refused_before_any_work(tmp_path, options, message):
    with pytest.raises(UsageError, match=message):
        plan_learn(out=str(tmp_path / "s.toml"), **options)
    assert list(tmp_path.iterdir()) == []


def test_a_suggestion_is_never_planned_over_a_built_in_profile():
    base = Path(str(resources.files("ami_engine.config").joinpath("profiles", "base.toml")))
    with pytest.raises(UsageError, match="refusing to write over the built-in profile base"):
        plan_learn(out=str(base), scenario="chaos")


def test_an_existing_study_is_refused_unless_resumed_or_started_over(tmp_path):
    out = tmp_path / "s.toml"
    space = SearchSpace()
    with StudyStore.open(study_path(None, str(out)), make_fingerprint(x=1)) as store:
        store.record_batch(0, np.vstack([space.lower]), [1.0])
    with pytest.raises(UsageError, match=r"1 finished evaluations in .*; --resume to continue, --fresh to start over"):
        plan_learn(out=str(out), scenario="chaos")
    assert plan_learn(out=str(out), scenario="chaos", resume=True).existing_study == "resume"
    assert plan_learn(out=str(out), scenario="chaos", fresh=True).existing_study == "fresh"


def test_strategy_options_come_from_the_strategy_s_own_options(tmp_path):
    out = str(tmp_path / "s.toml")
    assert plan_learn(out=out, scenario="chaos", strategy="random", perturb=True, step_scale=0.3).strategy_options \
        == {"mode": "perturb", "step_scale": 0.3}
    assert plan_learn(out=out, scenario="chaos", strategy="grid", points_per_axis=3).strategy_options \
        == {"points_per_axis": 3}
    assert plan_learn(out=out, scenario="chaos", strategy="tpe", perturb=True).strategy_options == {}


def test_a_run_with_nothing_to_suggest_writes_its_history_and_removes_an_earlier_suggestion(tmp_path):
    out = tmp_path / "s.toml"
    out.write_text("# the suggestion of an earlier run\n")
    history = tmp_path / "history.jsonl"
    job = plan_learn(out=str(out), scenario="chaos", n=300, seed=2, streams=4, budget=1, batch_size=1,
                     history=str(history))
    outcome = run_learn_job(job, load_config("base"))
    assert outcome.result.status == "no improvement" and not outcome.result.accepted
    assert outcome.removed_earlier
    assert not out.exists()
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [line["step"] for line in lines] == [0]


def test_bad_loss_weights_are_a_usage_error_naming_them(tmp_path):
    job = plan_learn(out=str(tmp_path / "s.toml"), scenario="chaos", n=100, budget=1)
    with pytest.raises(UsageError, match="weights"):
        run_learn_job(job, load_config("base"), weights="1,2")
    assert not (tmp_path / "s.toml").exists()

"""Suggestion files are portable: every file they name is relative to them, with its digest."""

import hashlib
import json
import shutil
import tomllib

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.io.states import write_states
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.scenario import generate
from ami_engine.suggestion import Suggestion, SuggestionError, suggestion_document

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """`learn` run in folder A with paths relative to it: states, a config and a regression suite."""
    root = tmp_path_factory.mktemp("portable")
    a = root / "a"
    (a / "data").mkdir(parents=True)
    (a / "cfgs").mkdir()
    states = generate("balanced", 600, 2)
    write_states(a / "data" / "states.jsonl", states)
    (a / "cfgs" / "mine.toml").write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\n')
    first = dict(zip(STATE_FIELDS, states.values[0].tolist()))
    (a / "regression.jsonl").write_text(json.dumps({**first, "expect_level_min": 0}) + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(a)
        result = invoke("learn", "--states", "data/states.jsonl", "--config", "cfgs/mine.toml", "--regression",
                        "regression.jsonl", "--strategy", "random", "--budget", 8, "--seed", 1, "--out", "out/s.toml")
    assert result.exit_code == 0, result.output
    return root, a, a / "out" / "s.toml"


def test_learn_stores_every_file_relative_to_the_suggestion_with_its_digest(learned):
    _, a, path = learned
    doc = tomllib.loads(path.read_text())
    meta = doc["meta"]
    assert doc["extends"] == "../cfgs/mine.toml"
    assert meta["baseline_file"] == {"path": "../cfgs/mine.toml", "sha256": sha256(a / "cfgs" / "mine.toml")}
    assert meta["data"]["path"] == "../data/states.jsonl"
    assert meta["data"]["sha256"] == sha256(a / "data" / "states.jsonl")
    assert meta["regression"] == {"path": "../regression.jsonl", "sha256": sha256(a / "regression.jsonl")}


def test_gate_and_apply_work_from_another_working_directory(learned, tmp_path, monkeypatch):
    _, _, path = learned
    monkeypatch.chdir(tmp_path)
    result = invoke("gate", path, "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    assert isinstance(checks["heldout_loss"]["figure"], float)  # the data was found beside the suggestion
    assert checks["regression"]["figure"] == 0  # so was the regression suite it was learned with
    result = invoke("apply", path, "--approved-by", "R. Viewer", "--out", "profiles/tuned.toml")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "profiles" / "tuned.toml").is_file()


def test_a_moved_data_file_is_accepted_with_data_only_when_its_digest_matches(learned, tmp_path):
    root, a, path = learned
    moved = tmp_path / "copy.jsonl"
    shutil.copy(a / "data" / "states.jsonl", moved)
    copy = tmp_path / "review"
    shutil.copytree(a, copy)
    (copy / "data" / "states.jsonl").unlink()
    suggestion = copy / "out" / "s.toml"
    result = invoke("gate", suggestion)
    assert result.exit_code == 2 and "--data" in result.output and "not readable" in result.output
    changed = tmp_path / "changed.jsonl"
    changed.write_text(moved.read_text().replace("0.", "0.0", 1))
    result = invoke("gate", suggestion, "--data", changed)
    assert result.exit_code == 2 and f"--data {changed}: SHA-256 {sha256(changed)}" in result.output
    assert "does not match" in result.output
    held = Suggestion.read(suggestion).held_out(moved)
    assert held is not None and len(held) > 0
    report = tmp_path / "r.html"
    assert invoke("report", "--suggestion", suggestion, "--out", report, "--data", changed).exit_code == 2
    assert not report.exists()
    result = invoke("report", "--suggestion", suggestion, "--out", report, "--data", moved)
    assert result.exit_code == 0 and str(moved) in report.read_text()


def test_a_baseline_file_changed_since_learning_is_refused(learned, tmp_path):
    _, a, _ = learned
    copy = tmp_path / "review"
    shutil.copytree(a, copy)
    (copy / "cfgs" / "mine.toml").write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.3\n')
    with pytest.raises(SuggestionError, match="the baseline changed since"):
        Suggestion.read(copy / "out" / "s.toml")
    result = invoke("gate", copy / "out" / "s.toml")
    assert result.exit_code == 2 and "mine.toml" in result.output


def test_suggestion_document_makes_paths_relative_to_the_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('extends = "base"\n')
    doc = {"extends": "c.toml", "J_MIN": 0.8, "meta": {"data": {"source": "states", "path": "d/s.jsonl"}}}
    out = suggestion_document(doc, "deep/er/s.toml")
    assert out["extends"] == "../../c.toml" and out["meta"]["data"]["path"] == "../../d/s.jsonl"
    assert doc["extends"] == "c.toml"  # the input is left as it was
    builtin = suggestion_document({"extends": "base", "meta": {}}, "s.toml")
    assert builtin["extends"] == "base" and "baseline_file" not in builtin["meta"]


@pytest.mark.parametrize("n, message", [(10**11, "of memory"), (1500.0, "expected an integer"),
                                        (True, "expected an integer")])
def test_tampered_scenario_metadata_is_refused_before_any_work(tmp_path, n, message):
    scenario = {"name": "chaos", "n": n, "seed": 1, "streams": 8}
    meta = {"data": {"source": "scenario", "scenario": scenario, "sha256": "0" * 64, "n_records": 10**11},
            "split": {"seed": 1, "train_fraction": 0.8}}
    path = tmp_path / "s.toml"
    path.write_text(dumps_toml({"extends": "base", "meta": meta}))
    with pytest.raises(SuggestionError, match=rf"meta.data.*{message}"):
        Suggestion.read(path).held_out()
    result = invoke("gate", path)
    assert result.exit_code == 2 and message in result.output


def test_a_suggestion_learned_from_a_folder_of_parquet_files_is_gated_from_it_or_a_copy(tmp_path):
    folder = tmp_path / "traces"
    for day in (1, 2):
        (folder / f"day={day}").mkdir(parents=True)
        result = invoke("run", "--scenario", "chaos", "--n", 400, "--seed", day, "--out",
                        folder / f"day={day}" / "t.parquet")
        assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "s.toml"
    result = invoke("learn", "--traces", folder, "--strategy", "random", "--budget", 6, "--seed", 1, "--out", out)
    assert result.exit_code == 0, result.output
    assert tomllib.loads(out.read_text())["meta"]["data"]["path"] == "../traces"
    assert invoke("gate", out).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shutil.rmtree(folder)
    assert "not readable here" in invoke("gate", out).output
    assert invoke("gate", out, "--data", copy).exit_code == 0
    (copy / "day=2" / "t.parquet").unlink()
    assert "does not match" in invoke("gate", out, "--data", copy).output

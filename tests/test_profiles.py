"""Profiles by name (./profiles, AMI_ENGINE_PROFILES, built-ins) and `check` against each record's own config."""

import json
import shutil
import tomllib

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import ConfigError, list_profiles, load_config

runner = CliRunner()
STATE = {"physical": 0.5, "social": 0.4, "context": 0.6, "risk": 0.7, "compassion": 0.5, "justice": 0.5,
         "harm_sens": 0.5, "responsibility": 0.5, "empathy": 0.5}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder where `apply --out profiles/tuned.toml` has run."""
    root = tmp_path_factory.mktemp("project")
    (root / "s.toml").write_text('extends = "base"\nJ_MIN = 0.8\nH_MAX = 0.35\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = invoke("apply", "s.toml", "--approved-by", "A", "--out", "profiles/tuned.toml")
    assert result.exit_code == 0, result.output
    return root


def test_an_applied_profile_is_found_by_name(project, monkeypatch):
    monkeypatch.chdir(project)
    tuned = load_config("tuned")
    assert tuned.source == "profiles/tuned.toml" and tuned["J_MIN"] == 0.8
    result = invoke("run", "--scenario", "balanced", "--n", 300, "--profile", "tuned", "--out", "t.jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (project / "t.jsonl").read_text().splitlines()]
    assert {r["config_id"] for r in records} == {tuned.config_id}
    assert invoke("explain", "--state", json.dumps(STATE), "--profile", "tuned", "--json").exit_code == 0
    result = invoke("check", "t.jsonl")
    assert result.exit_code == 0 and "profiles/tuned.toml" in result.output
    listing = invoke("profiles")
    assert listing.exit_code == 0
    row = next(line for line in listing.output.splitlines() if "tuned" in line)
    assert "profiles/tuned.toml" in row and "./profiles" in row and tuned.config_id in row
    assert all(name in listing.output for name in ("base", "production_safe", "high_critical", "chaos_tuning"))
    shown = invoke("profiles", "tuned")
    assert shown.exit_code == 0 and f"config_id {tuned.config_id}" in shown.output


def test_a_baseline_found_by_name_is_an_audited_yardstick(project, monkeypatch):
    monkeypatch.chdir(project)
    (project / "s2.toml").write_text('extends = "base"\nJ_MIN = 0.8\nH_MAX = 0.3\n')
    result = invoke("gate", "s2.toml", "--baseline", "tuned", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["baseline_config_id"] == load_config("tuned").config_id


def test_learn_starts_from_a_profile_found_by_name(project, monkeypatch):
    monkeypatch.chdir(project)
    result = invoke("learn", "--scenario", "chaos", "--n", 300, "--budget", 4, "--strategy", "random",
                    "--profile", "tuned", "--out", "out/s.toml", "--json")
    assert result.exit_code == 0, result.output
    doc = tomllib.loads((project / "out" / "s.toml").read_text())
    assert doc["extends"] == "../profiles/tuned.toml" and doc["meta"]["baseline_file"]["path"] == doc["extends"]
    assert doc["meta"]["baseline_config_id"] == load_config("tuned").config_id


def test_profiles_are_found_in_the_folders_of_the_environment_variable(project, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(project / "profiles" / "tuned.toml", shared / "team.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("AMI_ENGINE_PROFILES", f"{tmp_path / 'nothing'}:{shared}")
    assert load_config("team").config_id == load_config(str(project / "profiles" / "tuned.toml")).config_id
    assert ("team", "AMI_ENGINE_PROFILES", shared / "team.toml") in list_profiles()
    assert invoke("run", "--scenario", "safe", "--n", 5, "--profile", "team", "--out", "t.jsonl").exit_code == 0
    assert "AMI_ENGINE_PROFILES" in invoke("profiles").output


def test_a_local_profile_cannot_take_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.toml").write_text('extends = "base"\nJ_CRITICAL = 0.1\n')
    with pytest.raises(ConfigError, match="profiles/base.toml: a profile on the search path cannot take"):
        load_config("base")
    for args in (["run", "--scenario", "safe", "--n", 5, "--profile", "base", "--out", "t.jsonl"], ["profiles"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "profiles/base.toml" in result.output
    assert not (tmp_path / "t.jsonl").exists()
    (tmp_path / "profiles" / "base.toml").unlink()
    (tmp_path / "s.toml").write_text('extends = "production_safe"\n')
    result = invoke("apply", "s.toml", "--approved-by", "A", "--out", "profiles/high_critical.toml")
    assert result.exit_code == 2 and "--out" in result.output and "built-in name" in result.output


def test_a_profile_on_the_search_path_must_carry_a_matching_config_id(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "hand.toml").write_text('extends = "base"\nJ_MIN = 0.8\n')
    result = invoke("run", "--scenario", "safe", "--n", 5, "--profile", "hand", "--out", "t.jsonl")
    assert result.exit_code == 2 and "profiles/hand.toml" in result.output and "config_id" in result.output
    text = (project / "profiles" / "tuned.toml").read_text()
    (tmp_path / "profiles" / "hand.toml").write_text(text.replace("J_MIN = 0.8", "J_MIN = 0.5"))
    result = invoke("run", "--scenario", "safe", "--n", 5, "--profile", "hand", "--out", "t.jsonl")
    assert result.exit_code == 2 and "profiles/hand.toml" in result.output and "changed" in result.output
    assert not (tmp_path / "t.jsonl").exists()


# ------------------------------------------------------------------------------ check


def test_check_judges_traces_against_the_profile_that_produced_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("run", "--scenario", "chaos", "--n", 2000, "--seed", 5, "--profile", "chaos_tuning",
                  "--out", "t.jsonl").exit_code == 0
    result = invoke("check", "t.jsonl", "--json")
    assert result.exit_code == 0, result.output
    assert list(json.loads(result.output)["configs"].values()) == ["chaos_tuning"]


def test_check_refuses_records_whose_config_it_cannot_find(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text('extends = "chaos_tuning"\nJ_MIN = 0.6\n')
    mine = load_config(str(tmp_path / "mine.toml"))
    assert invoke("run", "--scenario", "chaos", "--n", 500, "--config", "mine.toml", "--out", "t.jsonl").exit_code == 0
    result = invoke("check", "t.jsonl")
    assert result.exit_code == 2
    assert f"t.jsonl:1: config_id: {mine.config_id} is not the config_id" in result.output
    assert "--config" in result.output
    assert invoke("check", "t.jsonl", "--config", "mine.toml").exit_code == 0


def test_foreign_records_without_a_config_id_need_the_config_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("run", "--scenario", "balanced", "--n", 50, "--out", "t.jsonl").exit_code == 0
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "config_id"}) + "\n"
                                              for r in records))
    result = invoke("check", "f.jsonl")
    assert result.exit_code == 2 and "f.jsonl:1: config_id: missing" in result.output
    assert invoke("check", "f.jsonl", "--profile", "base").exit_code == 0


def test_applied_profile_meta_records_its_approval(project):
    meta = tomllib.loads((project / "profiles" / "tuned.toml").read_text())["meta"]
    assert meta["approved_by"] == "A" and meta["config_id"] == load_config(str(project / "profiles" / "tuned.toml")
                                                                           ).config_id

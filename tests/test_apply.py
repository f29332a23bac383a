"""apply: only an accepting gate and a named approver write a profile; refusals leave nothing."""

import json

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import load_config
from ami_engine.gate import run_gate
from ami_engine.gate.approval import ApplyRefused, apply_suggestion
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn


@pytest.fixture(scope="module")
def suggestion(tmp_path_factory):
    result = learn(data_from_scenario("chaos", 1500, 4), load_config("base"),
                   LearnSettings(strategy="random", budget=16, seed=4), gate_fn=run_gate)
    assert result.accepted
    path = tmp_path_factory.mktemp("s") / "suggestion.toml"
    path.write_text(dumps_toml(result.suggestion_toml))
    return path


def test_apply_writes_a_profile_that_reproduces_the_suggestion_and_an_audit_line(suggestion, tmp_path):
    out = tmp_path / "profiles" / "tuned.toml"
    result = apply_suggestion(str(suggestion), approved_by="Grace Hopper", out=str(out))
    assert load_config(str(out)).config_id == load_config(str(suggestion)).config_id
    lines = (tmp_path / "profiles" / "ami-engine-audit.jsonl").read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["who"] == "Grace Hopper" and entry["verdict"] == "ACCEPT"
    assert entry["config_id"] == result.config_id and len(entry["suggestion_sha256"]) == 64
    assert set(entry["checks"]) >= {"bounds", "invariants", "determinism", "heldout_loss"}
    meta = load_config(str(out)).meta
    assert meta["approved_by"] == "Grace Hopper"


def refused(tmp_path, **kwargs):
    with pytest.raises(ApplyRefused) as exc:
        apply_suggestion(**kwargs)
    assert not (tmp_path / "ami-engine-audit.jsonl").exists()
    return str(exc.value)


def test_apply_refuses_without_an_approver(suggestion, tmp_path):
    out = tmp_path / "p.toml"
    assert "approved-by" in refused(tmp_path, suggestion_path=str(suggestion), approved_by="  ", out=str(out))
    assert not out.exists()


def test_apply_refuses_to_overwrite_unless_forced(suggestion, tmp_path):
    out = tmp_path / "p.toml"
    out.write_text("# someone's profile\n")
    assert "exists" in refused(tmp_path, suggestion_path=str(suggestion), approved_by="A", out=str(out))
    assert out.read_text() == "# someone's profile\n"
    apply_suggestion(str(suggestion), approved_by="A", out=str(out), force=True)
    assert load_config(str(out)).config_id == load_config(str(suggestion)).config_id


def test_apply_refuses_a_suggestion_the_gate_rejects(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "base"\nJ_MIN = 0.5\nH_MAX = 0.5\n')
    out = tmp_path / "p.toml"
    message = refused(tmp_path, suggestion_path=str(bad), approved_by="A", out=str(out))
    assert "REJECT" in message and "critical_fail_safe_rate" in message
    assert not out.exists()


def test_apply_cli_exit_codes(suggestion, tmp_path):
    runner = CliRunner()
    out = tmp_path / "p.toml"
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "", "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    result = runner.invoke(app, ["apply", str(suggestion), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()  # missing --approved-by is a usage error
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "B", "--out", str(out)])
    assert result.exit_code == 0 and out.exists()

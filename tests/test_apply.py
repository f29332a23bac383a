"""apply: only an accepting gate and a named approver write a profile; refusals leave nothing."""

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import LEARNED_PARAMS, load_config
from ami_engine.gate import ApplyRefused, apply_suggestion, run_gate
from ami_engine.gate.approval import AUDIT_LOG_NAME
from ami_engine.gate.gate import CHECK_NAMES
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn


@pytest.fixture(scope="module")
def suggestion(tmp_path_factory):
    """A real suggestion from learn, as `learn --out` writes it."""
    result = learn(data_from_scenario("chaos", 1500, 4), load_config("base"),
                   LearnSettings(strategy="random", budget=16, seed=4), gate_fn=run_gate)
    assert result.accepted
    path = tmp_path_factory.mktemp("s") / "suggestion.toml"
    path.write_text(dumps_toml(result.suggestion_toml))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_apply_writes_a_profile_that_reproduces_the_suggestion_and_an_audit_line(suggestion, tmp_path):
    out = tmp_path / "profiles" / "tuned.toml"
    result = apply_suggestion(str(suggestion), approved_by="  Grace Hopper ", out=str(out))
    profile, expected = load_config(str(out)), load_config(str(suggestion))
    assert profile.config_id == expected.config_id == result.config_id
    assert profile.extends == "base" and profile.learned() == expected.learned()
    assert set(profile.meta) >= {"approved_by", "approved_at", "suggestion", "suggestion_sha256", "gate"}
    assert profile.meta["approved_by"] == "Grace Hopper"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", profile.meta["approved_at"])
    assert profile.meta["suggestion"] == str(suggestion.resolve())
    assert profile.meta["suggestion_sha256"] == sha256(suggestion)
    assert profile.meta["gate"]["verdict"] == "ACCEPT"
    assert [c["name"] for c in profile.meta["gate"]["checks"]] == list(CHECK_NAMES)
    top_level = {line.split(" =")[0] for line in out.read_text().splitlines() if " = " in line and
                 not line.startswith(("[", " "))}
    assert {"extends", *LEARNED_PARAMS} <= top_level

    log = tmp_path / "profiles" / AUDIT_LOG_NAME
    assert result.audit_log == str(log)
    (entry,) = audit_lines(log)
    assert entry == result.audit_entry
    assert entry["who"] == "Grace Hopper" and entry["when"] == profile.meta["approved_at"]
    assert entry["suggestion"] == str(suggestion.resolve()) and entry["suggestion_sha256"] == sha256(suggestion)
    assert entry["profile"] == str(out.resolve()) and entry["profile_sha256"] == sha256(out)
    assert entry["config_id"] == expected.config_id and entry["verdict"] == "ACCEPT"
    assert entry["checks"] == result.gate.figures() and list(entry["checks"]) == list(CHECK_NAMES)
    assert isinstance(entry["checks"]["heldout_loss"], float)  # the suggestion's data was rebuilt


def refused(*, log: Path, **kwargs) -> str:
    with pytest.raises(ApplyRefused) as exc:
        apply_suggestion(audit_log=str(log), **kwargs)
    assert not log.exists()
    return str(exc.value)


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_apply_refuses_without_an_approver(suggestion, tmp_path, name):
    out = tmp_path / "p.toml"
    message = refused(log=tmp_path / "audit.jsonl", suggestion_path=str(suggestion), approved_by=name, out=str(out))
    assert "--approved-by" in message and not out.exists()


def test_apply_refuses_to_overwrite_unless_forced(suggestion, tmp_path):
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"
    out.write_text("# someone's profile\n")
    assert "exists" in refused(log=log, suggestion_path=str(suggestion), approved_by="A", out=str(out))
    assert out.read_text() == "# someone's profile\n"
    apply_suggestion(str(suggestion), approved_by="A", out=str(out), force=True, audit_log=str(log))
    assert load_config(str(out)).config_id == load_config(str(suggestion)).config_id
    apply_suggestion(str(suggestion), approved_by="B", out=str(out), force=True, audit_log=str(log))
    assert [e["who"] for e in audit_lines(log)] == ["A", "B"]  # one line per profile written


def test_apply_refuses_to_write_over_the_suggestion_itself(suggestion, tmp_path):
    before = suggestion.read_bytes()
    message = refused(log=tmp_path / "audit.jsonl", suggestion_path=str(suggestion), approved_by="A",
                      out=str(suggestion), force=True)
    assert "suggestion itself" in message and suggestion.read_bytes() == before


def test_apply_refuses_to_write_over_a_built_in_profile(suggestion, tmp_path):
    base = Path(str(resources.files("ami_engine.config").joinpath("profiles", "base.toml")))
    before = base.read_bytes()
    try:
        message = refused(log=tmp_path / "audit.jsonl", suggestion_path=str(suggestion), approved_by="A",
                          out=str(base), force=True)
        assert "built-in profile" in message
    finally:
        if base.read_bytes() != before:  # never leave the package damaged, even when the test fails
            base.write_bytes(before)
    assert base.read_bytes() == before
    assert not (base.parent / AUDIT_LOG_NAME).exists()


def test_apply_refuses_a_suggestion_the_gate_rejects(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "base"\nJ_MIN = 0.5\nH_MAX = 0.5\n')
    out = tmp_path / "p.toml"
    message = refused(log=tmp_path / AUDIT_LOG_NAME, suggestion_path=str(bad), approved_by="A", out=str(out))
    assert "REJECT" in message and "critical_floor" in message
    assert not out.exists()


def test_a_relative_extends_is_rewritten_for_the_profile_folder(tmp_path):
    here, there = tmp_path / "learned", tmp_path / "profiles"
    here.mkdir()
    (here / "mine.toml").write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\n')
    suggestion = here / "s.toml"
    suggestion.write_text('extends = "mine.toml"\nJ_MIN = 0.8\nH_MAX = 0.35\n')
    assert "extends" in refused(log=here / AUDIT_LOG_NAME, suggestion_path=str(suggestion), approved_by="A",
                                out=str(here / "mine.toml"), force=True)
    out = there / "tuned.toml"
    apply_suggestion(str(suggestion), approved_by="A", out=str(out))
    profile = load_config(str(out))
    assert profile.extends == "../learned/mine.toml"
    assert profile.config_id == load_config(str(suggestion)).config_id
    assert profile.meta["gate"]["checks"][3]["figure"] == "n/a"  # no data named: held-out not applicable


def test_apply_cli_exit_codes(suggestion, tmp_path):
    runner = CliRunner()
    out = tmp_path / "p.toml"
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "", "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    result = runner.invoke(app, ["apply", str(suggestion), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()  # missing --approved-by is a usage error
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "B", "--out", str(out)])
    assert result.exit_code == 0 and out.exists()
    assert len(audit_lines(tmp_path / AUDIT_LOG_NAME)) == 1

"""apply: only an accepting gate and a named approver write a profile; refusals leave nothing."""

import hashlib
import json
import re
import resource
import threading
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import PARAMS, ConfigError, load_config
from ami_engine.gate import ApplyRefused, ApplyUsageError, apply_suggestion, approval, gate_suggestion_file
from ami_engine.gate.approval import AUDIT_LOG_NAME
from ami_engine.gate.audit import AuditLogError, append_line, audit_record
from ami_engine.gate.checks import CHECK_NAMES
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.suggestion import Suggestion


@pytest.fixture(scope="module")
def suggestion(tmp_path_factory, gated_learning):
    """A real suggestion from learn, as `learn --out` writes it."""
    result = gated_learning
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
    assert profile.config_id == expected.config_id == result.config_id == profile.meta["config_id"]
    assert profile.learned() == expected.learned()
    assert set(profile.meta) >= {"config_id", "approved_by", "approved_at", "suggestion", "suggestion_sha256", "gate",
                                 "audit_log", "audit_entry"}
    assert profile.meta["approved_by"] == "Grace Hopper"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", profile.meta["approved_at"])
    assert profile.meta["suggestion"] == str(suggestion.resolve())
    assert profile.meta["suggestion_sha256"] == sha256(suggestion)
    assert profile.meta["gate"]["verdict"] == "ACCEPT"
    assert [c["name"] for c in profile.meta["gate"]["checks"]] == list(CHECK_NAMES)
    # self-contained: every value written out, no `extends`
    assert set(tomllib.loads(out.read_text())) == {*PARAMS, "meta"}

    log = tmp_path / "profiles" / AUDIT_LOG_NAME
    assert result.audit_log == str(log)
    (entry,) = audit_lines(log)
    assert entry == result.audit_entry
    assert entry["who"] == "Grace Hopper" and entry["when"] == profile.meta["approved_at"]
    assert entry["suggestion"] == str(suggestion.resolve()) and entry["suggestion_sha256"] == sha256(suggestion)
    assert entry["profile"] == str(out.resolve()) and entry["profile_sha256"] == sha256(out)
    assert entry["config_id"] == expected.config_id and entry["verdict"] == "ACCEPT"
    assert entry["checks"] == result.gate.figures() and list(entry["checks"]) == list(CHECK_NAMES)
    assert entry["entry"] == profile.meta["audit_entry"] and profile.meta["audit_log"] == AUDIT_LOG_NAME
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


def test_the_profile_is_self_contained_so_editing_what_it_extended_changes_nothing(tmp_path):
    here, there = tmp_path / "learned", tmp_path / "profiles"
    here.mkdir()
    mine = here / "mine.toml"
    mine.write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\n')  # stricter than base: a fair baseline
    suggestion = here / "s.toml"
    suggestion.write_text('extends = "mine.toml"\nJ_MIN = 0.8\nH_MAX = 0.35\n')
    assert "extends" in refused(log=here / AUDIT_LOG_NAME, suggestion_path=str(suggestion), approved_by="A",
                                out=str(mine), force=True)
    out = there / "tuned.toml"
    apply_suggestion(str(suggestion), approved_by="A", out=str(out))
    profile = load_config(str(out))
    assert "extends" not in out.read_text() and "mine.toml" not in out.read_text().split("[meta")[0]
    assert profile.config_id == load_config(str(suggestion)).config_id and profile["AS_SOFT_THRESHOLD"] == 0.2
    assert profile.meta["gate"]["checks"][3]["figure"] == "n/a"  # no data named: held-out not applicable
    mine.write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.9\n')
    assert load_config(str(out)).config_id == profile.config_id  # the live profile did not move


def test_apply_cli_exit_codes(suggestion, tmp_path):
    runner = CliRunner()
    out = tmp_path / "p.toml"
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "", "--out", str(out)])
    assert result.exit_code == 2 and "--approved-by" in result.output and not out.exists()
    result = runner.invoke(app, ["apply", str(suggestion), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()  # missing --approved-by is a usage error
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "B", "--out", str(out)])
    assert result.exit_code == 0 and out.exists()
    assert len(audit_lines(tmp_path / AUDIT_LOG_NAME)) == 1
    before = out.read_bytes()
    result = runner.invoke(app, ["apply", str(suggestion), "--approved-by", "B", "--out", str(out)])
    assert result.exit_code == 2 and "--out" in result.output and "--force" in result.output
    assert out.read_bytes() == before and len(audit_lines(tmp_path / AUDIT_LOG_NAME)) == 1


# ------------------------------------------------------------ what `apply` promises


@pytest.fixture(scope="module")
def accepted(suggestion):
    """The gate's report on the fixture suggestion, reused where a test is about writing."""
    report = gate_suggestion_file(str(suggestion))
    assert report.accepted
    return report


@pytest.fixture
def quick_gate(monkeypatch, accepted):
    """apply with the fixture's accepting gate report, so tests of the writing stay fast."""
    monkeypatch.setattr(approval, "gate_suggestion", lambda *args, **kwargs: accepted)


def test_apply_gates_hashes_and_writes_the_bytes_it_read_even_if_the_file_is_swapped(suggestion, tmp_path,
                                                                                       monkeypatch):
    source = tmp_path / "s.toml"
    good = suggestion.read_bytes()
    source.write_bytes(good)
    evil = 'extends = "base"\nJ_MIN = 0.1\nCONFIDENCE_ESCALATION_FORCE = 0.0\n'
    real_gate = approval.gate_suggestion

    def swap_then_gate(read, *args, **kwargs):
        source.write_text(evil)  # the file changes while it is being gated
        return real_gate(read, *args, **kwargs)

    monkeypatch.setattr(approval, "gate_suggestion", swap_then_gate)
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"
    result = apply_suggestion(str(source), approved_by="A", out=str(out), audit_log=str(log))
    hashed = Suggestion.from_bytes(good, source).config
    profile = load_config(str(out))
    assert source.read_text() == evil
    assert profile.config_id == hashed.config_id == result.config_id == result.gate.config_id
    assert profile.to_dict() == hashed.to_dict() and profile["J_MIN"] != 0.1
    (entry,) = audit_lines(log)
    assert entry["suggestion_sha256"] == profile.meta["suggestion_sha256"] == hashlib.sha256(good).hexdigest()
    assert entry["config_id"] == hashed.config_id


def test_an_edited_profile_is_refused_everywhere_it_is_loaded(suggestion, tmp_path, quick_gate):
    out = tmp_path / "p.toml"
    apply_suggestion(str(suggestion), approved_by="A", out=str(out))
    profile = load_config(str(out))
    text = out.read_text()
    edited = text.replace(f"J_CRITICAL = {profile['J_CRITICAL']}", "J_CRITICAL = 0.1")
    assert edited != text
    out.write_text(edited)
    with pytest.raises(ConfigError, match=rf"{out}: \[meta\] config_id is {profile.config_id}"):
        load_config(str(out))
    runner = CliRunner()
    for args in (["run", "--scenario", "safe", "--n", "5", "--config", str(out), "--out", str(tmp_path / "t.jsonl")],
                 ["gate", str(suggestion), "--baseline", str(out)],
                 ["check", str(tmp_path / "missing.jsonl"), "--config", str(out)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and str(out) in result.output and "config_id" in result.output, args
    assert not (tmp_path / "t.jsonl").exists()


def test_the_audit_line_is_written_before_the_profile_appears(suggestion, tmp_path, monkeypatch, quick_gate):
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"
    real_append, seen = approval.append_line, []

    def append(path, entry):
        seen.append((entry["event"], out.exists()))
        real_append(path, entry)

    monkeypatch.setattr(approval, "append_line", append)
    apply_suggestion(str(suggestion), approved_by="A", out=str(out), audit_log=str(log))
    assert seen == [("apply", False)] and out.exists()


def test_a_profile_that_fails_to_appear_is_marked_in_the_log_and_leaves_nothing(suggestion, tmp_path, monkeypatch,
                                                                                quick_gate):
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(approval.os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        apply_suggestion(str(suggestion), approved_by="A", out=str(out), audit_log=str(log))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"]  # no profile, no temporary file
    applied, failed = audit_lines(log)
    assert applied["event"] == "apply" and failed["event"] == "apply_failed"
    assert failed["failed_entry"] == applied["entry"] and failed["profile_sha256"] == applied["profile_sha256"]
    assert "No space" in failed["reason"]


def test_a_log_that_cannot_take_the_line_leaves_no_profile(suggestion, tmp_path, monkeypatch, quick_gate):
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"

    def full(path, entry):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(approval, "append_line", full)
    with pytest.raises(OSError):
        apply_suggestion(str(suggestion), approved_by="A", out=str(out), audit_log=str(log))
    assert list(tmp_path.iterdir()) == []


def test_a_dangling_audit_log_link_is_refused_before_anything_is_written(suggestion, tmp_path):
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"
    log.symlink_to(tmp_path / "gone" / "audit.jsonl")
    with pytest.raises(ApplyUsageError, match="link"):
        apply_suggestion(str(suggestion), approved_by="A", out=str(out), audit_log=str(log))
    result = CliRunner().invoke(app, ["apply", str(suggestion), "--approved-by", "A", "--out", str(out),
                                      "--audit-log", str(log)])
    assert result.exit_code == 2 and "--audit-log" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl"] and not log.exists()


def test_two_concurrent_applies_to_one_new_file_write_it_once(suggestion, tmp_path, monkeypatch, accepted):
    out, log = tmp_path / "profiles" / "p.toml", tmp_path / "audit.jsonl"
    both_gated = threading.Barrier(2, timeout=60)

    def gate_then_wait(*args, **kwargs):
        both_gated.wait()  # both runs have passed the early existence check and the gate
        return accepted

    monkeypatch.setattr(approval, "gate_suggestion", gate_then_wait)
    outcomes: dict[str, object] = {}

    def run(name):
        try:
            outcomes[name] = apply_suggestion(str(suggestion), approved_by=name, out=str(out), audit_log=str(log))
        except ApplyRefused as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=(name,)) for name in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = [name for name, o in outcomes.items() if not isinstance(o, Exception)]
    refusals = [o for o in outcomes.values() if isinstance(o, Exception)]
    assert len(written) == 1 and len(refusals) == 1
    assert isinstance(refusals[0], ApplyUsageError) and "exists" in str(refusals[0])
    (entry,) = audit_lines(log)
    assert entry["who"] == written[0] == load_config(str(out)).meta["approved_by"]
    assert entry["profile_sha256"] == sha256(out)


# ------------------------------------------------------------ the audit log stays readable


def test_an_append_that_fails_part_way_leaves_the_log_as_it_was(suggestion, tmp_path, quick_gate):
    """A file-size limit cuts the audit line after 58 bytes: the log is cut back to its
    old size, so the next apply's line starts on a line of its own and is found."""
    log = tmp_path / AUDIT_LOG_NAME
    log.write_text('{"event":"note","pad":"' + "x" * (102400 - 84) + '"}\n')
    before = log.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 58, hard))
    try:
        result = CliRunner().invoke(app, ["apply", str(suggestion), "--approved-by", "A",
                                          "--out", str(tmp_path / "p1.toml")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert result.exit_code == 2 and str(log) in result.output and "<file>" not in result.output
    assert log.read_bytes() == before and not (tmp_path / "p1.toml").exists()
    apply_suggestion(str(suggestion), approved_by="A", out=str(tmp_path / "p2.toml"))
    record = audit_record(tmp_path / "p2.toml")
    assert record is not None and record[1] == log
    assert log.read_bytes().startswith(before)


def test_a_log_whose_last_line_is_torn_is_refused_untouched(suggestion, tmp_path, quick_gate):
    log, out = tmp_path / "audit.jsonl", tmp_path / "p.toml"
    log.write_text('{"event": "note"}\n{"event": "apply", "entry": "12')  # cut by hand, or a failed write
    before = log.read_bytes()
    result = CliRunner().invoke(app, ["apply", str(suggestion), "--approved-by", "A", "--out", str(out),
                                      "--audit-log", str(log)])
    assert result.exit_code == 2 and f"--audit-log {log}" in result.output and "newline" in result.output
    assert log.read_bytes() == before and not out.exists()
    with pytest.raises(AuditLogError, match=re.escape(str(log))):  # and under the log's lock, at append time
        append_line(log, {"event": "note"})
    assert log.read_bytes() == before


# ------------------------------------------------------------ the log and the profile are files of their own


@pytest.fixture
def named_files(tmp_path):
    """A suggestion that names a baseline file, a Parquet data folder and a regression suite."""
    here = tmp_path / "learned"
    (here / "data").mkdir(parents=True)
    (here / "mine.toml").write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\n')
    (here / "data" / "part-0.parquet").write_bytes(b"PAR1 not read here PAR1")
    (here / "cases.jsonl").write_text('{"state": {}}\n')
    (here / "s.toml").write_text('extends = "mine.toml"\nJ_MIN = 0.8\nH_MAX = 0.35\n'
                                 '[meta.data]\nsource = "states"\npath = "data"\nsha256 = "0"\n'
                                 '[meta.regression]\npath = "cases.jsonl"\nsha256 = "0"\n')
    return here


@pytest.mark.parametrize("option", ["--audit-log", "--out"])
@pytest.mark.parametrize("name", ["s.toml", "mine.toml", "data/part-0.parquet", "cases.jsonl"])
def test_a_hard_link_to_a_file_the_suggestion_names_is_refused_as_log_or_profile(named_files, tmp_path, option,
                                                                                 name, quick_gate):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "link.jsonl"
    link.hardlink_to(named_files / name)
    files = {p: p.read_bytes() for p in named_files.rglob("*") if p.is_file()}
    out = link if option == "--out" else elsewhere / "p.toml"
    args = ["apply", str(named_files / "s.toml"), "--approved-by", "A", "--out", str(out), "--force"]
    if option == "--audit-log":
        args += ["--audit-log", str(link)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"{option} {link}" in result.output
    assert {p: p.read_bytes() for p in named_files.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in elsewhere.iterdir()) == ["link.jsonl"]


def test_a_log_that_is_the_profile_or_a_given_file_by_another_path_is_refused(named_files, tmp_path, quick_gate):
    suite, out = tmp_path / "suite.jsonl", tmp_path / "p.toml"
    suite.write_text('{"state": {}}\n')
    out.write_text("# someone's profile\n")
    for log, extra in ((tmp_path / "log1.jsonl", ["--regression", str(suite)]), (tmp_path / "log2.jsonl", [])):
        log.hardlink_to(suite if extra else out)
        result = CliRunner().invoke(app, ["apply", str(named_files / "s.toml"), "--approved-by", "A", "--out",
                                          str(out), "--force", "--audit-log", str(log), *extra])
        assert result.exit_code == 2 and f"--audit-log {log}" in result.output
    assert suite.read_text() == '{"state": {}}\n' and out.read_text() == "# someone's profile\n"


def test_a_log_linked_to_an_input_while_the_gate_runs_is_refused_and_nothing_is_written(suggestion, tmp_path,
                                                                                         monkeypatch, accepted):
    source = tmp_path / "s.toml"
    source.write_bytes(suggestion.read_bytes())
    out, log = tmp_path / "p.toml", tmp_path / "audit.jsonl"

    def link_then_accept(*args, **kwargs):
        log.hardlink_to(source)  # the log did not exist when it was checked; now it is the suggestion
        return accepted

    monkeypatch.setattr(approval, "gate_suggestion", link_then_accept)
    with pytest.raises(ApplyUsageError, match=f"audit-log {log}: is the suggestion"):
        apply_suggestion(str(source), approved_by="A", out=str(out), audit_log=str(log))
    assert source.read_bytes() == suggestion.read_bytes() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "s.toml"]


# ------------------------------------------------------------ the approver's name, and what apply prints


@pytest.mark.parametrize("name", ["X\nY", "\u200b", " \u200b\u200d ", "A\x1b[2J", "\u202eevil", "A\u2028B", "\u0301"])
def test_apply_refuses_an_approver_name_with_control_or_no_visible_characters(suggestion, tmp_path, name,
                                                                              quick_gate):
    out = tmp_path / "p.toml"
    message = refused(log=tmp_path / "audit.jsonl", suggestion_path=str(suggestion), approved_by=name, out=str(out))
    assert message.startswith("--approved-by") and not out.exists()


def test_apply_prints_the_paths_it_wrote_with_control_characters_escaped(suggestion, tmp_path, quick_gate):
    out = tmp_path / "p\x1b[31m.toml"
    result = CliRunner().invoke(app, ["apply", str(suggestion), "--approved-by", "A", "--out", str(out)])
    assert result.exit_code == 0 and out.exists()
    assert "\x1b" not in result.output and "p\\x1b[31m.toml" in result.output

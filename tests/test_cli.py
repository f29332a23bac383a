"""The command-line contract (docs/README.md): exit codes, atomic outputs, determinism, errors."""

import gzip
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app

runner = CliRunner()

GOOD = {"physical": 0.5, "social": 0.4, "context": 0.6, "risk": 0.7, "compassion": 0.5, "justice": 0.5,
        "harm_sens": 0.5, "responsibility": 0.5, "empathy": 0.5}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_version_names_tool_and_engine_model():
    result = invoke("--version")
    assert result.exit_code == 0 and "ami-v1" in result.output


def test_run_twice_gives_byte_identical_traces(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (a, b):
        assert invoke("run", "--scenario", "chaos", "--n", 300, "--seed", 4, "--out", out).exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    records = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(records) == 300 and all(r["model"] == "ami-v1" and r["chaos"] is False for r in records)


def test_run_gz_output_and_chaos_flag(tmp_path):
    out = tmp_path / "t.jsonl.gz"
    assert invoke("run", "--scenario", "safe", "--n", 20, "--chaos", "--out", out).exit_code == 0
    records = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(records) == 20 and all(r["chaos"] for r in records)


def test_run_from_states_file_with_profile(tmp_path):
    states = write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "stream": "a", "id": 7, "t": 12.5})])
    out = tmp_path / "t.jsonl"
    assert invoke("run", "--states", states, "--profile", "chaos_tuning", "--out", out).exit_code == 0
    record = json.loads(out.read_text())
    assert record["t"] == 12.5 and record["id"] == 7 and record["stream"] == "a"


BAD_STATES = {
    "broken_json": ("{\"physical\": 0.5,", "JSON"),
    "missing_field": (json.dumps({k: v for k, v in GOOD.items() if k != "risk"}), "risk"),
    "nan": (json.dumps(GOOD).replace('"risk": 0.7', '"risk": NaN'), "risk"),
    "string": (json.dumps({**GOOD, "risk": "high"}), "risk"),
    "boolean": (json.dumps({**GOOD, "risk": True}), "risk"),
    "out_of_range": (json.dumps({**GOOD, "risk": 1.5}), "risk"),
    "extra_key": (json.dumps({**GOOD, "mood": 0.5}), "mood"),
    "bad_stream_type": (json.dumps({**GOOD, "stream": [1]}), "stream"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_bad_states_exit_2_with_file_line_and_field_and_no_output(tmp_path, case):
    line, field = BAD_STATES[case]
    states = write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD), json.dumps(GOOD), line])
    out = tmp_path / "t.jsonl"
    result = invoke("run", "--states", states, "--out", out)
    assert result.exit_code == 2
    assert "s.jsonl:3" in result.output and field in result.output
    assert not out.exists() and not list(tmp_path.glob(".t.jsonl*"))


def test_empty_states_file_exits_2(tmp_path):
    states = tmp_path / "s.jsonl"
    states.write_text("")
    out = tmp_path / "t.jsonl"
    result = invoke("run", "--states", states, "--out", out)
    assert result.exit_code == 2 and not out.exists()


BAD_TRACE_EDITS = {
    "missing_field": lambda r: r.pop("level"),
    "wrong_action_length": lambda r: r.update(final_action=[0.0, 0.5, 0.0]),
    "string_number": lambda r: r.update(cus="0.5"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRACE_EDITS))
def test_bad_traces_exit_2_with_line_and_field(tmp_path, case):
    traces = tmp_path / "t.jsonl"
    assert invoke("run", "--scenario", "balanced", "--n", 5, "--out", traces).exit_code == 0
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    BAD_TRACE_EDITS[case](records[3])
    write_lines(traces, [json.dumps(r) for r in records])
    result = invoke("metrics", traces)
    assert result.exit_code == 2 and "t.jsonl:4" in result.output


def test_metrics_json_matches_the_definitions(tmp_path):
    traces = tmp_path / "t.jsonl"
    assert invoke("run", "--scenario", "chaos", "--n", 400, "--seed", 2, "--out", traces).exit_code == 0
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    result = invoke("metrics", traces, "--json", "--weights", "2,1,0")
    assert result.exit_code == 0
    got = json.loads(result.output)
    fsr = sum(r["level"] == 2 for r in records) / 400
    cus = sum(r["cus"] for r in records) / 400
    assert got["fail_safe_rate"] == pytest.approx(fsr) and got["mean_cus"] == pytest.approx(cus)
    assert got["L"] == pytest.approx(2 * fsr + cus)


def test_check_passes_real_traces_and_fails_tampered_ones(tmp_path):
    traces = tmp_path / "t.jsonl"
    assert invoke("run", "--scenario", "chaos", "--n", 300, "--out", traces).exit_code == 0
    assert invoke("check", traces).exit_code == 0
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    l2 = next(i for i, r in enumerate(records) if r["level"] == 2)
    records[l2]["human_escalation"] = False
    write_lines(traces, [json.dumps(r) for r in records])
    result = invoke("check", traces)
    assert result.exit_code == 1 and f":{l2 + 1}:" in result.output


def test_explain_names_the_rule_that_fired(tmp_path):
    result = invoke("explain", "--state", json.dumps(GOOD), "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    # The rule shown is the one of the engine's decision: it names the level the engine gave.
    assert data["rule"].split(": ", 1)[1].startswith(f"level {data['trace']['level']}")
    assert data["n_actions"] == 625 and len(data["candidates"]) == data["n_candidates"]
    states = write_lines(tmp_path / "s.jsonl", [json.dumps({**GOOD, "risk": r / 10}) for r in range(10)])
    by_line = invoke("explain", "--states", states, "--line", 4, "--json")
    assert by_line.exit_code == 0 and json.loads(by_line.output)["state"]["risk"] == pytest.approx(0.3)


def test_usage_errors_exit_2(tmp_path):
    assert invoke("run", "--out", tmp_path / "x.jsonl").exit_code == 2
    assert invoke("run", "--scenario", "chaos", "--out", tmp_path / "x.jsonl").exit_code == 2
    assert invoke("run", "--scenario", "nope", "--n", 5, "--out", tmp_path / "x.jsonl").exit_code == 2
    assert invoke("run", "--scenario", "safe", "--n", 5, "--profile", "nope", "--out", tmp_path / "x").exit_code == 2
    assert invoke("metrics", tmp_path / "missing.jsonl").exit_code == 2
    assert not list(tmp_path.iterdir())


def test_profiles_lists_all_four():
    result = invoke("profiles")
    assert result.exit_code == 0
    for name in ("base", "production_safe", "high_critical", "chaos_tuning"):
        assert name in result.output


def test_console_script_runs_and_pipes_to_stdout():
    exe = [sys.executable, "-m", "ami_engine.cli"]
    result = subprocess.run([*exe, "run", "--scenario", "safe", "--n", "3", "--out", "-"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 3


def test_learn_end_to_end_writes_suggestion_history_and_report(tmp_path):
    out, hist, rep = tmp_path / "s.toml", tmp_path / "h.jsonl", tmp_path / "r.html"
    result = invoke("learn", "--scenario", "chaos", "--n", 1200, "--seed", 3, "--strategy", "sobol", "--budget", 16,
                    "--batch-size", 8, "--out", out, "--history", hist, "--report", rep, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["accepted"] and summary["meta"]["gate"]["verdict"] == "ACCEPT"
    from ami_engine.config import load_config

    assert load_config(str(out)).config_id == summary["meta"]["config_id"]
    assert len(hist.read_text().splitlines()) == 2
    assert rep.read_text().startswith("<!DOCTYPE html>")
    again = invoke("learn", "--scenario", "chaos", "--n", 1200, "--seed", 3, "--strategy", "sobol", "--budget", 16,
                   "--batch-size", 8, "--out", tmp_path / "s2.toml", "--resume", "--study",
                   tmp_path / "s.study.journal")
    assert again.exit_code == 0, again.output
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("created")]  # noqa: E731
    assert strip((tmp_path / "s2.toml").read_text()) == strip(out.read_text())


def test_learn_on_bad_states_exits_2_naming_file_and_line(tmp_path):
    states = write_lines(tmp_path / "s.jsonl", [json.dumps(GOOD)] * 3 + [json.dumps({**GOOD, "justice": -1})])
    out = tmp_path / "s.toml"
    result = invoke("learn", "--states", states, "--budget", 4, "--out", out)
    assert result.exit_code == 2 and "s.jsonl:4" in result.output and "justice" in result.output
    assert not out.exists()


def test_learn_from_traces_without_states_says_metrics_only(tmp_path):
    traces = tmp_path / "t.jsonl"
    assert invoke("run", "--scenario", "balanced", "--n", 10, "--out", traces).exit_code == 0
    records = [json.loads(line) for line in traces.read_text().splitlines()]
    for r in records:
        del r["state"]
    write_lines(traces, [json.dumps(r) for r in records])
    result = invoke("learn", "--traces", traces, "--budget", 4, "--out", tmp_path / "s.toml")
    assert result.exit_code == 2 and "metrics only" in result.output

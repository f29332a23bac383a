"""learn's outcome said honestly: accepted, rejected, no improvement, not gated; the grid
against the budget; the summary on 80 columns; needless fail-safes defined."""

from __future__ import annotations

import io
import json

import numpy as np
from rich.console import Console
from typer.testing import CliRunner

from ami_engine import cli
from ami_engine.config import load_config
from ami_engine.gate import run_gate
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.learning.policy_optimizer import SearchSpace, make_strategy
from ami_engine.report import render_report

BASE = load_config("base")
runner = CliRunner()


def test_learn_without_a_gate_is_not_gated_and_never_accepted():
    result = learn(data_from_scenario("chaos", 1500, 4), BASE, LearnSettings(strategy="random", budget=16, seed=4))
    assert result.status == "not gated" and result.accepted is False
    assert result.suggestion_toml["meta"]["status"] == "not gated"


def test_no_candidate_better_than_the_baseline_is_no_improvement():
    result = learn(data_from_scenario("chaos", 1500, 4), BASE, LearnSettings(strategy="random", budget=1, seed=4),
                   gate_fn=run_gate)
    assert result.status == "no improvement" and not result.accepted and result.gate is None
    html = render_report(result.suggestion_toml)
    assert "No improvement found" in html


def test_cli_no_improvement_exits_0_writes_no_suggestion_and_says_so(tmp_path):
    out = tmp_path / "s.toml"
    res = runner.invoke(cli.app, ["learn", "--scenario", "chaos", "--n", "1500", "--seed", "4", "--budget", "1",
                                  "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "no improvement found" in res.output and "+0.0%" not in res.output
    assert not out.exists()


def test_a_grid_larger_than_the_budget_says_so_and_spreads_over_the_box():
    space = SearchSpace()
    grid = make_strategy("grid", space, seed=0, budget=40, points_per_axis=3)
    assert "exceeds the budget of 40" in grid.note
    X = grid.propose(0, 40, np.empty((0, space.dim)), np.empty(0), space.lower)
    assert len(np.unique(X, axis=0)) == 40
    assert all(len(np.unique(X[:, j])) == 3 for j in range(space.dim))  # every axis at every resolution level
    assert make_strategy("grid", space, seed=0, points_per_axis=3).note is None  # no budget: C order, no note


def test_learn_records_the_grid_note():
    result = learn(data_from_scenario("chaos", 1500, 4), BASE,
                   LearnSettings(strategy="grid", budget=20, seed=4, strategy_options={"points_per_axis": 2}))
    assert "exceeds the budget of 20" in result.suggestion_toml["meta"]["strategy_note"]


def test_the_learn_summary_fits_80_columns_opens_with_the_promise_and_defines_needless(tmp_path, monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "out_console", Console(file=buffer, width=80, color_system=None))
    out = tmp_path / "s.toml"
    res = runner.invoke(cli.app, ["learn", "--scenario", "chaos", "--n", "1500", "--seed", "4", "--strategy",
                                  "random", "--budget", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = buffer.getvalue()
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "\u2026" not in text  # no word cut short
    assert lines[0].startswith("With 95% confidence, on decisions like the held-out ones, the loss is")
    flat = " ".join(text.split())
    assert "on critical states it still fails safe at least" in flat
    assert "A baseline fail-safe is needless when" in flat and "J - J_MIN of their final actions" in flat
    assert "worse: clamp distortion on critical profile" in flat
    doc = out.read_text()
    assert "[meta.certificate]" in doc and "promise = " in doc


def test_the_suggestion_records_the_certificate_and_the_report_opens_with_it(gated_learning):
    result = gated_learning
    meta = result.suggestion_toml["meta"]
    cert = meta["certificate"]
    assert result.accepted and cert["passed"] and cert["family_delta"] == 0.05
    assert cert["delta"] == 0.05 / 3  # Bonferroni over the finalists the gate may try
    assert cert["promise"].startswith("with 95% confidence")
    margins = meta["needless"]["margins"]
    assert margins["J_minus_J_MIN"]["min"] >= 0 and margins["H_MAX_minus_H"]["min"] >= 0
    assert meta["needless"]["meet_invariants"] == meta["needless"]["count"]
    html = render_report(result.suggestion_toml, result.history)
    summary = html[html.index('id="summary"'):]
    assert summary.index("With 95% confidence") < summary.index("<ul>")
    assert "What makes a fail-safe needless" in html and "Worse under the suggestion" in html
    figures = json.loads(html.split('id="ami-figures">')[1].split("</script>")[0])
    names = [trace.get("name") for trace in figures["fig-learning-loss"]["data"]]
    assert "baseline, held-out" in names


def test_gate_delta_sets_the_certificates_confidence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('extends = "base"\nJ_MIN = 0.8\n')
    res = runner.invoke(cli.app, ["gate", str(cfg), "--delta", "0.01", "--json"])
    assert res.exit_code == 0, res.output
    cert = next(c for c in json.loads(res.output)["checks"] if c["name"] == "certificate")
    assert cert["figure"]["delta"] == 0.01 and cert["figure"]["loss_reduction_lower"] == "n/a"
    bad = runner.invoke(cli.app, ["gate", str(cfg), "--delta", "1.5"])
    assert bad.exit_code == 2


def test_flags_show_no_value_in_help():
    res = runner.invoke(cli.app, ["learn", "--help"], terminal_width=120)
    assert res.exit_code == 0 and "--resume" in res.output and "<bool>" not in res.output

"""The safety gate (docs/gate.md): ACCEPT what is safe; REJECT each unsafe case, naming the check."""

import hashlib
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.gate import (
    BaselineRefused,
    CriticalFloor,
    GateThresholds,
    apply_suggestion,
    gate_suggestion_file,
    run_gate,
)
from ami_engine.gate.audit import AUDIT_LOG_NAME, audit_record
from ami_engine.gate.checks import CHECK_NAMES, check_critical_floor, check_heldout_loss
from ami_engine.gate.suggestions import suggestion_baseline
from ami_engine.gate.yardstick import check_baseline
from ami_engine.io.states import read_states, write_states
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.tomlfile import dumps_toml
from ami_engine.learning.loss import LossWeights
from ami_engine.learning.offline_loop import (
    data_from_scenario,
    data_from_states_file,
    split_states,
)
from ami_engine.scenario import generate
from ami_engine.suggestion import SuggestionError

BASE = load_config("base")


@pytest.fixture(scope="module")
def held_out():
    return generate("balanced", 1000, 2)


def test_gate_accepts_base_against_itself_and_shows_every_check(base_gate):
    report = base_gate
    assert report.verdict == "ACCEPT" and report.accepted and report.failed == []
    assert [c.name for c in report.checks] == list(CHECK_NAMES) == [
        "bounds", "invariants", "determinism", "heldout_loss", "critical_floor", "regression", "certificate"]
    assert all(c.threshold and c.detail for c in report.checks)
    assert report.check("invariants").figure == 0 and "40000 records" in report.check("invariants").threshold
    assert len(report.check("determinism").figure) == 64  # the SHA-256 of the traces
    held = report.check("heldout_loss")
    assert isinstance(held.figure, float) and f"{held.figure:.6g}" in held.threshold
    assert set(report.check("critical_floor").figure) == {"fail_safe_rate", "mean_H"}
    assert report.check("regression").figure == "n/a" and "not given" in report.check("regression").detail
    meta = json.loads(report.to_json())
    assert meta == report.to_meta() and meta["verdict"] == "ACCEPT"
    assert [set(c) for c in meta["checks"]] == [{"name", "passed", "figure", "threshold", "detail"}] * 7
    console = Console(record=True, width=200)
    report.print(console)
    text = console.export_text()
    assert "ACCEPT" in text and all(name in text for name in CHECK_NAMES)


def test_gate_accepts_a_real_suggestion_from_learn(gated_learning):
    result = gated_learning
    assert result.accepted
    assert result.suggestion_toml["meta"]["gate"]["verdict"] == "ACCEPT"
    assert run_gate(result.suggestion, BASE, held_out=result.held_out).verdict == "ACCEPT"


def test_a_learned_parameter_outside_its_bounds_is_rejected_by_bounds():
    report = run_gate(BASE.replace(J_MIN=0.97), BASE)
    assert report.verdict == "REJECT" and "bounds" in report.failed
    assert "J_MIN = 0.97 is outside its bounds [0.5, 0.95]" in report.check("bounds").detail


def test_a_changed_hard_floor_is_rejected_by_bounds():
    report = run_gate(BASE.replace(J_CRITICAL=0.6), BASE)
    assert report.verdict == "REJECT" and report.failed == ["bounds"]
    assert "J_CRITICAL = 0.6 differs from the baseline's 0.7" in report.check("bounds").detail


def test_a_config_that_worsens_heldout_loss_is_rejected(held_out):
    report = run_gate(BASE.replace(J_MIN=0.95, H_MAX=0.15), BASE, held_out=held_out)
    assert report.verdict == "REJECT" and report.failed == ["heldout_loss", "certificate"]
    check = report.check("heldout_loss")
    baseline_loss = float(check.threshold.split()[1])
    assert check.figure > baseline_loss and "1000 held-out records" in check.detail


def test_a_heldout_tolerance_lets_a_slightly_worse_config_through(held_out):
    worse = BASE.replace(J_MIN=0.87)
    strict = check_heldout_loss(worse, BASE, held_out, LossWeights())
    assert not strict.passed
    excess = strict.figure - float(strict.threshold.split()[1])
    assert check_heldout_loss(worse, BASE, held_out, LossWeights(), tolerance=2 * excess).passed
    with pytest.raises(ValueError, match="held-out tolerance"):
        GateThresholds(heldout_tolerance=-0.1)


def test_removing_nearly_all_critical_fail_safes_is_rejected_by_the_critical_floor(base_gate):
    loose = BASE.replace(J_MIN=0.50, H_MAX=0.50)  # J_MIN at its lower bound, H_MAX at its upper
    report = run_gate(loose, BASE)
    assert report.verdict == "REJECT" and report.failed == ["critical_floor", "certificate"]
    check = report.check("critical_floor")
    floor = 0.25 * base_gate.check("critical_floor").figure["fail_safe_rate"]
    assert check.figure["fail_safe_rate"] < floor
    assert "fail-safe rate >=" in check.threshold and "mean H <=" in check.threshold


def test_a_critical_factor_of_zero_turns_the_floor_off_but_shows_its_figures():
    loose = BASE.replace(J_MIN=0.50, H_MAX=0.50)
    check = check_critical_floor(loose, BASE, CriticalFloor(factor=0))
    assert check.passed and "off" in check.threshold
    assert check.figure == check_critical_floor(loose, BASE, CriticalFloor()).figure


def test_a_regression_state_below_its_expected_level_is_rejected_by_regression(tmp_path):
    states = generate("safe", 40, 1)
    level = run(states, BASE).level
    calm, alarm = int((level == 0).argmax()), int((level > 0).argmax())
    assert level[calm] == 0 and level[alarm] > 0
    state = [dict(zip(STATE_FIELDS, row)) for row in states.values.tolist()]
    lines = [
        {**state[calm], "id": "calm", "expect_level_min": 2},  # decided at level 0 under base
        {**state[alarm], "id": "alarm", "expect_level_min": int(level[alarm])},
    ]
    suite = tmp_path / "regression.jsonl"
    suite.write_text("".join(json.dumps(r) + "\n" for r in lines))
    config = tmp_path / "config.toml"
    config.write_text('extends = "base"\n')
    report = gate_suggestion_file(str(config), regression=str(suite))
    assert report.verdict == "REJECT" and report.failed == ["regression"]
    check = report.check("regression")
    assert check.figure == 1 and "position 0 (id calm) expects >= 2" in check.detail
    assert report.check("heldout_loss").figure == "n/a"  # the file names no data
    assert run_gate(BASE, BASE, regression=read_states(suite, allow_expect_level=True).subset([1])).accepted


def _suggestion(tmp_path, data, seed=3, **params):
    split = split_states(data.states, seed, 0.8)
    doc = {"extends": "base", **params, "meta": {"data": data.meta(), "split": split.meta()}}
    path = tmp_path / "suggestion.toml"
    path.write_text(dumps_toml(doc))
    return path, split


def test_gate_on_a_suggestion_file_rebuilds_its_heldout_data(tmp_path):
    data = data_from_scenario("balanced", 800, 3)
    path, split = _suggestion(tmp_path, data, J_MIN=0.8, H_MAX=0.35)
    report = gate_suggestion_file(str(path))
    assert report.verdict == "ACCEPT"
    held = report.check("heldout_loss")
    assert isinstance(held.figure, float) and f"{split.held_out.size} held-out records" in held.detail


def test_gate_refuses_a_suggestion_whose_data_changed(tmp_path):
    data = data_from_scenario("balanced", 200, 3)
    path, _ = _suggestion(tmp_path, data)
    doc = path.read_text().replace(data.sha256, "0" * 64)
    path.write_text(doc)
    with pytest.raises(SuggestionError, match="SHA-256"):
        gate_suggestion_file(str(path))


def test_gate_refuses_a_suggestion_whose_data_file_is_gone(tmp_path):
    meta = {"data": {"source": "states", "path": str(tmp_path / "gone.jsonl"), "sha256": "0" * 64},
            "split": {"seed": 1, "train_fraction": 0.8}}
    path = tmp_path / "s.toml"
    path.write_text(dumps_toml({"extends": "base", "meta": meta}))
    with pytest.raises(SuggestionError, match="not readable"):
        gate_suggestion_file(str(path))
    path.write_text(dumps_toml({"extends": "base", "meta": {"data": meta["data"]}}))
    with pytest.raises(SuggestionError, match=r"\[meta.split\]"):
        gate_suggestion_file(str(path))


def test_the_baseline_of_a_suggestion_is_what_it_extends_read_from_its_folder(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "production_safe"\nAS_SOFT_THRESHOLD = 0.2\n')
    sub = tmp_path / "out"
    sub.mkdir()
    path = sub / "s.toml"
    path.write_text('extends = "../mine.toml"\nJ_MIN = 0.7\n')
    baseline = suggestion_baseline(load_config(str(path)), str(path))
    assert baseline.config_id == load_config(str(tmp_path / "mine.toml")).config_id


def test_a_relative_states_file_is_found_next_to_the_suggestion(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    write_states(folder / "states.jsonl", generate("balanced", 400, 5))
    monkeypatch.chdir(folder)
    data = data_from_states_file("states.jsonl")
    path, split = _suggestion(folder, data, J_MIN=0.8)
    monkeypatch.chdir(tmp_path)
    report = gate_suggestion_file(str(path.relative_to(tmp_path)))
    assert f"{split.held_out.size} held-out records" in report.check("heldout_loss").detail
    (folder / "states.jsonl").write_text((folder / "states.jsonl").read_text().replace("0.", "0.0", 1))
    with pytest.raises(SuggestionError, match="SHA-256"):
        gate_suggestion_file(str(path.relative_to(tmp_path)))


# ------------------------------------------------------------------- the yardstick


def test_a_suggestion_cannot_choose_a_weaker_baseline_as_its_yardstick(tmp_path):
    weak = tmp_path / "weak.toml"
    weak.write_text('extends = "base"\nJ_CRITICAL = 0.0\nH_CRITICAL = 1.0\nCONFIDENCE_ESCALATION_FORCE = 0.0\n')
    suggestion = tmp_path / "s.toml"
    suggestion.write_text('extends = "weak.toml"\nJ_MIN = 0.8\n')
    with pytest.raises(BaselineRefused) as exc:
        gate_suggestion_file(str(suggestion))
    message = str(exc.value)
    assert "built-in profile base" in message
    for part in ("J_CRITICAL = 0.0 is lower than 0.7", "H_CRITICAL = 1.0 is higher than 0.6",
                 "CONFIDENCE_ESCALATION_FORCE = 0.0 is lower than 0.2"):
        assert part in message
    runner = CliRunner()
    result = runner.invoke(app, ["gate", str(suggestion)])
    assert result.exit_code == 2 and "J_CRITICAL" in result.output
    plain = tmp_path / "plain.toml"
    plain.write_text('extends = "base"\nJ_MIN = 0.8\n')
    result = runner.invoke(app, ["gate", str(plain), "--baseline", str(weak)])
    assert result.exit_code == 2 and "H_CRITICAL" in result.output


@pytest.mark.parametrize("line, weaker", [
    ("J_CRITICAL = 0.69", "J_CRITICAL"), ("J_CRITICAL = 0.75", None),
    ("H_CRITICAL = 0.61", "H_CRITICAL"), ("H_CRITICAL = 0.5", None),
    ("CONFIDENCE_ESCALATION_FORCE = 0.19", "CONFIDENCE_ESCALATION_FORCE"), ("CONFIDENCE_ESCALATION_FORCE = 0.3", None),
    ("DIVERGENCE_HARD_THRESHOLD = 0.6", "DIVERGENCE_HARD_THRESHOLD"), ("AS_SOFT_THRESHOLD = 0.1", "AS_SOFT_THRESHOLD"),
    ("C_MIN = 0.3", "C_MIN"), ("C_MAX = 0.8", "C_MAX"), ("SIGMA_MAX = 0.6", "SIGMA_MAX"),
    ("SAFE_ACTION = [0.0, 0.5, 0.0, 0.75]", "SAFE_ACTION"), ("ACTION_GRID = [0.0, 0.5, 1.0]", "ACTION_GRID"),
    ("DE_TEMPERATURE = 0.02", "DE_TEMPERATURE"), ("CUS_MEAN_WINDOW = 20", "CUS_MEAN_WINDOW"),
    ("J_MIN = 0.5", None),  # learned parameters are the gate's bounds check's business
])
def test_each_non_learned_parameter_may_only_be_made_safer_in_a_baseline(tmp_path, line, weaker):
    path = tmp_path / "mine.toml"
    path.write_text(f'extends = "base"\n{line}\n')
    baseline = load_config(str(path))
    if weaker is None:
        assert check_baseline(baseline).label == "built-in profile base"
    else:
        with pytest.raises(BaselineRefused, match=rf"baseline {path}: .*{weaker} = "):
            check_baseline(baseline)


def test_the_yardstick_is_the_nearest_built_in_along_extends_and_never_a_changed_copy(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "production_safe"\nAS_SOFT_THRESHOLD = 0.2\n')
    assert check_baseline(load_config(str(mine))).label == "built-in profile production_safe"
    mine.write_text('extends = "production_safe"\nJ_CRITICAL = 0.5\n')
    with pytest.raises(BaselineRefused, match="production_safe it is judged against: J_CRITICAL = 0.5 is lower"):
        check_baseline(load_config(str(mine)))
    with pytest.raises(BaselineRefused, match="J_CRITICAL = 0.1"):
        check_baseline(BASE.replace(J_CRITICAL=0.1))  # a config in memory claiming to be base


def test_an_applied_profile_is_a_yardstick_only_while_its_audit_record_matches(tmp_path):
    suggestion = tmp_path / "s.toml"
    suggestion.write_text('extends = "production_safe"\nJ_MIN = 0.7\n')
    profile = tmp_path / "profiles" / "tuned.toml"
    apply_suggestion(str(suggestion), approved_by="A", out=str(profile))
    mine = tmp_path / "mine.toml"
    mine.write_text(f'extends = "{profile}"\nAS_SOFT_THRESHOLD = 0.2\n')
    assert check_baseline(load_config(str(mine))).label.startswith(f"applied profile {profile}")
    log = profile.parent / AUDIT_LOG_NAME
    entry = json.loads(log.read_text())
    log.write_text(json.dumps({**entry, "profile_sha256": "0" * 64}) + "\n")  # no record of these bytes
    with pytest.raises(BaselineRefused, match="built-in profile base it is judged against: .*J_CRITICAL = 0.55"):
        check_baseline(load_config(str(mine)))
    log.unlink()
    with pytest.raises(BaselineRefused, match="J_CRITICAL"):
        check_baseline(load_config(str(profile)))


def test_a_forged_audit_line_does_not_make_a_weak_profile_a_yardstick(tmp_path):
    """A weak 'applied profile' with a correct config_id and a log line of its own making."""
    weak = BASE.replace(J_CRITICAL=0.1, H_CRITICAL=0.95, CONFIDENCE_ESCALATION_FORCE=0.0)
    doc = {**weak.to_dict(), "meta": {"config_id": weak.config_id, "audit_log": "forged.jsonl"}}
    profile = tmp_path / "weak.toml"
    profile.write_bytes(dumps_toml(doc).encode())
    line = {"event": "apply", "entry": "0" * 16, "config_id": weak.config_id,
            "profile_sha256": hashlib.sha256(profile.read_bytes()).hexdigest()}
    (tmp_path / "forged.jsonl").write_text(json.dumps(line) + "\n")
    assert audit_record(profile) is not None  # the log does "match"
    suggestion = tmp_path / "s.toml"
    suggestion.write_text('extends = "weak.toml"\nJ_MIN = 0.8\n')
    with pytest.raises(BaselineRefused, match="built-in profile base it is judged against: J_CRITICAL = 0.1"):
        gate_suggestion_file(str(suggestion))


def test_learn_refuses_a_weakened_baseline_before_it_searches(tmp_path):
    weak = tmp_path / "weak.toml"
    weak.write_text('extends = "base"\nJ_CRITICAL = 0.3\n')
    out = tmp_path / "s.toml"
    result = CliRunner().invoke(app, ["learn", "--scenario", "safe", "--n", "100", "--config", str(weak),
                                      "--out", str(out)])
    assert result.exit_code == 2 and "J_CRITICAL = 0.3 is lower than 0.7" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weak.toml"]


# ------------------------------------------------------------ a baseline of its own choice

LOOSE = dict(J_MIN=0.5, H_MAX=0.5, SOFT_CLAMP_ALPHA=0.9, SOFT_CLAMP_BETA=0.9, SOFT_CLAMP_GAMMA=0.2,
             DELTA_CUS_THRESHOLD=0.25, CUS_MEAN_THRESHOLD=0.5)


def test_a_baseline_with_loose_learned_thresholds_cannot_lower_the_critical_floor(tmp_path):
    # Its hard floors are base's (so it passes as a baseline), its learned thresholds the
    # loosest the bounds allow: judged against it alone, the loosest suggestion would keep
    # the floor; the yardstick's figures hold the floor where base puts it.
    loose = "".join(f"{k} = {v}\n" for k, v in LOOSE.items())
    (tmp_path / "loose.toml").write_text('extends = "base"\n' + loose)
    suggestion = tmp_path / "s.toml"
    suggestion.write_text('extends = "loose.toml"\n' + loose)
    report = gate_suggestion_file(str(suggestion))
    floor = report.check("critical_floor")
    assert not floor.passed and "yardstick base's" in floor.detail
    base_rate = run_gate(BASE, BASE).check("critical_floor").figure["fail_safe_rate"]
    assert f"fail-safe rate >= {0.25 * base_rate:.6g}" in floor.threshold
    # The same suggestion judged against itself fails the same way: no baseline lowers it.
    assert not gate_suggestion_file(str(suggestion), baseline=str(suggestion)).check("critical_floor").passed


def test_chaos_tuning_is_no_yardstick(tmp_path):
    suggestion = tmp_path / "s.toml"
    suggestion.write_text('extends = "chaos_tuning"\nJ_MIN = 0.6\n')
    with pytest.raises(BaselineRefused, match="baseline chaos_tuning: weaker than the built-in profile base"):
        gate_suggestion_file(str(suggestion))
    assert check_baseline(load_config("production_safe")).label == "built-in profile production_safe"


def test_a_suggestion_whose_extends_no_longer_gives_its_recorded_baseline_is_refused(tmp_path):
    suggestion = tmp_path / "s.toml"
    suggestion.write_text(dumps_toml({"extends": "production_safe", "J_MIN": 0.7,
                                      "meta": {"baseline_config_id": BASE.config_id}}))
    with pytest.raises(SuggestionError, match=r"gives config_id .* learned against .*baseline_config_id"):
        gate_suggestion_file(str(suggestion))
    # The person at the command line may still name a baseline.
    assert gate_suggestion_file(str(suggestion), baseline="production_safe").baseline_id


@pytest.mark.parametrize("weights, problem", [([0, 0, 0], "all 0"), ([1e308, 1, 1], "in [0, 1e+06]"),
                                              ([0, 0, 0, 1], "all 0")])
def test_loss_weights_that_judge_nothing_or_overflow_are_refused(tmp_path, weights, problem):
    data = data_from_scenario("balanced", 200, 3)
    split = split_states(data.states, 3, 0.8)
    path = tmp_path / "s.toml"
    path.write_text(dumps_toml({"extends": "base", "meta": {"loss_weights": weights, "data": data.meta(),
                                                            "split": split.meta()}}))
    result = CliRunner().invoke(app, ["gate", str(path)])
    assert result.exit_code == 2 and "loss_weights" in result.output and problem in result.output


def test_a_split_without_its_size_or_method_is_refused(tmp_path):
    data = data_from_scenario("balanced", 200, 3)
    path, split = _suggestion(tmp_path, data)
    text = path.read_text()
    for line in (f"n_heldout = {split.held_out.size}\n", f'method = "{split.method}"\n'):
        assert line in text
        path.write_text(text.replace(line, ""))
        with pytest.raises(SuggestionError, match=r"\[meta.split\]: n_heldout"):
            gate_suggestion_file(str(path))


def test_a_tiny_delta_gives_a_verdict_not_a_crash(tmp_path):
    data = data_from_scenario("balanced", 400, 3)
    path, _ = _suggestion(tmp_path, data, J_MIN=0.8)
    result = CliRunner().invoke(app, ["gate", str(path), "--delta", "1e-300"])
    assert result.exit_code in (0, 1) and ("ACCEPT" in result.output or "REJECT" in result.output), result.output


def test_the_file_a_suggestion_extends_is_the_one_checked_however_it_changes_later(tmp_path):
    from ami_engine.suggestion import Suggestion

    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\n')
    checked = load_config(str(mine))
    suggestion = tmp_path / "s.toml"
    suggestion.write_text(dumps_toml({"extends": "mine.toml", "J_MIN": 0.8, "meta": {"baseline_file": {
        "path": "mine.toml", "sha256": hashlib.sha256(mine.read_bytes()).hexdigest()}}}))
    read = Suggestion.read(suggestion)
    mine.write_text('extends = "base"\nAS_SOFT_THRESHOLD = 0.2\nJ_MIN = 0.5\nH_MAX = 0.5\n')  # once checked
    assert read.baseline().config_id == checked.config_id
    from ami_engine.gate import gate_suggestion

    assert gate_suggestion(read).baseline_id == checked.config_id

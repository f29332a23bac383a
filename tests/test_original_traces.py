"""Traces in the original engine's own format: metrics, loss and check carry over.

The fixtures are written here by following that format: the twelve Phase 4.7.1 fields,
`confidence` and `delta_confidence` null where the original leaves them so (a decision
where no action passed its filter and its fail-safe did not fire has level 0, cus 0.0 and
a null confidence), `chaos` left out of some records, and the extra fields its collector
adds (`uncertainty`, `latency_ms`, `phase`, `run_id`, `created_at`). No state is logged.
Every expected figure is worked out from the records themselves, in plain Python.
"""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.io.files import InputError
from ami_engine.io.traces import read_traces
from ami_engine.learning.feedback_metrics import metrics_from_traces

SAFE = [0.0, 0.5, 0.0, 1.0]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def original_records(n, seed=0):
    """n decisions as the original engine's collector logs them (see the module docstring)."""
    rng = np.random.default_rng(seed)
    records = []
    previous_cus = None
    for i in range(n):
        kind = rng.choice(["normal", "clamped", "drift", "fail_safe", "no_candidate"], p=[0.3, 0.2, 0.1, 0.3, 0.1])
        raw = (rng.integers(0, 5, 4) / 4).tolist()
        cus = round(float(rng.random()), 6)
        confidence = round(float(rng.uniform(0.25, 1.0)), 6)
        record = {"t": 1_700_000_000.0 + i * 0.25, "cus": cus}
        final, level, clamp, delta_conf, human = raw, 0, False, None, False
        if kind == "clamped":
            final = [raw[0] * 0.6, raw[1], raw[2] * 0.5, min(1.0, raw[3] + 0.2)]
            level, clamp, delta_conf = 1, True, round(float(rng.normal(0, 0.05)), 6)
        elif kind == "drift":
            level = 1
        elif kind == "fail_safe":
            final, level, human = SAFE, 2, True
            confidence = round(float(rng.random()), 6)
        elif kind == "no_candidate":
            record["cus"] = cus = 0.0
            confidence = None
        record.update({
            "delta_cus": None if previous_cus is None else round(cus - previous_cus, 6),
            "cus_mean": round(float(rng.random()), 6),
            "raw_action": raw, "final_action": final, "soft_clamp": clamp, "level": level,
            "confidence": confidence, "delta_confidence": delta_conf, "human_escalation": human,
        })
        if i % 3:  # the original leaves `chaos` out unless a chaos test set it
            record["chaos"] = bool(i % 2)
        record.update({
            "uncertainty": {"hi": round(float(rng.random()), 4), "de": round(float(rng.random()), 4),
                            "as": round(float(rng.random()), 4)},
            "latency_ms": round(float(rng.uniform(0.1, 9.0)), 3),
            "phase": "4.7.1",
            "run_id": f"run-{seed:04d}",
            "created_at": f"2025-03-{1 + i % 28:02d}T12:00:{i % 60:02d}Z",
        })
        previous_cus = cus
        records.append(record)
    return records


def write_records(tmp_path, records, name="original.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def by_hand(records, weights=(1.5, 1.0, 0.5, 0.0)):
    """The metrics and L, straight from their definitions, one record at a time."""
    n = len(records)
    rate = [sum(r["level"] == k for r in records) / n for k in range(3)]
    mean_cus = math.fsum(r["cus"] for r in records) / n
    distortion = math.fsum(
        math.fsum(abs(f - a) for f, a in zip(r["final_action"], r["raw_action"])) / 4
        for r in records if r["soft_clamp"]) / n
    w1, w2, w3, w4 = weights
    return {
        "records": n, "fail_safe_rate": rate[2], "mean_cus": mean_cus, "clamp_distortion": distortion,
        "level_rates": rate, "null_confidence": sum(r["confidence"] is None for r in records),
        "L": w1 * rate[2] + w2 * mean_cus + w3 * distortion - w4 * (rate[0] + 0.5 * rate[1]),
    }


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    records = original_records(600, seed=7)
    assert any(r["confidence"] is None for r in records) and any("chaos" not in r for r in records)
    return records, write_records(tmp_path_factory.mktemp("original"), records)


# ------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("workers, block_bytes", [(1, 8 << 20), (2, 4096)])
def test_metrics_of_original_traces_are_the_figures_worked_out_from_the_records(original, workers, block_bytes):
    records, path = original
    sums = metrics_from_traces(path, workers=workers, block_bytes=block_bytes)
    expected = by_hand(records)
    assert sums.n == expected["records"]
    assert sums.fail_safe_rate == expected["fail_safe_rate"]
    assert sums.mean_cus == pytest.approx(expected["mean_cus"], rel=1e-13)
    assert sums.clamp_distortion == pytest.approx(expected["clamp_distortion"], rel=1e-13)
    assert list(sums.level_rates) == expected["level_rates"]
    assert sums.n_null_confidence == expected["null_confidence"] > 0


def test_metrics_command_reports_the_records_with_null_confidence(original):
    records, path = original
    expected = by_hand(records)
    result = invoke("metrics", path, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["records"] == 600 and got["null_confidence"] == expected["null_confidence"]
    assert got["L"] == pytest.approx(expected["L"], rel=1e-13)
    assert got["weights"] == [1.5, 1.0, 0.5]
    text = invoke("metrics", path)
    assert text.exit_code == 0
    row = next(line for line in text.output.splitlines() if "null confidence" in line)
    assert str(expected["null_confidence"]) in row


def test_the_original_loss_with_its_non_fail_reward_as_a_fourth_weight(original):
    records, path = original
    result = invoke("metrics", path, "--json", "--weights", "1.5,1.0,0.5,0.8")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["weights"] == [1.5, 1.0, 0.5, 0.8]
    assert got["L"] == pytest.approx(by_hand(records, (1.5, 1.0, 0.5, 0.8))["L"], rel=1e-13)
    three = json.loads(invoke("metrics", path, "--json").output)["L"]
    assert got["L"] < three  # the reward is subtracted


def test_a_missing_chaos_is_read_as_false(original):
    records, path = original
    chunk = read_traces(path)
    assert chunk.chaos.tolist() == [r.get("chaos", False) for r in records]
    assert np.isnan(chunk.confidence).tolist() == [r["confidence"] is None for r in records]


@pytest.mark.parametrize("field", ["level", "cus", "raw_action", "final_action", "soft_clamp"])
@pytest.mark.parametrize("how", ["null", "missing"])
def test_the_inputs_of_the_metrics_stay_strict(tmp_path, field, how):
    records = original_records(20, seed=2)
    if how == "null":
        records[12][field] = None
    else:
        del records[12][field]
    with pytest.raises(InputError) as caught:
        metrics_from_traces(write_records(tmp_path, records))
    assert (caught.value.line, caught.value.field) == (13, field)


def test_a_confidence_outside_0_1_is_still_an_error(tmp_path):
    records = original_records(5, seed=2)
    records[3]["confidence"] = 1.5
    result = invoke("metrics", write_records(tmp_path, records))
    assert result.exit_code == 2 and ":4: confidence:" in result.output


# --------------------------------------------------------------------------- check


def test_check_lists_null_confidence_records_as_findings_and_passes(original):
    records, path = original
    null_lines = [i + 1 for i, r in enumerate(records) if r["confidence"] is None]
    result = invoke("check", path, "--profile", "base", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["violations"] == []
    assert [f["line"] for f in got["findings"]] == null_lines
    assert {f["kind"] for f in got["findings"]} == {"null_confidence"}
    text = invoke("check", path, "--profile", "base")
    assert text.exit_code == 0
    assert f"{path}:{null_lines[0]}: finding (null_confidence): confidence:" in text.output
    assert "not violations" in text.output


def test_findings_do_not_hide_a_broken_invariant(tmp_path):
    records = original_records(60, seed=3)
    l2 = next(i for i, r in enumerate(records) if r["level"] == 2)
    records[l2]["human_escalation"] = False
    result = invoke("check", write_records(tmp_path, records), "--profile", "base", "--json")
    assert result.exit_code == 1
    got = json.loads(result.output)
    assert [v["line"] for v in got["violations"]] == [l2 + 1]
    assert [f["line"] for f in got["findings"]] == [i + 1 for i, r in enumerate(records) if r["confidence"] is None]


# --------------------------------------------------------------------------- learn


def test_learning_from_original_traces_says_why_they_cannot_be_replayed(original, tmp_path):
    _, path = original
    result = invoke("learn", "--traces", path, "--out", tmp_path / "s.toml", "--budget", 2)
    assert result.exit_code == 2
    assert "carry no `state`" in result.output and "metrics" in result.output
    assert not (tmp_path / "s.toml").exists()

"""States with keys that are not part of a state: refused unless `--drop-unknown` is given,
and then each dropped key is recorded in the decision's input_repairs."""

import json
import os

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.io.files import InputError
from ami_engine.io.states import read_states, states_from_records
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.traces import read_trace_records, read_traces

runner = CliRunner()
# The original engine's own example state carries a tenth key.
EXAMPLE = {"physical": 0.6, "social": 0.4, "context": 0.7, "risk": 0.65, "compassion": 0.5, "justice": 0.55,
           "harm_sens": 0.5, "responsibility": 0.6, "empathy": 0.5, "severity": 0.8}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_states_file(tmp_path, records, name="s.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def plain(record):
    return {k: v for k, v in record.items() if k in STATE_FIELDS}


def test_an_unknown_key_is_refused_by_default_and_the_error_names_the_option(tmp_path):
    path = write_states_file(tmp_path, [plain(EXAMPLE), EXAMPLE])
    with pytest.raises(InputError) as caught:
        read_states(str(path))
    assert (caught.value.line, caught.value.field) == (2, "severity")
    assert "--drop-unknown" in str(caught.value) and str(caught.value).endswith("(0.8)")


def test_drop_unknown_leaves_the_key_out_and_records_it(tmp_path):
    path = write_states_file(tmp_path, [plain(EXAMPLE), {**EXAMPLE, "zone": "b", "stream": "s"}])
    states = read_states(str(path), drop_unknown=True)
    assert states.values.tolist() == [[EXAMPLE[f] for f in STATE_FIELDS]] * 2
    assert states.streams == [None, "s"]
    assert states.repairs == [None, {"severity": "dropped", "zone": "dropped"}]


def test_dropped_keys_come_after_filled_and_clipped_fields(tmp_path):
    record = {**plain(EXAMPLE), "risk": 1.5, "severity": 0.8}
    del record["empathy"]
    states = read_states(str(write_states_file(tmp_path, [record])), drop_unknown=True, fill_missing=True,
                         clip=True)
    assert list(states.repairs[0].items()) == [("risk", "clipped"), ("empathy", "filled"), ("severity", "dropped")]


def test_records_in_memory_drop_alike():
    with pytest.raises(InputError, match="record 0: severity: unknown field"):
        states_from_records([EXAMPLE])
    states = states_from_records([EXAMPLE, plain(EXAMPLE)], drop_unknown=True)
    assert states.repairs == [{"severity": "dropped"}, None]


def test_run_with_drop_unknown_decides_as_without_the_key_and_says_so(tmp_path):
    extra = write_states_file(tmp_path, [EXAMPLE, plain(EXAMPLE)], "extra.jsonl")
    clean = write_states_file(tmp_path, [plain(EXAMPLE)] * 2, "clean.jsonl")
    refused = invoke("run", "--states", extra, "--out", tmp_path / "refused.jsonl")
    assert refused.exit_code == 2 and "severity" in refused.output and "--drop-unknown" in refused.output
    assert not (tmp_path / "refused.jsonl").exists()
    assert invoke("run", "--states", extra, "--drop-unknown", "--out", tmp_path / "a.jsonl").exit_code == 0
    assert invoke("run", "--states", clean, "--out", tmp_path / "b.jsonl").exit_code == 0
    got, want = read_trace_records(tmp_path / "a.jsonl"), read_trace_records(tmp_path / "b.jsonl")
    assert got[0].pop("input_repairs") == {"severity": "dropped"} and "input_repairs" not in got[1]
    assert got == want
    assert read_traces(tmp_path / "a.jsonl").input_repairs == [{"severity": "dropped"}, None]


def test_drop_unknown_without_a_states_file_is_a_usage_error(tmp_path):
    result = invoke("run", "--scenario", "safe", "--n", 5, "--drop-unknown", "--out", tmp_path / "t.jsonl")
    assert result.exit_code == 2 and "--drop-unknown" in result.output


def test_explain_drops_on_request(tmp_path):
    assert invoke("explain", "--state", json.dumps(EXAMPLE)).exit_code == 2
    result = invoke("explain", "--state", json.dumps(EXAMPLE), "--drop-unknown", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["trace"]["input_repairs"] == {"severity": "dropped"}
    path = write_states_file(tmp_path, [EXAMPLE, EXAMPLE])
    assert invoke("explain", "--states", path, "--line", 2).exit_code == 2
    by_line = invoke("explain", "--states", path, "--line", 2, "--drop-unknown", "--json")
    assert by_line.exit_code == 0 and json.loads(by_line.output)["state"] == plain(EXAMPLE)


def test_learn_records_the_drop_so_the_gate_rebuilds_the_same_data(tmp_path, monkeypatch):
    from ami_engine.scenario import generate

    states = generate("chaos", 400, 5, streams=8)
    records = [{**dict(zip(STATE_FIELDS, row)), "stream": s, "severity": 0.5}
               for row, s in zip(states.values.tolist(), states.streams, strict=True)]
    data = write_states_file(tmp_path, records)
    out = tmp_path / "out" / "s.toml"
    refused = invoke("learn", "--states", data, "--out", out, "--budget", 4, "--strategy", "random")
    assert refused.exit_code == 2 and "--drop-unknown" in refused.output
    result = invoke("learn", "--states", data, "--drop-unknown", "--out", out, "--budget", 4,
                    "--strategy", "random", "--batch-size", 4, "--critical-factor", 0, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["meta"]["data"]["drop_unknown"] is True
    # The gate rebuilds the held-out data from the suggestion: only with the same drop can it.
    monkeypatch.chdir(tmp_path / "out")
    gate = invoke("gate", os.path.basename(out), "--critical-factor", 0, "--json")
    assert gate.exit_code == 0, gate.output
    heldout = next(c for c in json.loads(gate.output)["checks"] if c["name"] == "heldout_loss")
    assert heldout["figure"] == pytest.approx(summary["meta"]["metrics"]["heldout"]["suggestion"]["L"])


def test_a_regression_file_stays_strict_and_its_error_offers_no_drop(tmp_path):
    path = write_states_file(tmp_path, [{**EXAMPLE, "expect_level_min": 2}])
    with pytest.raises(InputError) as caught:
        read_states(str(path), allow_expect_level=True)
    assert caught.value.field == "severity" and "--drop-unknown" not in str(caught.value)

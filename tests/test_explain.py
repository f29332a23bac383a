"""`explain`: one decision laid open, picked from a states file or a traces file."""

import json

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.scenario import generate

runner = CliRunner()
# justice 0 makes every action unjust enough to fail J_MIN under `base`: no candidate at all.
NO_CANDIDATE = {**dict.fromkeys(STATE_FIELDS, 0.5), "justice": 0.0}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def explained(*args):
    result = invoke("explain", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A states file of three streams (with ids, a blank line) and the traces `run` wrote from it."""
    tmp = tmp_path_factory.mktemp("explain")
    states = generate("chaos", 24, 9, streams=3)
    lines = [json.dumps({**dict(zip(STATE_FIELDS, row)), "stream": s, "id": f"d{i}"})
             for i, (row, s) in enumerate(zip(states.values.tolist(), states.streams, strict=True))]
    lines.insert(5, "")
    states_path = tmp / "states.jsonl"
    states_path.write_text("\n".join(lines) + "\n")
    traces_path = tmp / "traces.jsonl"
    assert invoke("run", "--states", states_path, "--out", traces_path).exit_code == 0
    return states_path, traces_path


def test_a_traces_record_is_explained_by_its_state_with_its_stream_history(files):
    states_path, traces_path = files
    # states line 20 is traces line 19: the traces file has no blank line.
    from_states = explained("--states", states_path, "--line", 20)
    from_traces = explained("--states", traces_path, "--line", 19)
    assert from_traces["state"] == from_states["state"]
    assert from_traces["trace"] == from_states["trace"]
    assert from_traces["candidates"] == from_states["candidates"]
    assert from_traces["picked"]["kind"] == "traces" and from_states["picked"]["kind"] == "states"
    recorded = json.loads(traces_path.read_text().splitlines()[18])
    assert from_traces["picked"]["recorded"]["level"] == recorded["level"] == from_traces["trace"]["level"]
    assert from_traces["trace"]["delta_cus"] == recorded["delta_cus"]  # the stream's history was replayed


def test_a_decision_is_picked_by_id_from_either_file(files):
    states_path, traces_path = files
    by_id = explained("--states", traces_path, "--id", "d18")
    assert by_id["picked"]["line"] == 19 and by_id["trace"]["id"] == "d18"
    assert explained("--states", states_path, "--id", "d18")["picked"]["line"] == 20


@pytest.mark.parametrize("args, message", [
    (["--line", 6], "blank"),
    (["--line", 99], "past the end"),
    (["--id", "nobody"], "no state has id nobody"),
    ([], "--line N or --id ID"),
    (["--line", 2, "--id", "d1"], "--line N or --id ID"),
])
def test_a_pick_that_names_no_decision_is_a_clear_error(files, args, message):
    states_path, _ = files
    result = invoke("explain", "--states", states_path, *args)
    assert result.exit_code == 2 and message in result.output


def test_an_id_on_several_records_must_be_picked_by_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({**NO_CANDIDATE, "id": 3}) + "\n" for _ in range(2)))
    result = invoke("explain", "--states", path, "--id", 3)
    assert result.exit_code == 2 and "several lines (1, 2)" in result.output


def test_a_traces_record_without_a_state_cannot_be_explained(files, tmp_path):
    _, traces_path = files
    records = [json.loads(line) for line in traces_path.read_text().splitlines()]
    del records[3]["state"]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = invoke("explain", "--states", path, "--line", 4)
    assert result.exit_code == 2 and ":4: state: this record carries no `state`" in result.output
    later = explained("--states", path, "--line", 10)
    assert "1 of 24 records carry no `state`" in later["picked"]["note"]


def test_candidates_are_numbered_by_rank(files):
    states_path, _ = files
    result = explained("--states", states_path, "--line", 2)
    ranks = [c["rank"] for c in result["candidates"]]
    assert ranks == list(range(1, result["n_candidates"] + 1)) and ranks
    scores = [c["S"] for c in result["candidates"]]
    assert scores == sorted(scores, reverse=True)
    text = invoke("explain", "--states", states_path, "--line", 2, "--top", 3)
    header = next(line for line in text.output.splitlines() if "grid #" in line)
    assert header.index("rank") < header.index("grid #") < header.index("action")
    first = text.output.splitlines()[text.output.splitlines().index(header) + 2]
    cells = [c.strip() for c in first.strip("│ ").split("│")]
    assert cells[:2] == ["1", str(result["candidates"][0]["index"])]


def test_it_says_plainly_when_no_action_was_a_candidate():
    result = explained("--state", json.dumps(NO_CANDIDATE))
    assert result["n_candidates"] == 0 and result["candidates"] == []
    assert result["no_candidate"].startswith("no action passed the candidate filter")
    assert "fail-safe" in result["no_candidate"] and "no_valid_candidate" in result["no_candidate"]
    text = invoke("explain", "--state", json.dumps(NO_CANDIDATE))
    assert text.exit_code == 0
    assert "no action passed the candidate filter" in text.output and "Candidates by S" not in text.output
    assert "no_candidate" not in explained("--state", json.dumps({**NO_CANDIDATE, "justice": 0.9}))

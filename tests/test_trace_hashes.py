"""What users see stays the same bytes: SHA-256s of the engine's outputs, kept in a fixture.

The fixture (fixtures/trace_hashes.json) holds the digests of the JSONL traces `run`
writes for every built-in profile on several scenarios, seeds and stream counts (the
chaos scenario marked as a chaos test), the per-config sums of the sweep path for random
configs inside the learning bounds, the per-decision traces of the sweep path, single
decisions with a drift history, and what `explain` shows (to 12 digits). A change to the engine's code that
moves any of them by one bit fails here; a deliberate change of the engine's behaviour
regenerates the fixture with `python tests/test_trace_hashes.py --write`.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.config import LEARNED_BOUNDS, PROFILE_NAMES, load_config
from ami_engine.engine import ScoreTable, decide
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.traces import encode_traces
from ami_engine.scenario import generate

FIXTURE = Path(__file__).parent / "fixtures" / "trace_hashes.json"
# (scenario, states, seed, streams); chaos runs are marked as chaos tests.
RUNS = [("curriculum", 2000, 1, 8), ("chaos", 2000, 2, 5), ("chaos", 1000, 11, 1)]
runner = CliRunner()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_traces(tmp_path: Path, profile: str, scenario: str, n: int, seed: int, streams: int) -> str:
    out = tmp_path / f"{profile}-{scenario}-{seed}.jsonl"
    args = ["run", "--scenario", scenario, "--n", str(n), "--seed", str(seed), "--streams", str(streams),
            "--profile", profile, "--out", str(out)] + (["--chaos"] if scenario == "chaos" else [])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return sha256(out.read_bytes())


def random_configs(base, n: int, seed: int):
    rng = np.random.default_rng(seed)
    names = list(LEARNED_BOUNDS)
    lo = np.array([LEARNED_BOUNDS[k][0] for k in names])
    hi = np.array([LEARNED_BOUNDS[k][1] for k in names])
    return [base.replace(**dict(zip(names, row))) for row in rng.uniform(lo, hi, size=(n, len(names)))]


def sweep_hashes() -> dict[str, str]:
    """Sums of 64 random configs per profile, through the grouped and the scanning sweep; the
    sweep path's full traces of the profile itself."""
    states = generate("curriculum", 1000, 3, streams=4)
    # The profiles share ACTION_GRID and SCORE_WEIGHTS, hence one table per sweep kind.
    tables = {grouped: ScoreTable(states, load_config("base"), grouped=grouped) for grouped in (True, False)}
    out = {}
    for profile in PROFILE_NAMES:
        base = load_config(profile)
        configs = random_configs(base, 64, 5)
        for grouped, table in tables.items():
            sums = table.evaluate(configs)
            out[f"{profile} grouped={grouped}"] = sha256(np.ascontiguousarray(sums.to_array()).tobytes())
        cols = tables[True].run(base)
        text = b"".join(encode_traces(cols, states, config_id=base.config_id, model="ami-v1", chaos=False))
        out[f"{profile} run"] = sha256(text)
    return out


def decide_hashes() -> dict[str, str]:
    """Single decisions of chaos states, each with the stream's earlier pre-clamp CUS."""
    states = generate("chaos", 60, 4, streams=1)
    out = {}
    for profile in PROFILE_NAMES:
        config = load_config(profile).replace(CUS_MEAN_WINDOW=4, DELTA_CUS_THRESHOLD=0.05)
        history: list[float] = []
        records = []
        for row in states.values:
            record = decide(dict(zip(STATE_FIELDS, row.tolist())), config, history=history)
            history.append(record["cus_raw"])
            records.append(record)
        out[profile] = sha256(json.dumps(records, sort_keys=True).encode())
    return out


def rounded(value):
    """Floats to 12 significant digits (explain prints at most 6 decimals)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def explain_hashes(tmp_path: Path) -> dict[str, str]:
    """`explain --json` for decisions of several levels and reasons, one with no candidate."""
    states = generate("chaos", 40, 6, streams=2)
    path = tmp_path / "states.jsonl"
    path.write_text("".join(json.dumps({**dict(zip(STATE_FIELDS, row)), "stream": s}) + "\n"
                            for row, s in zip(states.values.tolist(), states.streams, strict=True)))
    out = {}
    # base: no_clear_leader, no_valid_candidate, drift, clamp_violation, normal.
    for profile, lines in (("base", (1, 3, 7, 17, 40)), ("chaos_tuning", (2, 18, 40))):
        texts: list = []
        for line in lines:
            result = runner.invoke(app, ["explain", "--states", str(path), "--line", str(line), "--profile", profile,
                                         "--json"])
            assert result.exit_code == 0, result.output
            shown = json.loads(result.output)
            del shown["picked"]["file"]
            texts.append(rounded(shown))
        out[profile] = sha256(json.dumps(texts).encode())  # in the order explain writes its keys
    return out


def all_hashes(tmp_path: Path) -> dict[str, dict[str, str]]:
    traces = {f"{profile} {scenario} n={n} seed={seed} streams={streams}": run_traces(tmp_path, profile, scenario,
                                                                                        n, seed, streams)
              for profile in PROFILE_NAMES for scenario, n, seed, streams in RUNS}
    return {"traces": traces, "sweep": sweep_hashes(), "decide": decide_hashes(), "explain": explain_hashes(tmp_path)}


@pytest.fixture(scope="module")
def expected():
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("profile", PROFILE_NAMES)
@pytest.mark.parametrize("scenario, n, seed, streams", RUNS)
def test_run_writes_the_same_trace_bytes(expected, tmp_path, profile, scenario, n, seed, streams):
    key = f"{profile} {scenario} n={n} seed={seed} streams={streams}"
    assert run_traces(tmp_path, profile, scenario, n, seed, streams) == expected["traces"][key]


def test_the_sweep_path_gives_the_same_sums_and_traces(expected):
    assert sweep_hashes() == expected["sweep"]


def test_single_decisions_give_the_same_records(expected):
    assert decide_hashes() == expected["decide"]


def test_explain_prints_the_same_text(expected, tmp_path):
    assert explain_hashes(tmp_path) == expected["explain"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        FIXTURE.parent.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps(all_hashes(Path(tmp)), indent=2, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")

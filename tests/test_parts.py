"""Figures over all the data computed part by part (whole streams at a time) are exactly those
of one pass over everything: the engine's columns, the needless fail-safes, the gate's
held-out checks and the report's traces."""

from __future__ import annotations

import numpy as np
import pytest

from ami_engine.config import load_config
from ami_engine.engine import direct_sums, run, trace_records
from ami_engine.engine.parts import PartsRun, run_parts, stream_parts
from ami_engine.gate import CriticalFloor, run_gate
from ami_engine.gate import certificate as certificate_module
from ami_engine.gate import checks as checks_module
from ami_engine.gate.certificate import certify, decide_held_out, decision_losses
from ami_engine.gate.checks import check_certificate, check_heldout_loss
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.learning.loss import LossWeights
from ami_engine.learning.needless import NeedlessTally, needless_fail_safes
from ami_engine.report import render_report
from ami_engine.scenario import generate
from ami_engine.workflow import report_traces_states

BASE = load_config("base")
LEARNED = BASE.replace(J_MIN=0.724, H_MAX=0.189, SOFT_CLAMP_ALPHA=0.576, SOFT_CLAMP_BETA=0.345,
                       SOFT_CLAMP_GAMMA=0.367, DELTA_CUS_THRESHOLD=0.245, CUS_MEAN_THRESHOLD=0.734)
W = LossWeights()
COLUMNS = ("cus", "cus_raw", "delta_cus", "cus_mean", "confidence", "delta_confidence", "raw_action", "final_action",
           "soft_clamp", "human_escalation", "level", "reason", "W", "J", "H", "C")


@pytest.fixture(scope="module")
def states():
    return generate("chaos", 3000, 5, streams=9)


def test_stream_parts_are_whole_streams_covering_every_position_once(states):
    codes, _ = states.stream_codes()
    parts = stream_parts(states, 700)
    assert len(parts) > 2
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(len(states)))
    for pos in parts:
        assert np.all(np.diff(pos) > 0)  # input order inside a part
    owners = [set(codes[pos].tolist()) for pos in parts]
    for i, one in enumerate(owners):
        for other in owners[i + 1:]:
            assert not one & other  # a stream never spans two parts
    assert [p.tolist() for p in stream_parts(states, len(states))] == [list(range(len(states)))]
    with pytest.raises(ValueError, match="target"):
        stream_parts(states, 0)


def test_run_parts_gives_the_columns_of_one_run(states):
    whole = [run(states, c) for c in (BASE, LEARNED)]
    seen = 0
    for pos, cols in run_parts(states, [BASE, LEARNED], 500):
        seen += pos.size
        for part, full in zip(cols, whole, strict=True):
            for name in COLUMNS:
                assert np.array_equal(np.asarray(getattr(part, name)), np.asarray(getattr(full, name))[pos],
                                      equal_nan=name in ("delta_cus", "delta_confidence")), name
    assert seen == len(states)


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)
    else:
        assert a == b  # exact, floats included


def test_needless_over_parts_is_exactly_the_whole(states):
    whole = needless_fail_safes(states, BASE, LEARNED, part_decisions=len(states))
    assert whole["count"] > 0 and whole["margins"]["J_minus_J_MIN"]["n"] == whole["count"]
    for target in (1, 400, 1100):
        _same(needless_fail_safes(states, BASE, LEARNED, part_decisions=target), whole)


def test_needless_matches_one_run_of_each_config(states):
    base, sugg = run(states, BASE), run(states, LEARNED)
    removed = (base.level == 2) & (sugg.level < 2)
    got = needless_fail_safes(states, BASE, LEARNED, part_decisions=600)
    assert got["count"] == int(removed.sum())
    assert got["baseline_l2"] == int((base.level == 2).sum())
    assert got["new_level"] == {"0": int(np.sum(removed & (sugg.level == 0))),
                                "1": int(np.sum(removed & (sugg.level == 1)))}
    assert got["margins"]["J_minus_J_MIN"]["min"] == float((sugg.J[removed] - LEARNED["J_MIN"]).min())
    assert got["margins"]["H_MAX_minus_H"]["median"] == float(np.median(LEARNED["H_MAX"] - sugg.H[removed]))
    edges = np.linspace(0.0, 1.0, 11)  # counted against these edges, the last bin closed
    for j, field in enumerate(STATE_FIELDS):
        assert got["histograms"][field]["needless"] == np.histogram(states.values[removed, j], edges)[0].tolist()
        assert got["histograms"][field]["all"] == np.histogram(states.values[:, j], edges)[0].tolist()


def test_a_needless_tally_refuses_figures_before_every_decision_is_in(states):
    tally = NeedlessTally(len(states), LEARNED)
    for pos, (base, sugg) in run_parts(states, [BASE, LEARNED], 700):
        tally.add(pos, base.level, base.reason, sugg)
        if tally.seen.sum() < len(states):
            with pytest.raises(ValueError, match="decisions tallied"):
                tally.figures(states)
    _same(tally.figures(states), needless_fail_safes(states, BASE, LEARNED))


def test_learning_tallies_the_needless_fail_safes_from_its_own_decisions(monkeypatch):
    """In this process the finalists' decisions on the training shards and one pass over the
    held-out states give the needless fail-safes: the figures of one pass over all states."""
    from ami_engine.learning import offline_loop
    from ami_engine.learning.shards import InProcessEvaluator

    data = offline_loop.data_from_scenario("chaos", 3000, 3)
    settings = offline_loop.LearnSettings(strategy="tpe", budget=60, seed=2, batch_size=8, rung0=300)
    passes = []

    def whole_pass(*args, **kwargs):
        passes.append(args)
        return needless_fail_safes(*args, **kwargs)

    def held_out_pass(*args, **kwargs):
        passes.append(("held-out", len(args[0])))
        return run_parts(*args, **kwargs)

    monkeypatch.setattr(offline_loop, "needless_fail_safes", whole_pass)
    monkeypatch.setattr(offline_loop, "run_parts", held_out_pass)
    tallied = offline_loop.learn(data, BASE, settings)
    assert tallied.suggestion_toml["meta"]["split"]["method"] == "by_stream"
    assert passes == [("held-out", tallied.suggestion_toml["meta"]["split"]["n_heldout"])]
    assert tallied.needless["count"] > 0
    _same(tallied.needless, needless_fail_safes(data.states, BASE, tallied.suggestion))
    # The gate decides the held-out states anyway, and shows them: no pass of its own.
    gated = offline_loop.learn(data, BASE, settings, gate_fn=run_gate)
    assert gated.accepted and gated.suggestion.config_id == tallied.suggestion.config_id and len(passes) == 1
    _same(gated.needless, tallied.needless)
    del passes[:]

    # An evaluator that gives sums only (its evaluate takes no `reading`): one pass over all
    # the states, the same figures.
    class SumsOnly:
        def __init__(self, shards, baseline, *, keep_first=None):
            self.inner = InProcessEvaluator(shards, baseline, 1 << 30, keep_first=keep_first)

        def evaluate(self, configs, shards):
            return self.inner.evaluate(configs, shards)

        def close(self):
            self.inner.close()

    passed = offline_loop.learn(data, BASE, settings, evaluator=SumsOnly)
    assert len(passes) == 1 and passes[0][0] is data.states  # the whole pass, not the held-out one
    _same(passed.needless, tallied.needless)
    assert passed.suggestion_toml["meta"]["needless"] == tallied.suggestion_toml["meta"]["needless"]

    # Split in time, a stream's held-out decisions follow its training ones: one pass over all.
    few = offline_loop.data_from_scenario("chaos", 3000, 3, streams=3)
    in_time = offline_loop.learn(few, BASE, settings)
    assert in_time.suggestion_toml["meta"]["split"]["method"] == "in_time" and len(passes) == 2
    assert passes[1][0] is few.states
    _same(in_time.needless, needless_fail_safes(few.states, BASE, in_time.suggestion))


def test_heldout_losses_over_parts_are_those_of_one_run(states):
    for target in (1, 800):
        ours, theirs = decide_held_out(states, (LEARNED, BASE), W, part_decisions=target).losses
        assert np.array_equal(ours, decision_losses(run(states, LEARNED), W))
        assert np.array_equal(theirs, decision_losses(run(states, BASE), W))


def test_sums_over_parts_are_the_bytes_of_one_direct_pass(states):
    whole = direct_sums(states, [LEARNED, BASE])
    for target in (1, 350, 800, len(states)):
        decided = PartsRun(states, [LEARNED, BASE], target)
        for _ in decided:
            pass
        assert decided.sums().to_array().tobytes() == whole.to_array().tobytes()


def test_the_gate_decides_the_held_out_data_once_for_both_checks(states, monkeypatch):
    alone = (check_heldout_loss(LEARNED, BASE, states, W),
             check_certificate(LEARNED, BASE, states, W, CriticalFloor()))
    runs = []
    real = certificate_module.PartsRun

    def counted(*args, **kwargs):
        runs.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(certificate_module, "PartsRun", counted)
    report = run_gate(LEARNED, BASE, held_out=states, weights=W)
    assert len(runs) == 1
    assert (report.check("heldout_loss"), report.check("certificate")) == alone
    assert report.heldout_sums.to_array().tobytes() == direct_sums(states, [LEARNED, BASE]).to_array().tobytes()


def test_certificate_and_heldout_check_are_the_same_in_parts(states, monkeypatch):
    crit = CriticalFloor()
    cert = certify(LEARNED, BASE, held_out=states, weights=W, critical=crit)
    check = check_heldout_loss(LEARNED, BASE, states, W)
    monkeypatch.setattr(certificate_module, "PART_DECISIONS", 350)
    monkeypatch.setattr(checks_module, "HELDOUT_TABLE_BYTES", 300 * 9000)  # a score table in parts of ~300 states
    assert certify(LEARNED, BASE, held_out=states, weights=W, critical=crit) == cert
    assert check_heldout_loss(LEARNED, BASE, states, W) == check


def test_report_traces_are_whole_first_streams_within_the_limit(states):
    same, note = report_traces_states(states, len(states))
    assert same is states and note is None
    codes, n_streams = states.stream_codes()
    sizes = np.bincount(codes)
    limit = int(sizes[:3].sum()) + 1
    cut, note = report_traces_states(states, limit)
    assert len(cut) == int(sizes[:3].sum())
    assert cut.streams == [s for s in states.streams if s in set(cut.streams)]
    assert len(set(cut.streams)) == 3
    assert note == (f"The report shows the suggestion's traces on the first 3 of the {n_streams} held-out streams, "
                    f"whole: {len(cut):,} of the {len(states):,} held-out decisions (at most {limit:,}).")
    one, _ = report_traces_states(states, 1)  # at least the first stream
    assert len(one) == int(sizes[0])


def test_report_shows_the_traces_note(states):
    part, _ = report_traces_states(states, 700)
    records = trace_records(run(part, LEARNED), part, LEARNED)
    page = render_report({"J_MIN": 0.7}, None, records, traces_note="Only the first 2 streams.")
    assert "<p>Only the first 2 streams.</p>" in page
    assert "Only the first" not in render_report({"J_MIN": 0.7}, None, records)


def test_the_gate_runs_after_the_training_tables_are_let_go():
    from ami_engine.gate.verdict import GateReport
    from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
    from ami_engine.learning.shards import InProcessEvaluator

    made, seen = [], []

    def evaluator(shards, baseline, *, keep_first=None):
        made.append(InProcessEvaluator(shards, baseline, 1 << 30))
        return made[-1]

    def gate(config, baseline, *, held_out, weights, **_):  # the held-out check alone
        seen.append([ev.kept for ev in made])
        check = check_heldout_loss(config, baseline, held_out, weights)
        return GateReport(config.config_id, baseline.config_id, (check,))

    settings = LearnSettings(strategy="random", budget=8, seed=1, batch_size=8, rung0=150)
    result = learn(data_from_scenario("chaos", 600, 2), BASE, settings, evaluator=evaluator, gate_fn=gate)
    assert result.accepted
    assert made[0].keeps > 0  # the search could keep training tables ...
    assert seen and all(kept[0] == 0 for kept in seen)  # ... and they are gone when the gate runs

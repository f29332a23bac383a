"""engine/rules.py: each rule of docs/engine.md §4-11 is one function, held to the reference
engine, and no other module of the engine writes a rule again."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import ami_engine
from ami_engine.config import PROFILE_NAMES, load_config
from ami_engine.config.params import KERNEL_ROW, ROW_LEN, ROW_OFFSET
from ami_engine.engine import ActionSpace, run, trace_records
from ami_engine.engine import _kernel as K
from ami_engine.engine import rules as R
from ami_engine.engine._batch import BLOCK, _Pre
from ami_engine.explain import explain_decision
from ami_engine.io.traces import REASON_CODES
from ami_engine.scenario import generate
from reference_engine import (
    confidence_of,
    distinct_scores,
    first_best,
    is_candidate,
    soft_clamp_action,
)

BASE = load_config("base")
CFG = np.asarray(BASE.kernel_row(), dtype=np.float64)
P = BASE.to_dict()
rng = np.random.default_rng(12)


def random_scores(n):
    """W, J, H, C rows, some of them on a threshold of `base` exactly."""
    sc = rng.uniform(0, 1, size=(n, 4))
    sc[::7, 1] = P["J_MIN"]
    sc[::11, 2] = P["H_MAX"]
    sc[::13, 3] = P["C_MIN"]
    sc[::17, 3] = P["C_MAX"]
    return sc


def as_dict(row):
    return dict(zip("WJHC", map(float, row)))


@pytest.mark.parametrize("profile", PROFILE_NAMES)
def test_the_config_row_has_one_layout(profile):
    config = load_config(profile)
    row = config.kernel_row()
    assert len(row) == ROW_LEN == sum(width for _, width in KERNEL_ROW)
    for name, width in KERNEL_ROW:
        value = config[name]
        expected = list(value) if width > 1 else [float(value)]
        assert row[ROW_OFFSET[name]:ROW_OFFSET[name] + width] == expected, name
    assert (R.J_MIN, R.WINDOW, R.CUS_W, R.SAFE) == tuple(ROW_OFFSET[k] for k in (
        "J_MIN", "CUS_MEAN_WINDOW", "CUS_WEIGHTS", "SAFE_ACTION"))


def test_candidate_filter_is_section_4():
    for row in random_scores(400):
        sc = as_dict(row)
        assert bool(R.is_candidate(sc["J"], sc["H"], sc["C"], CFG)) == is_candidate(sc, P)


def test_candidate_filter_with_looser_bounds_keeps_every_candidate():
    """The sweep path narrows by the loosest bounds of its configs with the same test."""
    loose = (P["J_MIN"] - 0.1, P["H_MAX"] + 0.1, P["C_MIN"] - 0.1, P["C_MAX"] + 0.1)
    for row in random_scores(400):
        J, H, C = row[1:]
        if R.is_candidate(J, H, C, CFG):
            assert R.candidate_filter(J, H, C, *loose)


def sorted_candidates(scores):
    """Scores sorted descending, ties in grid order, as the kernels hand them to selection."""
    order = sorted(range(len(scores)), key=lambda a: (-scores[a], a))
    return np.array([scores[a] for a in order]), np.array(order, dtype=np.int64)


def test_selection_is_the_first_best_in_grid_order_over_the_distinct_scores():
    for trial in range(60):
        m = int(rng.integers(1, 40))
        # a coarse set of values so that ties and near-ties (within TIE) are frequent
        scores = list(rng.choice([0.5, 0.5 + 4e-13, 0.5 - 3e-12, 0.52, 0.6, 0.6 + 1e-13], size=m)
                      + rng.uniform(0, 1e-3, size=m) * (trial % 2))
        ks, ka = sorted_candidates(scores)
        best, n, de, as_ = R.selection(ks, ka, np.full(1, np.nan), np.arange(m), m, CFG)
        scored = [((a,), {"S": s}) for a, s in enumerate(scores)]
        assert best == first_best(scored)[0][0]
        distinct = distinct_scores(scores)
        assert n == len(distinct)
        if n < 2:
            assert (de, as_) == (0.0, 1.0)
        else:
            assert as_ == R.as_norm(distinct[0] - distinct[1], P["UNCERTAINTY_AS_LAMBDA"])
            p = np.exp((np.array(distinct) - distinct[0]) / P["DE_TEMPERATURE"])
            p /= p.sum()
            assert de == pytest.approx(-np.sum(p * np.log(np.where(p > 0, p, 1))) / math.log(n), abs=1e-12)


def test_confidence_is_section_6():
    for row in random_scores(300):
        conf, margin = R.confidence(*row, CFG)
        ref_conf, ref_margin = confidence_of(as_dict(row), P)
        assert conf == pytest.approx(ref_conf, abs=1e-12) and margin == pytest.approx(ref_margin, abs=1e-12)


def test_uncertainty_with_one_distinct_option_leaves_nothing_to_doubt():
    assert R.uncertainty(1, 1.0, 0.0, 0.0, CFG) == (0.0, 1.0)
    assert R.divergence(0.3, 0.0, 1) == 0.0
    assert R.divergence(0.3, 0.4, 2) == pytest.approx(abs(0.3 - 0.6))
    assert R.as_norm(0.0, 200.0) == 0.0 and R.as_norm(1.0, 200.0) == 1.0


def test_combined_uncertainty_is_section_7():
    c1, c2, c3 = P["CUS_WEIGHTS"]
    for conf, margin, de, as_ in rng.uniform(-1, 1, size=(50, 4)) * [0.5, 1, 0.5, 0.5] + [0.5, 0, 0.5, 0.5]:
        hi = (1 - conf) * (1 + 1 / (1 + math.exp(P["UNCERTAINTY_MARGIN_K"] * margin))) / 2
        assert R.combined_uncertainty(conf, margin, de, as_, CFG) == pytest.approx(
            c1 * hi + c2 * de + c3 * (1 - as_), abs=1e-12)


def test_escalation_takes_the_first_rule_of_the_table_that_fires():
    ok = dict(J=0.9, H=0.1, conf=0.8, div=0.1, as_=0.9)
    bad = dict(J=0.5, H=0.7, conf=0.1, div=0.9, as_=0.05)
    table = [("J", "j_critical", 2), ("H", "h_critical", 2), ("conf", "low_confidence", 2),
             ("div", "divergence", 2), ("as_", "no_clear_leader", 1)]
    assert R.escalation(*ok.values(), CFG) == (0, REASON_CODES["normal"])
    for k, (_, reason, level) in enumerate(table):
        # this rule and every later one fire: the first of them wins
        values = {**ok, **{n: bad[n] for n, _, _ in table[k:]}}
        assert R.escalation(*values.values(), CFG) == (level, REASON_CODES[reason])


def test_drift_escalates_only_level_0_and_never_on_a_null_delta():
    d, m = P["DELTA_CUS_THRESHOLD"], P["CUS_MEAN_THRESHOLD"]
    assert R.drift_escalates(0, d + 1e-9, 0.0, CFG) and R.drift_escalates(0, np.nan, m + 1e-9, CFG)
    assert not R.drift_escalates(0, d, m, CFG)  # strictly above the thresholds
    assert not R.drift_escalates(0, np.nan, 0.0, CFG)
    assert not R.drift_escalates(1, 1.0, 1.0, CFG) and not R.drift_escalates(2, 1.0, 1.0, CFG)


def test_drift_window_keeps_the_last_values_and_the_previous_one():
    history = list(rng.uniform(0, 1, size=13))
    ring = np.zeros(4)
    for j, value in enumerate(history):
        delta, mean = R.drift_window(ring, j, value)
        assert (math.isnan(delta) if j == 0 else delta == pytest.approx(value - history[j - 1]))
        assert mean == pytest.approx(np.mean(history[max(0, j - 3):j + 1]))


def test_soft_clamp_is_section_10():
    out = np.empty(4)
    for raw, cus in zip(rng.uniform(0, 1, size=(30, 4)), rng.uniform(0, 1, size=30)):
        R.soft_clamp(raw, cus, CFG, out)
        assert out.tolist() == pytest.approx(soft_clamp_action(tuple(raw), cus, P), abs=1e-12)


def test_clamp_violation_is_any_of_filter_hard_floor_or_confidence_force():
    good = (0.9, 0.1, 0.5, 0.8)
    assert not R.clamp_violation(*good, CFG)
    for k, value in enumerate((0.8, 0.35, 0.2, 0.1)):  # J < J_MIN, H > H_MAX, C < C_MIN, conf < force
        assert R.clamp_violation(*good[:k], value, *good[k + 1:], CFG)
    floors = BASE.replace(J_MIN=0.5, H_MAX=0.5)
    cfg = np.asarray(floors.kernel_row())
    assert R.clamp_violation(0.6, 0.1, 0.5, 0.8, cfg)  # a candidate below J_CRITICAL
    assert R.clamp_violation(0.9, 0.45, 0.5, 0.8, np.asarray(floors.replace(H_CRITICAL=0.4).kernel_row()))


def test_fail_safe_takes_safe_action_and_its_scores():
    st = generate("chaos", 1, 3).values[0]
    final = np.empty(4)
    scores = R.fail_safe(st, CFG, final)
    assert final.tolist() == list(P["SAFE_ACTION"])
    from ami_engine.engine.scores import score_action

    assert scores == score_action(st, *final)


def test_explain_shows_the_numbers_the_engine_decided_with():
    states = generate("chaos", 40, 8)
    space = ActionSpace.of(BASE)
    pre = _Pre(1, len(states))
    K.pre_direct(states.values, space.actions, space.comp_of, space.comp_values, space.score_weights, CFG[None, :],
                 BLOCK, *pre.args())
    traces = trace_records(run(states, BASE), states, BASE)
    for i in range(len(states)):
        shown = explain_decision(states.values[i], BASE, traces[i])
        if not shown["n_candidates"]:
            continue
        assert shown["selected"]["index"] == pre.a[0, i]
        assert (shown["DE_norm"], shown["AS_norm"]) == (pre.f[0, i, 3], pre.f[0, i, 4])  # bit for bit
        assert shown["selected"]["confidence"] == pre.f[0, i, 0]


# Names of config-row offsets that only rules.py reads: the thresholds and coefficients of
# §5-11. The kernels read the filter bounds (to narrow a list), DE_TEMPERATURE (to share
# exponentials) and CUS_MEAN_WINDOW (to size the drift window), and call the rules.
RULE_ONLY = {"TIE", "J_CRITICAL", "H_CRITICAL", "CONF_FORCE", "DIVERGENCE_HARD", "AS_SOFT", "SIGMA_MAX",
             "CONF_MARGIN_K", "UNC_MARGIN_K", "AS_LAMBDA", "ALPHA", "BETA", "GAMMA", "DELTA_CUS", "CUS_MEAN",
             "CUS_W", "SAFE"}


def test_no_module_but_rules_reads_a_rules_threshold():
    package = Path(ami_engine.__file__).parent
    for path in [*sorted((package / "engine").glob("*.py")), package / "explain.py"]:
        if path.name == "rules.py":
            continue
        tree = ast.parse(path.read_text())
        used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not used & RULE_ONLY, f"{path.name} reads {sorted(used & RULE_ONLY)}"
        assert "1e-12" not in path.read_text(), path.name

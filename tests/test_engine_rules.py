"""docs/engine.md rule by rule: one test per rule, on the real engine, checked against the reference.

Every test runs `ami_engine.engine` and also asserts that each record equals the one of
tests/reference_engine.py (floats to 1e-9). The states were found by a random search
with the reference; each comment says what the state triggers. Unless a test says
otherwise, every comparison these decisions make is more than 1e-9 away from its
threshold (test_fixed_states_are_far_from_every_threshold checks that), so no test
depends on how an implementation rounds.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from ami_engine.config import load_config
from ami_engine.engine import decide, run_records
from reference_engine import (
    STATE_FIELDS,
    assert_same_records,
    confidence_of,
    distinct_scores,
    draw_states,
    reference_decide,
    reference_run,
    reference_scores,
    threshold_distance,
)

BASE = load_config("base")
SAFE_ACTION = [0.0, 0.5, 0.0, 1.0]


def _state(**fields: float) -> dict:
    assert set(fields) == set(STATE_FIELDS)
    return {name: fields[name] for name in STATE_FIELDS}


# Level 0 `normal` under base; every field 0.5, scores checkable by hand.
HALF = _state(**{name: 0.5 for name in STATE_FIELDS})
# Level 0 `normal` under base, cus_raw ~ 0.311.
LOW_CUS = _state(
    physical=0.983, social=0.118, context=0.098, risk=0.779, compassion=0.754,
    justice=0.855, harm_sens=0.963, responsibility=0.062, empathy=0.953,
)  # fmt: skip
# Level 0 `normal` under base, cus_raw ~ 0.607 (~0.296 above LOW_CUS); confidence ~ 0.426.
HIGH_CUS = _state(
    physical=0.59, social=0.703, context=0.754, risk=0.242, compassion=0.807,
    justice=0.646, harm_sens=0.325, responsibility=0.688, empathy=0.748,
)  # fmt: skip
# Level 1 `no_clear_leader` under base (AS_norm < 0.15), soft clamp applies; raw
# [0.25, 1, 1, 0], cus_raw ~ 0.661.
NO_CLEAR_LEADER = _state(
    physical=0.828, social=0.718, context=0.298, risk=0.535, compassion=0.586,
    justice=0.744, harm_sens=0.211, responsibility=0.304, empathy=0.571,
)  # fmt: skip
# Level 0 under base; the best action of the whole grid is not a candidate.
BEST_ACTION_FILTERED = _state(
    physical=0.327, social=0.857, context=0.357, risk=0.261, compassion=0.776,
    justice=0.684, harm_sens=0.056, responsibility=0.55, empathy=0.937,
)  # fmt: skip
# No candidate under base (`no_valid_candidate`); the best action of the grid is
# [0.25, 1, 1, 0], not the first action.
NO_CANDIDATE = _state(
    physical=0.043, social=0.78, context=0.824, risk=0.957, compassion=0.015,
    justice=0.777, harm_sens=0.159, responsibility=0.269, empathy=0.595,
)  # fmt: skip
# `j_critical` with J_MIN = 0.55: the selected [0, 1, 1, 0] has J ~ 0.61 < J_CRITICAL 0.7.
J_CRITICAL = _state(
    physical=0.548, social=0.3, context=0.909, risk=0.865, compassion=0.474,
    justice=0.089, harm_sens=0.935, responsibility=0.572, empathy=0.882,
)  # fmt: skip
# `h_critical` with H_CRITICAL = 0.1: the selected [0.25, 0.75, 1, 0] has H > 0.1.
H_CRITICAL = _state(
    physical=0.246, social=0.855, context=0.073, risk=0.638, compassion=0.822,
    justice=0.883, harm_sens=0.692, responsibility=0.523, empathy=0.829,
)  # fmt: skip
# `divergence` with DIVERGENCE_HARD_THRESHOLD = 0.3.
DIVERGENCE = _state(
    physical=0.081, social=0.143, context=0.322, risk=0.024, compassion=0.506,
    justice=0.406, harm_sens=0.025, responsibility=0.607, empathy=0.79,
)  # fmt: skip
# `clamp_violation` under base: level 1 (`no_clear_leader`), but the clamped action's
# smaller intervention lowers j_ctx below J_MIN.
CLAMP_NOT_CANDIDATE = _state(
    physical=0.038, social=0.359, context=0.73, risk=0.549, compassion=0.972,
    justice=0.514, harm_sens=0.782, responsibility=0.177, empathy=0.003,
)  # fmt: skip
# `clamp_violation` with J_MIN = 0.55, J_CRITICAL = 0.8: the clamped action is a
# candidate, but its J is below J_CRITICAL while the raw action's is not.
CLAMP_J_CRITICAL = _state(
    physical=0.694, social=0.569, context=0.785, risk=0.551, compassion=0.393,
    justice=0.443, harm_sens=0.468, responsibility=0.486, empathy=0.478,
)  # fmt: skip
# risk = 0 and the best compassion 1 at severity 0: W clips at 1 for every intervention
# and delay, so 25 candidates share the best score exactly.
TIES = _state(
    physical=0.5, social=0.5, context=0.5, risk=0.0, compassion=0.7,
    justice=0.9, harm_sens=0.3, responsibility=0.6, empathy=0.7,
)  # fmt: skip
# With CHAIN_CONFIG, S = 3e-11 * C and C depends on the action only through its
# compassion: the five compassion values give five scores ~0.75e-12 apart.
CHAIN = _state(
    physical=0.5, social=0.5, context=0.5, risk=0.2, compassion=0.5,
    justice=0.9, harm_sens=0.3, responsibility=0.5, empathy=0.5,
)  # fmt: skip
CHAIN_CONFIG = BASE.replace(SCORE_WEIGHTS=[0.0, 0.0, 0.0, 3e-11], J_MIN=0.4, DIVERGENCE_HARD_THRESHOLD=0.9)


def decide_all(states: list[dict], config=BASE) -> list[dict]:
    """The engine's records for `states`, after checking them against the reference."""
    records = run_records([dict(s) for s in states], config)
    assert_same_records(records, reference_run(states, config.to_dict()))
    return records


def decide_one(state: dict, config=BASE) -> dict:
    return decide_all([state], config)[0]


def scores(state: dict, action, config=BASE) -> dict:
    return reference_scores(state, tuple(action), config.to_dict())


def is_candidate(sc: dict, config=BASE) -> bool:
    return sc["J"] >= config["J_MIN"] and sc["H"] <= config["H_MAX"] and config["C_MIN"] <= sc["C"] <= config["C_MAX"]


def grid(config=BASE) -> list[tuple]:
    return list(itertools.product(config["ACTION_GRID"], repeat=4))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def human_uncertainty(confidence: float, margin: float, config=BASE) -> float:
    return (1 - confidence) * (1 + sig(-config["UNCERTAINTY_MARGIN_K"] * margin)) / 2


def assert_fail_safe(rec: dict, state: dict, config=BASE) -> None:
    assert rec["level"] == 2 and rec["human_escalation"] is True
    assert rec["final_action"] == list(config["SAFE_ACTION"])
    assert rec["soft_clamp"] is False and rec["delta_confidence"] is None
    safe = scores(state, config["SAFE_ACTION"], config)
    for key in "WJHC":
        assert rec[key] == pytest.approx(safe[key], abs=1e-12)


# -- the fixed states are safe to test on ------------------------------------------------


@pytest.mark.parametrize(
    ("states", "config"),
    [
        ([HALF], BASE),
        ([LOW_CUS, HIGH_CUS, NO_CLEAR_LEADER, BEST_ACTION_FILTERED, NO_CANDIDATE, TIES], BASE),
        ([NO_CANDIDATE, HIGH_CUS, HIGH_CUS, LOW_CUS, HIGH_CUS], BASE),
        ([NO_CLEAR_LEADER, HIGH_CUS, LOW_CUS, NO_CLEAR_LEADER, LOW_CUS, NO_CANDIDATE], BASE),
        ([CLAMP_NOT_CANDIDATE], BASE),
        ([J_CRITICAL], BASE.replace(J_MIN=0.55)),
        ([J_CRITICAL], BASE.replace(J_MIN=0.55, CONFIDENCE_ESCALATION_FORCE=0.6)),
        ([H_CRITICAL], BASE.replace(H_CRITICAL=0.1)),
        ([H_CRITICAL], BASE.replace(H_CRITICAL=0.1, CONFIDENCE_ESCALATION_FORCE=0.6)),
        ([HIGH_CUS], BASE.replace(CONFIDENCE_ESCALATION_FORCE=0.6)),
        ([DIVERGENCE], BASE.replace(DIVERGENCE_HARD_THRESHOLD=0.3)),
        ([CLAMP_J_CRITICAL], BASE.replace(J_MIN=0.55, J_CRITICAL=0.8)),
        ([LOW_CUS, HIGH_CUS], BASE.replace(DELTA_CUS_THRESHOLD=0.0)),
        ([HIGH_CUS, HIGH_CUS], BASE.replace(CUS_MEAN_THRESHOLD=0.5)),
        ([NO_CANDIDATE, LOW_CUS, HIGH_CUS, HIGH_CUS], BASE.replace(CUS_MEAN_WINDOW=2)),
        ([NO_CANDIDATE, LOW_CUS, HIGH_CUS], BASE.replace(CUS_MEAN_WINDOW=1)),
        ([HALF], BASE.replace(J_MIN=0.95)),
        ([HALF], BASE.replace(SCORE_WEIGHTS=[0.0, 0.0, 0.0, 0.0])),
    ],
)
def test_fixed_states_are_far_from_every_threshold(states, config):
    params = config.to_dict()
    history: list[float] = []
    for state in states:
        assert threshold_distance(state, params, history) > 1e-9
        history.append(reference_decide(state, params, history)["cus_raw"])


# -- section 3: moral scores -------------------------------------------------------------


def test_moral_scores_follow_the_formulas():
    rec = decide_one(HALF)
    assert rec["level"] == 0 and rec["final_action"] == [0.0, 1.0, 0.5, 0.0]
    # harm_c = 0.3*risk = 0.15; W = 1 - 0.6*0.15 + 0.4*(0.5*0.5*1) = 1.01, clipped
    assert rec["W"] == 1.0
    # j_ctx = 1 (risk is not > 0.5), j_state = 1 - 0.5*0.25, j_prop = 1 - 0.6*0.2
    assert rec["J"] == pytest.approx(0.875, abs=1e-12)
    # severity 0 and compassion 1: no harm
    assert rec["H"] == 0.0
    # c_raw = 0.15 + 0.15 + 0.1 + 0.1 - 0.1 = 0.4
    assert rec["C"] == pytest.approx(sig(4 * (0.4 - 0.35)), abs=1e-12)


def test_selection_score_subtracts_harm():
    sc = scores(H_CRITICAL, [0.25, 0.75, 1.0, 0.0])
    w0, w1, w2, w3 = BASE["SCORE_WEIGHTS"]
    assert sc["H"] > 0
    assert sc["S"] == pytest.approx(w0 * sc["W"] + w1 * sc["J"] - w2 * sc["H"] + w3 * sc["C"], abs=1e-12)


# -- section 4: constraint filter --------------------------------------------------------


def test_constraint_filter_selects_the_best_candidate_not_the_best_action():
    rec = decide_one(BEST_ACTION_FILTERED)
    assert rec["level"] == 0
    scored = [(a, scores(BEST_ACTION_FILTERED, a)) for a in grid()]
    best_action, best = max(scored, key=lambda x: x[1]["S"])
    assert not is_candidate(best)
    assert list(best_action) != rec["raw_action"]
    chosen = scores(BEST_ACTION_FILTERED, rec["raw_action"])
    assert is_candidate(chosen)
    assert chosen["S"] == max(sc["S"] for _, sc in scored if is_candidate(sc))


# -- section 5: selection and distinct scores --------------------------------------------


def test_selection_takes_first_candidate_in_grid_order_among_ties():
    rec = decide_one(TIES)
    tied = [a for a in grid() if scores(TIES, a)["S"] == scores(TIES, [0.0, 1.0, 0.0, 0.0])["S"]]
    assert len(tied) == 25 and all(is_candidate(scores(TIES, a)) for a in tied)
    assert rec["raw_action"] == [0.0, 1.0, 0.0, 0.0]


def test_selection_accepts_scores_within_tie_of_the_best():
    # The compassion-1 actions score highest, but the compassion-0.75 ones are only
    # ~0.75e-12 below and come first in grid order. Float noise here is ~1e-27, far
    # smaller than the 0.25e-12 by which they clear max - TIE.
    s_best = scores(CHAIN, [0.0, 1.0, 0.0, 0.0], CHAIN_CONFIG)["S"]
    s_next = scores(CHAIN, [0.0, 0.75, 0.0, 0.0], CHAIN_CONFIG)["S"]
    assert 0.6e-12 < s_best - s_next < 0.9e-12
    rec = decide_one(CHAIN, CHAIN_CONFIG)
    assert rec["raw_action"] == [0.0, 0.75, 0.0, 0.0]


def test_distinct_scores_compare_with_last_kept_value():
    # Five candidate scores, each ~0.75e-12 below the one before. Kept: the 1st, the 3rd
    # (1.5e-12 below the 1st) and the 5th: n = 3, so AS ~ 1.5e-12, AS_norm ~ 3e-10 and
    # the decision has no clear leader. Comparing with the last value *seen* would keep
    # one score only (n = 1: AS_norm = 1, DE_norm = 0) and give a level-0 decision.
    values = sorted({scores(CHAIN, (0.0, c, 0.0, 0.0), CHAIN_CONFIG)["S"] for c in BASE["ACTION_GRID"]}, reverse=True)
    steps = [a - b for a, b in zip(values, values[1:])]
    assert len(values) == 5 and all(0.6e-12 < s < 0.9e-12 for s in steps)
    rec = decide_one(CHAIN, CHAIN_CONFIG)
    assert (rec["level"], rec["reason"]) == (1, "no_clear_leader")
    kept = [values[0], values[2], values[4]]
    assert distinct_scores(values) == kept
    params = CHAIN_CONFIG.to_dict()
    confidence, margin = confidence_of(scores(CHAIN, rec["raw_action"], CHAIN_CONFIG), params)
    hi = human_uncertainty(confidence, margin, CHAIN_CONFIG)
    z = [math.exp((d - kept[0]) / params["DE_TEMPERATURE"]) for d in kept]
    p = [x / sum(z) for x in z]
    de_norm = -sum(q * math.log(q) for q in p) / math.log(3)
    as_norm = 1 - math.exp(-params["UNCERTAINTY_AS_LAMBDA"] * (kept[0] - kept[1]))
    c1, c2, c3 = params["CUS_WEIGHTS"]
    assert rec["cus_raw"] == pytest.approx(c1 * hi + c2 * de_norm + c3 * (1 - as_norm), abs=1e-9)


def test_one_distinct_score_means_no_choice_to_doubt():
    # All selection weights 0: every candidate scores 0, n = 1, so DE_norm = 0,
    # AS_norm = 1, divergence = 0 and CUS = c1 * HI.
    config = BASE.replace(SCORE_WEIGHTS=[0.0, 0.0, 0.0, 0.0])
    rec = decide_one(HALF, config)
    first = next(a for a in grid() if is_candidate(scores(HALF, a)))
    assert rec["raw_action"] == list(first)
    assert (rec["level"], rec["reason"]) == (0, "normal")
    confidence, margin = confidence_of(scores(HALF, first), config.to_dict())
    hi = human_uncertainty(confidence, margin, config)
    assert rec["cus_raw"] == pytest.approx(config["CUS_WEIGHTS"][0] * hi, abs=1e-12)


# -- sections 6 and 7: confidence and uncertainty ----------------------------------------


def test_confidence_is_base_times_sigmoid_of_margin():
    rec = decide_one(HIGH_CUS)
    assert rec["level"] == 0
    w, j, h, c = rec["W"], rec["J"], rec["H"], rec["C"]
    base = min(1.0, max(0.0, 1 - statistics.pstdev([w, j, 1 - h, c]) / BASE["SIGMA_MAX"]))
    margin = min(j - BASE["J_MIN"], BASE["H_MAX"] - h, c - BASE["C_MIN"], BASE["C_MAX"] - c)
    margin = min(1.0, max(-1.0, margin))
    assert rec["confidence"] == pytest.approx(base * sig(BASE["CONFIDENCE_MARGIN_K"] * margin), abs=1e-12)


def test_cus_combines_hi_entropy_and_gap():
    rec = decide_one(HIGH_CUS)
    candidate_scores = [sc["S"] for sc in (scores(HIGH_CUS, a) for a in grid()) if is_candidate(sc)]
    kept = distinct_scores(candidate_scores)
    assert len(kept) >= 2
    z = [math.exp((d - kept[0]) / BASE["DE_TEMPERATURE"]) for d in kept]
    p = [x / sum(z) for x in z]
    de_norm = -sum(q * math.log(q) for q in p if q > 0) / math.log(len(kept))
    as_norm = 1 - math.exp(-BASE["UNCERTAINTY_AS_LAMBDA"] * (kept[0] - kept[1]))
    confidence, margin = confidence_of(scores(HIGH_CUS, rec["raw_action"]), BASE.to_dict())
    hi = human_uncertainty(confidence, margin)
    c1, c2, c3 = BASE["CUS_WEIGHTS"]
    assert rec["cus"] == rec["cus_raw"]
    assert rec["cus"] == pytest.approx(c1 * hi + c2 * de_norm + c3 * (1 - as_norm), abs=1e-12)


# -- section 8: escalation ---------------------------------------------------------------


def test_no_valid_candidate_escalates_to_level_2():
    rec = decide_one(NO_CANDIDATE)
    assert rec["reason"] == "no_valid_candidate"
    assert_fail_safe(rec, NO_CANDIDATE)
    scored = [(a, scores(NO_CANDIDATE, a)) for a in grid()]
    assert not any(is_candidate(sc) for _, sc in scored)
    best = max(sc["S"] for _, sc in scored)
    first_best = next(a for a, sc in scored if sc["S"] >= best - 1e-12)
    assert rec["raw_action"] == list(first_best) == [0.25, 1.0, 1.0, 0.0]
    assert rec["confidence"] == 0.0 and rec["cus"] == 1.0 and rec["cus_raw"] == 1.0


def test_j_critical_escalates_to_level_2():
    config = BASE.replace(J_MIN=0.55)
    rec = decide_one(J_CRITICAL, config)
    assert rec["reason"] == "j_critical"
    assert_fail_safe(rec, J_CRITICAL, config)
    raw = scores(J_CRITICAL, rec["raw_action"], config)
    assert config["J_MIN"] <= raw["J"] < config["J_CRITICAL"]


def test_h_critical_escalates_to_level_2():
    config = BASE.replace(H_CRITICAL=0.1)
    rec = decide_one(H_CRITICAL, config)
    assert rec["reason"] == "h_critical"
    assert_fail_safe(rec, H_CRITICAL, config)
    raw = scores(H_CRITICAL, rec["raw_action"], config)
    assert config["H_CRITICAL"] < raw["H"] <= config["H_MAX"]
    assert raw["J"] >= config["J_CRITICAL"]


def test_low_confidence_escalates_to_level_2():
    config = BASE.replace(CONFIDENCE_ESCALATION_FORCE=0.6)
    rec = decide_one(HIGH_CUS, config)
    assert rec["reason"] == "low_confidence"
    assert_fail_safe(rec, HIGH_CUS, config)
    assert rec["confidence"] < 0.6
    assert rec["confidence"] == pytest.approx(decide_one(HIGH_CUS)["confidence"], abs=1e-12)


def test_divergence_escalates_to_level_2():
    config = BASE.replace(DIVERGENCE_HARD_THRESHOLD=0.3)
    rec = decide_one(DIVERGENCE, config)
    assert rec["reason"] == "divergence"
    assert_fail_safe(rec, DIVERGENCE, config)
    assert rec["confidence"] >= config["CONFIDENCE_ESCALATION_FORCE"]
    # under base the same decision is not escalated by divergence
    assert decide_one(DIVERGENCE)["level"] < 2


def test_no_clear_leader_escalates_to_level_1():
    rec = decide_one(NO_CLEAR_LEADER)
    assert (rec["level"], rec["reason"]) == (1, "no_clear_leader")
    assert rec["human_escalation"] is False and rec["soft_clamp"] is True


def test_normal_decision_stays_at_level_0_with_raw_action():
    rec = decide_one(LOW_CUS)
    assert (rec["level"], rec["reason"]) == (0, "normal")
    assert rec["final_action"] == rec["raw_action"]
    assert rec["soft_clamp"] is False and rec["delta_confidence"] is None and rec["human_escalation"] is False
    assert rec["cus"] == rec["cus_raw"]


@pytest.mark.parametrize(
    ("state", "config", "reason"),
    [
        (J_CRITICAL, BASE.replace(J_MIN=0.55, CONFIDENCE_ESCALATION_FORCE=0.6), "j_critical"),
        (H_CRITICAL, BASE.replace(H_CRITICAL=0.1, CONFIDENCE_ESCALATION_FORCE=0.6), "h_critical"),
    ],
)
def test_escalation_rules_apply_in_table_order(state, config, reason):
    # confidence is below CONFIDENCE_ESCALATION_FORCE too; the earlier rule names the level
    rec = decide_one(state, config)
    assert rec["confidence"] < config["CONFIDENCE_ESCALATION_FORCE"]
    assert (rec["level"], rec["reason"]) == (2, reason)


# -- section 9: drift --------------------------------------------------------------------


def test_drift_delta_cus_fires_only_from_level_0():
    # Each stream: LOW_CUS, then a decision whose CUS is > 0.15 higher.
    states = [
        {**LOW_CUS, "stream": "to_normal"},
        {**HIGH_CUS, "stream": "to_normal"},
        {**LOW_CUS, "stream": "to_level_1"},
        {**NO_CLEAR_LEADER, "stream": "to_level_1"},
        {**LOW_CUS, "stream": "to_level_2"},
        {**NO_CANDIDATE, "stream": "to_level_2"},
    ]
    recs = decide_all(states)
    for rec in recs[1::2]:
        assert rec["delta_cus"] > BASE["DELTA_CUS_THRESHOLD"]
        assert rec["cus_mean"] <= BASE["CUS_MEAN_THRESHOLD"] or rec["level"] == 2
    assert [(r["level"], r["reason"]) for r in recs[1::2]] == [
        (1, "drift"),
        (1, "no_clear_leader"),
        (2, "no_valid_candidate"),
    ]
    # alone, HIGH_CUS is a normal decision
    assert decide_one(HIGH_CUS)["reason"] == "normal"


def test_drift_cus_mean_fires_from_level_0():
    # A no-candidate decision (CUS 1) lifts the mean: HIGH_CUS after it has a falling CUS
    # (delta < 0) but a window mean (1 + 0.607) / 2 > 0.75. One more HIGH_CUS brings the
    # mean to (1 + 2 * 0.607) / 3 < 0.75.
    recs = decide_all([NO_CANDIDATE, HIGH_CUS, HIGH_CUS])
    assert recs[1]["delta_cus"] < 0 and recs[1]["cus_mean"] > BASE["CUS_MEAN_THRESHOLD"]
    assert (recs[1]["level"], recs[1]["reason"]) == (1, "drift")
    assert recs[2]["cus_mean"] < BASE["CUS_MEAN_THRESHOLD"]
    assert (recs[2]["level"], recs[2]["reason"]) == (0, "normal")


def test_drift_cus_mean_fires_on_a_streams_first_decision():
    config = BASE.replace(CUS_MEAN_THRESHOLD=0.5)
    rec = decide_one(HIGH_CUS, config)
    assert rec["delta_cus"] is None and rec["cus_mean"] == rec["cus_raw"] > 0.5
    assert (rec["level"], rec["reason"]) == (1, "drift")


def test_null_delta_cus_never_fires():
    config = BASE.replace(DELTA_CUS_THRESHOLD=0.0)
    recs = decide_all([LOW_CUS, HIGH_CUS], config)
    assert recs[0]["delta_cus"] is None
    assert (recs[0]["level"], recs[0]["reason"]) == (0, "normal")
    assert (recs[1]["level"], recs[1]["reason"]) == (1, "drift")


def test_cus_mean_is_mean_of_last_window_values():
    config = BASE.replace(CUS_MEAN_WINDOW=2)
    recs = decide_all([NO_CANDIDATE, LOW_CUS, HIGH_CUS, HIGH_CUS], config)
    raw = [r["cus_raw"] for r in recs]
    assert recs[0]["cus_mean"] == 1.0
    for i in range(1, 4):
        assert recs[i]["cus_mean"] == pytest.approx((raw[i - 1] + raw[i]) / 2, abs=1e-12)


def test_delta_cus_uses_previous_decision_whatever_the_window():
    config = BASE.replace(CUS_MEAN_WINDOW=1)
    recs = decide_all([NO_CANDIDATE, LOW_CUS, HIGH_CUS], config)
    assert recs[0]["delta_cus"] is None
    for prev, rec in zip(recs, recs[1:]):
        assert rec["cus_mean"] == pytest.approx(rec["cus_raw"], abs=1e-12)
        assert rec["delta_cus"] == pytest.approx(rec["cus_raw"] - prev["cus_raw"], abs=1e-12)
    assert recs[2]["reason"] == "drift"


def test_drift_history_holds_pre_clamp_cus():
    recs = decide_all([NO_CLEAR_LEADER, HIGH_CUS, LOW_CUS, NO_CANDIDATE, LOW_CUS])
    assert recs[0]["soft_clamp"] and abs(recs[0]["cus"] - recs[0]["cus_raw"]) > 1e-3
    raw = [r["cus_raw"] for r in recs]
    assert raw[3] == 1.0
    for i in range(1, 5):
        assert recs[i]["delta_cus"] == pytest.approx(raw[i] - raw[i - 1], abs=1e-12)
        assert recs[i]["cus_mean"] == pytest.approx(sum(raw[: i + 1]) / (i + 1), abs=1e-12)


# -- section 10: soft clamp --------------------------------------------------------------


def soft_clamp_formula(raw: list[float], cus: float, config=BASE) -> list[float]:
    sev, comp, itv, dly = raw

    def clip(x: float) -> float:
        return min(1.0, max(0.0, x))

    return [
        clip(sev * (1 - config["SOFT_CLAMP_ALPHA"] * cus)),
        comp,
        clip(itv * (1 - config["SOFT_CLAMP_BETA"] * cus)),
        clip(dly + config["SOFT_CLAMP_GAMMA"] * cus),
    ]


def test_soft_clamp_formula():
    rec = decide_one(NO_CLEAR_LEADER)
    assert rec["soft_clamp"] is True and rec["level"] == 1 and rec["reason"] == "no_clear_leader"
    assert rec["raw_action"] == [0.25, 1.0, 1.0, 0.0]
    final = soft_clamp_formula(rec["raw_action"], rec["cus_raw"])
    assert rec["final_action"] == pytest.approx(final, abs=1e-12)
    after = scores(NO_CLEAR_LEADER, final)
    for key in "WJHC":
        assert rec[key] == pytest.approx(after[key], abs=1e-12)
    params = BASE.to_dict()
    before, margin_before = confidence_of(scores(NO_CLEAR_LEADER, rec["raw_action"]), params)
    conf_after, margin_after = confidence_of(after, params)
    assert rec["confidence"] == pytest.approx(conf_after, abs=1e-12)
    assert rec["delta_confidence"] == pytest.approx(conf_after - before, abs=1e-12)
    # cus: HI recomputed from the clamped action, DE_norm and AS_norm kept
    hi_change = human_uncertainty(conf_after, margin_after) - human_uncertainty(before, margin_before)
    assert rec["cus"] - rec["cus_raw"] == pytest.approx(BASE["CUS_WEIGHTS"][0] * hi_change, abs=1e-12)
    assert abs(rec["cus"] - rec["cus_raw"]) > 1e-3


def test_soft_clamp_also_shapes_drift_decisions():
    recs = decide_all([LOW_CUS, HIGH_CUS])
    rec = recs[1]
    assert (rec["level"], rec["reason"], rec["soft_clamp"]) == (1, "drift", True)
    assert rec["final_action"] == pytest.approx(soft_clamp_formula(rec["raw_action"], rec["cus_raw"]), abs=1e-12)
    assert rec["delta_confidence"] is not None


def test_clamp_violation_when_clamped_action_is_not_a_candidate():
    rec = decide_one(CLAMP_NOT_CANDIDATE)
    assert rec["reason"] == "clamp_violation"
    assert_fail_safe(rec, CLAMP_NOT_CANDIDATE)
    clamped = scores(CLAMP_NOT_CANDIDATE, soft_clamp_formula(rec["raw_action"], rec["cus_raw"]))
    assert is_candidate(scores(CLAMP_NOT_CANDIDATE, rec["raw_action"]))
    assert not is_candidate(clamped)


def test_clamp_violation_when_clamped_action_crosses_j_critical():
    config = BASE.replace(J_MIN=0.55, J_CRITICAL=0.8)
    rec = decide_one(CLAMP_J_CRITICAL, config)
    assert rec["reason"] == "clamp_violation"
    assert_fail_safe(rec, CLAMP_J_CRITICAL, config)
    raw = scores(CLAMP_J_CRITICAL, rec["raw_action"], config)
    clamped = scores(CLAMP_J_CRITICAL, soft_clamp_formula(rec["raw_action"], rec["cus_raw"], config), config)
    assert raw["J"] >= config["J_CRITICAL"]
    assert is_candidate(clamped, config) and clamped["J"] < config["J_CRITICAL"]
    assert clamped["H"] <= config["H_CRITICAL"]
    assert confidence_of(clamped, config.to_dict())[0] >= config["CONFIDENCE_ESCALATION_FORCE"]


# -- section 11: fail-safe ---------------------------------------------------------------


def test_fail_safe_uses_safe_action_scores():
    # J_MIN 0.95 leaves no candidate (J <= j_state = 0.875 for every action).
    config = BASE.replace(J_MIN=0.95)
    rec = decide_one(HALF, config)
    assert rec["reason"] == "no_valid_candidate"
    assert_fail_safe(rec, HALF, config)
    # SAFE_ACTION [0, 0.5, 0, 1] on HALF, by hand: harm_c = 0.15 + 0.15,
    # W = 1 - 0.18 - 0.05; J = min(1, 0.75, 1, 0.875, 0.88); H = 0; c_raw = 0.35
    assert rec["W"] == pytest.approx(0.77, abs=1e-12)
    assert rec["J"] == pytest.approx(0.75, abs=1e-12)
    assert rec["H"] == 0.0
    assert rec["C"] == pytest.approx(0.5, abs=1e-12)


def test_fail_safe_keeps_pre_clamp_confidence_and_cus():
    rec = decide_one(CLAMP_NOT_CANDIDATE)
    assert rec["level"] == 2
    before, _ = confidence_of(scores(CLAMP_NOT_CANDIDATE, rec["raw_action"]), BASE.to_dict())
    assert rec["confidence"] == pytest.approx(before, abs=1e-12)
    assert rec["cus"] == rec["cus_raw"]


# -- sections 1, 9 and 12: streams, t, id and the trace ----------------------------------


def test_streams_are_independent():
    a = [{**LOW_CUS, "stream": "a"}, {**HIGH_CUS, "stream": "a"}]
    b = [{**NO_CANDIDATE, "stream": "b"}, {**HIGH_CUS, "stream": "b"}]
    mixed = decide_all([a[0], b[0], a[1], b[1]])
    alone_a, alone_b = decide_all(a), decide_all(b)
    keys = [k for k in mixed[0] if k != "t"]
    assert [{k: r[k] for k in keys} for r in (mixed[0], mixed[2])] == [{k: r[k] for k in keys} for r in alone_a]
    assert [{k: r[k] for k in keys} for r in (mixed[1], mixed[3])] == [{k: r[k] for k in keys} for r in alone_b]
    # merged into one stream, a's HIGH_CUS would follow a CUS of 1 and not drift
    assert mixed[2]["reason"] == "drift"
    assert decide_all([LOW_CUS, NO_CANDIDATE, HIGH_CUS])[2]["reason"] == "normal"


def test_string_and_int_stream_ids_differ():
    recs = decide_all([{**NO_CANDIDATE, "stream": "1"}, {**HIGH_CUS, "stream": 1}])
    assert recs[1]["delta_cus"] is None
    assert (recs[1]["level"], recs[1]["reason"]) == (0, "normal")
    assert recs[0]["stream"] == "1" and recs[1]["stream"] == 1
    assert type(recs[0]["stream"]) is str and type(recs[1]["stream"]) is int


def test_default_stream_is_distinct_from_named_streams():
    recs = decide_all([NO_CANDIDATE, {**HIGH_CUS, "stream": "default"}, {**HIGH_CUS, "stream": None}])
    assert recs[0]["stream"] is None and recs[2]["stream"] is None
    assert recs[1]["delta_cus"] is None and recs[1]["reason"] == "normal"
    # a null stream and an absent one are the same default stream
    assert recs[2]["delta_cus"] == pytest.approx(recs[2]["cus_raw"] - 1.0, abs=1e-12)
    assert recs[2]["reason"] == "drift"


def test_streams_are_taken_in_input_order_not_sorted_by_t():
    recs = decide_all([{**HIGH_CUS, "t": 2.0}, {**LOW_CUS, "t": 1.0}])
    assert recs[0]["delta_cus"] is None and recs[0]["reason"] == "normal"
    assert recs[1]["delta_cus"] == pytest.approx(recs[1]["cus_raw"] - recs[0]["cus_raw"], abs=1e-12)
    assert [r["t"] for r in recs] == [2.0, 1.0]


def test_t_defaults_to_position():
    states = [{**LOW_CUS, "t": 10.5}, HIGH_CUS, {**HALF, "stream": "x"}, {**HALF, "t": 0}]
    recs = decide_all(states)
    assert [r["t"] for r in recs] == [10.5, 1, 2, 0]


def test_trace_carries_state_id_stream_model_and_config_id():
    states = [{**HIGH_CUS, "id": "row-7", "stream": "s"}, {**LOW_CUS, "id": 8}]
    recs = decide_all(states)
    assert [r["id"] for r in recs] == ["row-7", 8]
    assert [r["stream"] for r in recs] == ["s", None]
    for rec, state in zip(recs, states):
        assert rec["model"] == "ami-v1"
        assert rec["config_id"] == BASE.config_id
        assert rec["state"] == {name: state[name] for name in STATE_FIELDS}
    trace_fields = {
        "t", "cus", "delta_cus", "cus_mean", "raw_action", "final_action", "soft_clamp", "level",
        "confidence", "delta_confidence", "human_escalation", "chaos", "model", "reason", "cus_raw",
        "W", "J", "H", "C", "stream", "id", "state", "config_id",
    }  # fmt: skip
    assert trace_fields <= set(recs[0])


def test_chaos_flag_is_set_only_for_chaos_runs():
    assert run_records([HALF], BASE)[0]["chaos"] is False
    assert run_records([HALF], BASE, chaos=True)[0]["chaos"] is True


def test_decide_matches_one_step_of_a_stream():
    first, second = decide_all([LOW_CUS, HIGH_CUS])
    keys = tuple(k for k in reference_decide(HALF, BASE.to_dict()) if k not in ("t", "stream", "id"))
    assert_same_records([decide(LOW_CUS, BASE)], [first], keys)
    assert_same_records([decide(HIGH_CUS, BASE, history=[first["cus_raw"]])], [second], keys)
    assert decide(HIGH_CUS, BASE, history=None)["reason"] == "normal"
    assert decide(HIGH_CUS, BASE, history=[first["cus_raw"]])["reason"] == "drift"


# -- section 13: invariants --------------------------------------------------------------


def _invariant_configs():
    rng = random.Random(13)
    configs = [load_config(name) for name in ("base", "production_safe", "high_critical", "chaos_tuning")]
    for _ in range(3):
        configs.append(
            BASE.replace(
                J_MIN=rng.uniform(0.5, 0.95),
                H_MAX=rng.uniform(0.15, 0.5),
                SOFT_CLAMP_ALPHA=rng.uniform(0.3, 0.9),
                SOFT_CLAMP_BETA=rng.uniform(0.3, 0.9),
                SOFT_CLAMP_GAMMA=rng.uniform(0.2, 0.6),
                DELTA_CUS_THRESHOLD=rng.uniform(0.05, 0.25),
                CUS_MEAN_THRESHOLD=rng.uniform(0.5, 0.85),
            )
        )
    return configs


@pytest.fixture(scope="module")
def invariant_runs():
    rng = random.Random(2013)
    states = []
    for scenario in ("safe", "balanced", "critical", "chaos", "chaos"):
        states += draw_states(scenario, 400, 4, rng)
    return [(config, states, run_records(states, config, chaos=True)) for config in _invariant_configs()]


def test_invariant_final_action_in_unit_cube_and_level_in_range(invariant_runs):
    for _, _, recs in invariant_runs:
        for rec in recs:
            assert len(rec["final_action"]) == 4 and all(0.0 <= x <= 1.0 for x in rec["final_action"])
            assert rec["level"] in (0, 1, 2)


def test_invariant_below_level_2_every_limit_holds(invariant_runs):
    for config, _, recs in invariant_runs:
        for rec in recs:
            if rec["level"] < 2:
                assert rec["J"] >= config["J_MIN"] and rec["J"] >= config["J_CRITICAL"]
                assert rec["H"] <= config["H_MAX"] and rec["H"] <= config["H_CRITICAL"]
                assert config["C_MIN"] <= rec["C"] <= config["C_MAX"]
                assert rec["confidence"] >= config["CONFIDENCE_ESCALATION_FORCE"]


def test_invariant_level_2_iff_human_escalation_with_safe_action(invariant_runs):
    for config, _, recs in invariant_runs:
        for rec in recs:
            assert (rec["level"] == 2) == rec["human_escalation"]
            if rec["level"] == 2:
                assert rec["final_action"] == list(config["SAFE_ACTION"])


def test_invariant_soft_clamp_only_at_level_1_and_level_0_keeps_raw_action(invariant_runs):
    for _, _, recs in invariant_runs:
        for rec in recs:
            if rec["soft_clamp"]:
                assert rec["level"] == 1
            if rec["level"] == 0:
                assert rec["final_action"] == rec["raw_action"]


def test_invariant_low_confidence_implies_human_escalation(invariant_runs):
    for config, _, recs in invariant_runs:
        for rec in recs:
            if rec["confidence"] < config["CONFIDENCE_ESCALATION_FORCE"]:
                assert rec["human_escalation"]


def test_invariant_determinism(invariant_runs):
    for config, states, recs in invariant_runs[:2]:
        again = run_records(states, config, chaos=True)
        assert again == recs


def test_invariant_runs_cover_every_level_and_reason(invariant_runs):
    reasons = {rec["reason"] for _, _, recs in invariant_runs for rec in recs}
    levels = {rec["level"] for _, _, recs in invariant_runs for rec in recs}
    assert levels == {0, 1, 2}
    assert {"normal", "no_clear_leader", "drift", "no_valid_candidate", "clamp_violation"} <= reasons

"""A second, deliberately plain implementation of docs/engine.md, for the tests only.

One decision at a time, one action at a time, in pure Python with the `math` module, and
no import from `ami_engine`: the real engine is vectorised and compiled, this one reads
like the spec, section by section, so that the two can be compared record by record.
It is slow (625 actions per decision) and is never used outside the tests.

`params` is a dict with every parameter of docs/engine.md §14 under its upper-case
name (lists or tuples for CUS_WEIGHTS, SCORE_WEIGHTS, ACTION_GRID and SAFE_ACTION), e.g.
`load_config("base").to_dict()`.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

STATE_FIELDS = (
    "physical",
    "social",
    "context",
    "risk",
    "compassion",
    "justice",
    "harm_sens",
    "responsibility",
    "empathy",
)

# Section 5: scores closer than this are the same score.
TIE = 1e-12


# -- section 3: moral scores ------------------------------------------------------------


def clip(x: float) -> float:
    return min(1.0, max(0.0, x))


def sig(x: float) -> float:
    # Written so that exp never overflows; same value as 1 / (1 + e^-x).
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def score_w(s: dict, sev: float, comp: float, itv: float, dly: float) -> float:
    harm_c = 0.4 * sev + 0.3 * (1 - comp) + 0.3 * s["risk"]
    return clip(1 - 0.6 * harm_c + 0.4 * (0.5 * itv * (1 - dly)) - 0.1 * s["risk"] * dly)


def score_j(s: dict, sev: float, comp: float, itv: float, dly: float) -> float:
    j_ctx = 1 - 0.5 * max(0.0, s["context"] - itv) if s["risk"] > 0.5 else 1.0
    j_state = 1 - (1 - s["justice"]) * (0.25 + 0.75 * sev)
    j_prop = 1 - 0.6 * max(0.0, s["risk"] - 0.3 - sev)
    return clip(min(1 - 0.5 * sev, 0.5 + 0.5 * comp, j_ctx, j_state, j_prop))


def score_h(s: dict, sev: float, comp: float, itv: float, dly: float) -> float:
    return clip((0.5 * sev * (1 - comp) + 0.3 * (1 - comp) * itv + 0.2 * s["social"] * sev) * (0.5 + s["harm_sens"]))


def score_c(s: dict, sev: float, comp: float, itv: float, dly: float) -> float:
    c_raw = (
        0.3 * s["empathy"] + 0.3 * (1 - s["physical"]) + 0.2 * s["compassion"] + 0.1 * comp - 0.2 * s["responsibility"]
    )
    return sig(4 * (c_raw - 0.35))


def reference_scores(state: dict, action: tuple | list, params: dict) -> dict[str, float]:
    """W, J, H, C and the selection score S of one (state, action) pair."""
    sev, comp, itv, dly = (float(x) for x in action)
    w = score_w(state, sev, comp, itv, dly)
    j = score_j(state, sev, comp, itv, dly)
    h = score_h(state, sev, comp, itv, dly)
    c = score_c(state, sev, comp, itv, dly)
    w0, w1, w2, w3 = params["SCORE_WEIGHTS"]
    return {"W": w, "J": j, "H": h, "C": c, "S": w0 * w + w1 * j - w2 * h + w3 * c}


# -- section 4: constraint filter ---------------------------------------------------------


def is_candidate(sc: dict, p: dict) -> bool:
    return sc["J"] >= p["J_MIN"] and sc["H"] <= p["H_MAX"] and p["C_MIN"] <= sc["C"] <= p["C_MAX"]


# -- section 5: selection -----------------------------------------------------------------


def first_best(scored: list[tuple[tuple, dict]]) -> tuple[tuple, dict]:
    """The first (action, scores) in grid order whose S is within TIE of the best S."""
    best = max(sc["S"] for _, sc in scored)
    for action, sc in scored:
        if sc["S"] >= best - TIE:
            return action, sc
    raise AssertionError("unreachable: the best score is always within TIE of itself")


def distinct_scores(values: list[float]) -> list[float]:
    """Sorted descending; a value is kept only when more than TIE below the last value kept."""
    kept: list[float] = []
    for v in sorted(values, reverse=True):
        if not kept or v < kept[-1] - TIE:
            kept.append(v)
    return kept


# -- section 6: confidence ----------------------------------------------------------------


def population_std(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def margin_of(sc: dict, p: dict) -> float:
    m = min(sc["J"] - p["J_MIN"], p["H_MAX"] - sc["H"], sc["C"] - p["C_MIN"], p["C_MAX"] - sc["C"])
    return min(1.0, max(-1.0, m))


def confidence_of(sc: dict, p: dict) -> tuple[float, float]:
    """(confidence, clipped margin) of a scored action."""
    base = clip(1 - population_std([sc["W"], sc["J"], 1 - sc["H"], sc["C"]]) / p["SIGMA_MAX"])
    margin = margin_of(sc, p)
    return base * sig(p["CONFIDENCE_MARGIN_K"] * margin), margin


# -- section 7: uncertainty ---------------------------------------------------------------


def human_uncertainty(confidence: float, margin: float, p: dict) -> float:
    return (1 - confidence) * (1 + sig(-p["UNCERTAINTY_MARGIN_K"] * margin)) / 2


def combined_uncertainty(hi: float, de_norm: float, as_norm: float, p: dict) -> float:
    c1, c2, c3 = p["CUS_WEIGHTS"]
    return c1 * hi + c2 * de_norm + c3 * (1 - as_norm)


def decision_entropy_and_gap(distinct: list[float], confidence: float, p: dict) -> tuple[float, float, float]:
    """(DE_norm, AS_norm, divergence) from the distinct candidate scores."""
    n = len(distinct)
    if n < 2:
        return 0.0, 1.0, 0.0
    temp = p["DE_TEMPERATURE"]
    # softmax(d / T), shifted by the largest term so that exp never overflows
    top = distinct[0] / temp
    expd = [math.exp(d / temp - top) for d in distinct]
    total = sum(expd)
    probs = [e / total for e in expd]
    entropy = -sum(q * math.log(q) for q in probs if q > 0.0)  # 0 * ln 0 = 0
    de_norm = entropy / math.log(n)
    gap = distinct[0] - distinct[1]
    as_norm = 1 - math.exp(-p["UNCERTAINTY_AS_LAMBDA"] * gap)
    divergence = abs(confidence - (1 - de_norm))
    return de_norm, as_norm, divergence


# -- section 10: soft clamp ---------------------------------------------------------------


def soft_clamp_action(raw: tuple, cus: float, p: dict) -> tuple[float, float, float, float]:
    sev, comp, itv, dly = raw
    return (
        clip(sev * (1 - p["SOFT_CLAMP_ALPHA"] * cus)),
        comp,
        clip(itv * (1 - p["SOFT_CLAMP_BETA"] * cus)),
        clip(dly + p["SOFT_CLAMP_GAMMA"] * cus),
    )


# -- one decision -------------------------------------------------------------------------


def grid_actions(p: dict) -> list[tuple]:
    return list(itertools.product([float(g) for g in p["ACTION_GRID"]], repeat=4))


def reference_decide(state: dict, params: dict, history: list[float] | None = None) -> dict[str, Any]:
    """One decision (sections 2-11); `history` = the stream's earlier pre-clamp CUS, oldest first."""
    return _decide(state, params, list(history or []))


def _decide(state: dict, p: dict, history: list[float], gaps: list[float] | None = None) -> dict[str, Any]:
    """The decision; into `gaps`, when given, every value it compared minus its threshold."""
    note = gaps.extend if gaps is not None else (lambda values: None)
    scored = [(a, reference_scores(state, a, p)) for a in grid_actions(p)]
    if gaps is not None:
        for _, sc in scored:
            note(_deciding_gaps(_filter_checks(sc, p)))
    candidates = [(a, sc) for a, sc in scored if is_candidate(sc, p)]

    # sections 5-8
    if not candidates:
        raw, raw_sc = first_best(scored)
        note(_tie_gaps([sc["S"] for _, sc in scored]))
        confidence, cus, level, reason = 0.0, 1.0, 2, "no_valid_candidate"
        de_norm = as_norm = 0.0
    else:
        raw, raw_sc = first_best(candidates)
        note(_tie_gaps([sc["S"] for _, sc in candidates]))
        distinct = distinct_scores([sc["S"] for _, sc in candidates])
        confidence, margin = confidence_of(raw_sc, p)
        de_norm, as_norm, divergence = decision_entropy_and_gap(distinct, confidence, p)
        hi = human_uncertainty(confidence, margin, p)
        cus = combined_uncertainty(hi, de_norm, as_norm, p)
        # section 8: the first rule that fires sets the level
        rules = [
            (raw_sc["J"] - p["J_CRITICAL"], raw_sc["J"] < p["J_CRITICAL"], 2, "j_critical"),
            (raw_sc["H"] - p["H_CRITICAL"], raw_sc["H"] > p["H_CRITICAL"], 2, "h_critical"),
            (
                confidence - p["CONFIDENCE_ESCALATION_FORCE"],
                confidence < p["CONFIDENCE_ESCALATION_FORCE"],
                2,
                "low_confidence",
            ),
            (
                divergence - p["DIVERGENCE_HARD_THRESHOLD"],
                divergence > p["DIVERGENCE_HARD_THRESHOLD"],
                2,
                "divergence",
            ),
            (as_norm - p["AS_SOFT_THRESHOLD"], as_norm < p["AS_SOFT_THRESHOLD"], 1, "no_clear_leader"),
        ]
        level, reason = 0, "normal"
        for gap, fires, rule_level, rule_reason in rules:
            note([gap])
            if fires:
                level, reason = rule_level, rule_reason
                break

    # section 9: drift over the pre-clamp CUS
    delta_cus = cus - history[-1] if history else None
    window = (history + [cus])[-int(p["CUS_MEAN_WINDOW"]) :]
    cus_mean = sum(window) / len(window)
    if level == 0:
        alarms = [(cus_mean - p["CUS_MEAN_THRESHOLD"], cus_mean > p["CUS_MEAN_THRESHOLD"])]
        if delta_cus is not None:  # a null delta_cus never fires
            alarms.append((delta_cus - p["DELTA_CUS_THRESHOLD"], delta_cus > p["DELTA_CUS_THRESHOLD"]))
        note(_deciding_gaps([(gap, not fires) for gap, fires in alarms]))
        if any(fires for _, fires in alarms):
            level, reason = 1, "drift"

    final, final_sc = raw, raw_sc
    trace_cus, trace_conf, delta_conf, soft = cus, confidence, None, False

    # section 10: soft clamp
    if level == 1:
        clamped = soft_clamp_action(raw, cus, p)
        clamped_sc = reference_scores(state, clamped, p)
        conf_after, margin_after = confidence_of(clamped_sc, p)
        # the clamped action must pass the filter, the hard floors and the confidence floor
        checks = _filter_checks(clamped_sc, p) + [
            (clamped_sc["J"] - p["J_CRITICAL"], clamped_sc["J"] >= p["J_CRITICAL"]),
            (clamped_sc["H"] - p["H_CRITICAL"], clamped_sc["H"] <= p["H_CRITICAL"]),
            (conf_after - p["CONFIDENCE_ESCALATION_FORCE"], conf_after >= p["CONFIDENCE_ESCALATION_FORCE"]),
        ]
        note(_deciding_gaps(checks))
        if not all(ok for _, ok in checks):
            level, reason = 2, "clamp_violation"
        else:
            final, final_sc, soft = clamped, clamped_sc, True
            trace_conf = conf_after
            delta_conf = conf_after - confidence
            trace_cus = combined_uncertainty(human_uncertainty(conf_after, margin_after, p), de_norm, as_norm, p)

    # section 11: fail-safe
    if level == 2:
        final = tuple(float(x) for x in p["SAFE_ACTION"])
        final_sc = reference_scores(state, final, p)
        trace_cus, trace_conf, delta_conf, soft = cus, confidence, None, False

    return {
        "cus": trace_cus,
        "cus_raw": cus,
        "delta_cus": delta_cus,
        "cus_mean": cus_mean,
        "raw_action": list(raw),
        "final_action": list(final),
        "soft_clamp": soft,
        "level": level,
        "confidence": trace_conf,
        "delta_confidence": delta_conf,
        "human_escalation": level == 2,
        "reason": reason,
        "W": final_sc["W"],
        "J": final_sc["J"],
        "H": final_sc["H"],
        "C": final_sc["C"],
    }


def _filter_checks(sc: dict, p: dict) -> list[tuple[float, bool]]:
    """Section 4 as (value - threshold, passes) per condition."""
    return [
        (sc["J"] - p["J_MIN"], sc["J"] >= p["J_MIN"]),
        (sc["H"] - p["H_MAX"], sc["H"] <= p["H_MAX"]),
        (sc["C"] - p["C_MIN"], sc["C"] >= p["C_MIN"]),
        (sc["C"] - p["C_MAX"], sc["C"] <= p["C_MAX"]),
    ]


def _deciding_gaps(tests: list[tuple[float, bool]]) -> list[float]:
    """Of the gaps of an `and` of tests, those whose test could change the outcome."""
    return [gap for i, (gap, _) in enumerate(tests) if all(ok for j, (_, ok) in enumerate(tests) if j != i)]


def _tie_gaps(values: list[float]) -> list[float]:
    """The TIE comparisons of selection and of the distinct-score walk, as value - threshold.

    A value equal to the one it is compared with, up to rounding, is a full TIE away from
    the threshold and is left out.
    """
    near = TIE / 100
    best = max(values)
    gaps = [v - (best - TIE) for v in values if best - v > near]
    kept = None
    for v in sorted(values, reverse=True):
        if kept is not None and kept - v > near:
            gaps.append(v - (kept - TIE))
        if kept is None or v < kept - TIE:
            kept = v
    return gaps


def threshold_distance(state: dict, params: dict, history: list[float] | None = None) -> float:
    """How close this decision came to a comparison going the other way.

    The smallest |value - threshold| over every comparison the decision made (filter of
    every action, TIE between neighbouring scores, escalation rules, drift, clamp checks).
    docs/engine.md (introduction) lets values within 1e-12 of a threshold fall either way between
    implementations; a test that meets such a decision cannot expect agreement on it.
    """
    gaps: list[float] = []
    _decide(state, params, list(history or []), gaps)
    return min(abs(g) for g in gaps)


def stream_key(stream: Any) -> tuple[str, Any]:
    # "1" and 1 are different streams; None is the default stream.
    return (type(stream).__name__, stream)


def reference_run(states: list[dict], params: dict) -> list[dict[str, Any]]:
    """Decide every state in input order, each stream with its own drift history."""
    histories: dict[tuple[str, Any], list[float]] = {}
    out = []
    for i, state in enumerate(states):
        stream = state.get("stream")
        history = histories.setdefault(stream_key(stream), [])
        rec = reference_decide(state, params, history)
        history.append(rec["cus_raw"])
        t = state.get("t")
        rec["t"] = t if t is not None else i
        rec["stream"] = stream
        rec["id"] = state.get("id")
        out.append(rec)
    return out


# -- support for the tests ----------------------------------------------------------------

# docs/engine.md §15: the range each scenario draws each field from.
SCENARIO_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "safe": {
        "compassion": (0.60, 0.95),
        "justice": (0.60, 0.95),
        "harm_sens": (0.05, 0.35),
        "risk": (0.10, 0.40),
        "physical": (0.30, 0.80),
        "social": (0.40, 0.90),
        "context": (0.30, 0.80),
        "responsibility": (0.50, 0.90),
        "empathy": (0.50, 0.95),
    },
    "balanced": {
        "compassion": (0.35, 0.85),
        "justice": (0.40, 0.85),
        "harm_sens": (0.15, 0.55),
        "risk": (0.25, 0.70),
        "physical": (0.20, 0.85),
        "social": (0.25, 0.80),
        "context": (0.20, 0.85),
        "responsibility": (0.30, 0.85),
        "empathy": (0.35, 0.85),
    },
    "critical": {
        "compassion": (0.20, 0.60),
        "justice": (0.15, 0.55),
        "harm_sens": (0.45, 0.90),
        "risk": (0.50, 0.95),
        "physical": (0.20, 0.90),
        "social": (0.20, 0.70),
        "context": (0.20, 0.85),
        "responsibility": (0.20, 0.70),
        "empathy": (0.20, 0.60),
    },
    "chaos": {name: (0.0, 1.0) for name in STATE_FIELDS},
}


def draw_states(scenario: str, n: int, streams: int, rng: Any) -> list[dict]:
    """n states of a scenario, uniform per field, in `streams` consecutive streams s0, s1, ..."""
    ranges = SCENARIO_RANGES[scenario]
    states = []
    for i in range(n):
        state = {name: rng.uniform(*ranges[name]) for name in STATE_FIELDS}
        state["stream"] = f"s{i * streams // n}"
        states.append(state)
    return states


RECORD_KEYS = (
    "t",
    "cus",
    "cus_raw",
    "delta_cus",
    "cus_mean",
    "raw_action",
    "final_action",
    "soft_clamp",
    "level",
    "confidence",
    "delta_confidence",
    "human_escalation",
    "reason",
    "W",
    "J",
    "H",
    "C",
    "stream",
    "id",
)
# Compared exactly, type included: "1" and 1 are different streams, True is not 1.
EXACT_KEYS = frozenset({"t", "soft_clamp", "level", "human_escalation", "reason", "stream", "id"})


def record_differences(
    actual: dict, expected: dict, keys: tuple[str, ...] | None = None, tol: float = 1e-9
) -> list[str]:
    """What differs between two records: floats beyond tol, anything else at all."""
    problems = []
    for key in keys or tuple(k for k in RECORD_KEYS if k in expected):
        if key not in actual:
            problems.append(f"{key}: missing")
            continue
        a, e = actual[key], expected[key]
        if key in EXACT_KEYS:
            same = a == e and (type(a) is type(e) or key in ("t", "level"))
            same = same and isinstance(a, bool) == isinstance(e, bool)
        elif e is None or a is None:
            same = a is None and e is None
        elif isinstance(e, list):
            same = len(a) == len(e) and all(abs(float(x) - y) <= tol for x, y in zip(a, e))
        else:
            same = not isinstance(a, bool) and abs(float(a) - e) <= tol
        if not same:
            problems.append(f"{key}: {a!r} != {e!r}")
    return problems


def assert_same_records(actual: list[dict], expected: list[dict], keys: tuple[str, ...] | None = None) -> None:
    assert len(actual) == len(expected), f"{len(actual)} records, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        problems = record_differences(a, e, keys)
        assert not problems, f"record {i}: " + "; ".join(problems)

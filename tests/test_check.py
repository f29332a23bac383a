"""The invariants of docs/engine.md §13 (1-5), checked over trace records against a config."""

import json

import numpy as np
import pytest

from ami_engine.check import INVARIANTS, TOLERANCE, Violation, check_columns, check_records, check_trace_file
from ami_engine.config import load_config
from ami_engine.engine import run, trace_records
from ami_engine.io.files import InputError
from ami_engine.scenario import generate

BASE = load_config("base")


@pytest.fixture(scope="module")
def decided():
    """Real traces of base on chaos states: every level, clamped records included."""
    states = generate("chaos", 3000, 11)
    cols = run(states, BASE)
    return cols, trace_records(cols, states, BASE, chaos=True)


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def first(records, **where):
    return next(i for i, r in enumerate(records) if all(r[k] == v for k, v in where.items()))


def found(violations):
    return {(v.line, v.invariant, v.field) for v in violations}


def test_real_traces_break_no_invariant(decided, tmp_path):
    cols, records = decided
    assert {r["level"] for r in records} == {0, 1, 2} and any(r["soft_clamp"] for r in records)
    assert check_columns(cols, BASE) == []
    assert check_records(records, BASE) == []
    assert check_trace_file(write(tmp_path / "t.jsonl", records), BASE) == []


def test_traces_of_each_profile_keep_its_own_thresholds():
    states = generate("chaos", 2000, 12)
    for name in ("production_safe", "high_critical", "chaos_tuning"):
        config = load_config(name)
        assert check_columns(run(states, config), config) == [], name


# Each case: the record to tamper (by its fields), the change, and the (invariant, field,
# words of the detail) the check must report on that record's line.
TAMPERED = {
    "1: final_action outside [0, 1]^4": (dict(level=2), dict(final_action=[0.0, 0.5, 0.0, 1.2]),
                                         (1, "final_action", "outside [0, 1]^4")),
    "1: level not 0, 1 or 2": (dict(level=1), dict(level=3), (1, "level", "3 is not 0, 1 or 2")),
    "2: kept action below J_MIN": (dict(level=0), dict(J=0.84), (2, "J", "< J_MIN 0.85")),
    "2: kept action below J_CRITICAL": (dict(level=1), dict(J=0.6), (2, "J", "< J_CRITICAL 0.7")),
    "2: kept action above H_MAX": (dict(level=0), dict(H=0.31), (2, "H", "> H_MAX 0.3")),
    "2: kept action above H_CRITICAL": (dict(level=1), dict(H=0.65), (2, "H", "> H_CRITICAL 0.6")),
    "2: kept action below C_MIN": (dict(level=0), dict(C=0.34), (2, "C", "< C_MIN 0.35")),
    "2: kept action above C_MAX": (dict(level=1), dict(C=0.76), (2, "C", "> C_MAX 0.75")),
    "2: kept action below the confidence force": (dict(level=0), dict(confidence=0.19),
                                                  (2, "confidence", "< CONFIDENCE_ESCALATION_FORCE 0.2")),
    "3: fail-safe without human escalation": (dict(level=2), dict(human_escalation=False),
                                              (3, "human_escalation", "level 2 with human_escalation false")),
    "3: human escalation below level 2": (dict(level=0), dict(human_escalation=True),
                                          (3, "human_escalation", "level 0 with human_escalation true")),
    "3: fail-safe that is not SAFE_ACTION": (dict(level=2), dict(final_action=[0.25, 0.5, 0.0, 1.0]),
                                            (3, "final_action", "!= SAFE_ACTION")),
    "4: soft clamp at level 0": (dict(level=0), dict(soft_clamp=True), (4, "soft_clamp", "with level 0")),
    "4: soft clamp at level 2": (dict(level=2), dict(soft_clamp=True), (4, "soft_clamp", "with level 2")),
    "4: level 0 acting otherwise than decided": (dict(level=0), dict(final_action=[1.0, 1.0, 1.0, 1.0]),
                                                 (4, "final_action", "!= raw_action")),
    "5: low confidence without human escalation": (dict(level=2), dict(confidence=0.1, human_escalation=False),
                                                   (5, "human_escalation", "without human escalation")),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_record_breaks_the_invariant_on_its_line(case, decided, tmp_path):
    _, records = decided
    where, change, (invariant, field, words) = TAMPERED[case]
    records = [dict(r) for r in records]
    i = first(records, **where)
    records[i].update(change)
    violations = check_trace_file(write(tmp_path / "t.jsonl", records), BASE)
    assert {v.line for v in violations} == {i + 1}  # no other record is blamed
    assert any(v.invariant == invariant and v.field == field and words in v.detail for v in violations)
    assert (i, invariant, field) in found(check_records(records, BASE))  # in memory: 0-based index


def test_values_within_the_tolerance_of_a_threshold_are_not_violations(decided):
    _, records = decided
    records = [dict(r) for r in records]
    i = first(records, level=0)
    records[i].update(J=BASE["J_MIN"] - TOLERANCE / 10, H=BASE["H_MAX"] + TOLERANCE / 10)
    assert check_records(records, BASE) == []
    records[i].update(J=BASE["J_MIN"] - 10 * TOLERANCE)
    assert found(check_records(records, BASE)) == {(i, 2, "J")}


def test_traces_decided_under_chaos_tuning_break_base_thresholds(tmp_path):
    """A hand-made situation: traces of a looser profile checked against base's thresholds."""
    states = generate("chaos", 2000, 5)
    loose = load_config("chaos_tuning")
    cols = run(states, loose)
    assert check_columns(cols, loose) == []
    violations = check_columns(cols, BASE)
    assert violations and {v.invariant for v in violations} >= {2}
    kept = np.flatnonzero(cols.level < 2)
    assert {v.line for v in violations} <= set(kept.tolist())
    j_low = [v for v in violations if v.field == "J" and "J_MIN" in v.detail]
    assert j_low and all(cols.J[v.line] < BASE["J_MIN"] for v in j_low)
    on_file = check_trace_file(write(tmp_path / "t.jsonl", trace_records(cols, states, loose)), BASE)
    assert [(v.line - 1, v.invariant, v.field) for v in on_file] == [(v.line, v.invariant, v.field)
                                                                     for v in violations]


def test_foreign_traces_without_scores_are_checked_on_what_they_have(decided):
    _, records = decided
    foreign = [{k: v for k, v in r.items() if k not in ("W", "J", "H", "C", "reason", "model")} for r in records]
    i = first(foreign, level=0)
    foreign[i].update(confidence=0.05)
    assert found(check_records(foreign, BASE)) == {(i, 2, "confidence"), (i, 5, "human_escalation")}


def test_a_violation_names_its_line_invariant_rule_field_and_values(decided):
    _, records = decided
    records = [dict(r) for r in records]
    i = first(records, level=0)
    records[i].update(H=0.42)
    (v,) = check_records(records, BASE)
    assert v == Violation(i, 2, "H", v.detail) and "0.42" in v.detail and "H_MAX 0.3" in v.detail
    assert v.name == INVARIANTS[2][0] and v.rule == INVARIANTS[2][1]
    assert v.to_dict() == {"line": i, "invariant": 2, "name": v.name, "rule": v.rule, "field": "H",
                           "detail": v.detail}
    assert v.format("t.jsonl").startswith(f"t.jsonl:{i}: invariant 2 ({v.name}): H: ")


def test_a_record_that_is_not_a_trace_is_bad_input(decided):
    _, records = decided
    broken = [dict(records[0])]
    del broken[0]["final_action"]
    with pytest.raises(InputError, match="record 0"):
        check_records(broken, BASE)


def test_an_empty_traces_file_is_bad_input(tmp_path):
    (tmp_path / "t.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no traces"):
        check_trace_file(tmp_path / "t.jsonl", BASE)

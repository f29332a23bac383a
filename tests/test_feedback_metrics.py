"""Feedback metrics (docs/learning.md §3) as sums that add up across shards."""

import gzip
import io
import json
import math
import platform
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_engine.io.files import InputError
from ami_engine.learning.feedback_metrics import MetricSums, exact_sum, metrics_from_traces, sums_from_columns

SAFE = [0.0, 0.5, 0.0, 1.0]

# Four decisions, small enough to work out by hand:
#   level 0, cus 0.2, no clamp
#   level 1, cus 0.4, clamped: |final - raw| = (0.5, 0, 0, 0.5), mean 0.25
#   level 2, cus 0.9, fail-safe: final is SAFE_ACTION but it is no clamp, so no distortion
#   level 1, cus 0.5, drift without clamp
HAND = [
    dict(level=0, cus=0.2, soft_clamp=False, raw=[0.5, 0.5, 0.5, 0.5], final=[0.5, 0.5, 0.5, 0.5], human=False),
    dict(level=1, cus=0.4, soft_clamp=True, raw=[1.0, 1.0, 0.0, 0.0], final=[0.5, 1.0, 0.0, 0.5], human=False),
    dict(level=2, cus=0.9, soft_clamp=False, raw=[1.0, 0.0, 1.0, 0.0], final=SAFE, human=True),
    dict(level=1, cus=0.5, soft_clamp=False, raw=[0.25, 0.5, 0.0, 1.0], final=[0.25, 0.5, 0.0, 1.0], human=False),
]


def columns(rows):
    return dict(
        level=np.array([r["level"] for r in rows], dtype=np.int8),
        cus=np.array([r["cus"] for r in rows]),
        soft_clamp=np.array([r["soft_clamp"] for r in rows]),
        raw_action=np.array([r["raw"] for r in rows], dtype=float).reshape(-1, 4),
        final_action=np.array([r["final"] for r in rows], dtype=float).reshape(-1, 4),
        human_escalation=np.array([r["human"] for r in rows]),
    )


def trace_line(row, t=0, **extra):
    return json.dumps({
        "t": t, "cus": row["cus"], "delta_cus": None, "cus_mean": row["cus"], "raw_action": row["raw"],
        "final_action": row["final"], "soft_clamp": row["soft_clamp"], "level": row["level"], "confidence": 0.6,
        "delta_confidence": 0.01 if row["soft_clamp"] else None, "human_escalation": row["human"], "chaos": False,
        **extra,
    })


def write_traces_file(tmp_path, rows, name="t.jsonl", **extra):
    path = tmp_path / name
    text = "".join(trace_line(r, t=i, **extra) + "\n" for i, r in enumerate(rows))
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


def random_rows(n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        level = int(rng.integers(0, 3))
        raw = (rng.integers(0, 5, 4) / 4).tolist()
        clamped = level == 1 and bool(rng.random() < 0.7)
        final = SAFE if level == 2 else ([x * float(rng.random()) for x in raw] if clamped else raw)
        rows.append(dict(level=level, cus=float(rng.random()), soft_clamp=clamped, raw=raw, final=final,
                         human=level == 2))
    return rows


def test_metrics_of_four_decisions_worked_out_by_hand():
    sums = sums_from_columns(**columns(HAND))
    assert sums.n == 4 and sums.n_level == (1, 2, 1)
    assert sums.fail_safe_rate == pytest.approx(1 / 4)
    assert sums.mean_cus == pytest.approx((0.2 + 0.4 + 0.9 + 0.5) / 4)
    assert sums.clamp_distortion == pytest.approx(0.25 / 4)
    assert sums.level_rates == pytest.approx((0.25, 0.5, 0.25))
    assert sums.human_escalation_rate == pytest.approx(0.25)
    assert sums.n_clamped == 1 and sums.n_human == 1


def test_clamp_distortion_is_averaged_over_all_records_not_only_the_clamped():
    one_clamped = [HAND[1]] + [HAND[0]] * 9
    assert sums_from_columns(**columns(one_clamped)).clamp_distortion == pytest.approx(0.25 / 10)


def test_a_fail_safe_is_not_clamp_distortion_even_though_its_action_changed():
    assert sums_from_columns(**columns([HAND[2]])).clamp_distortion == 0.0


def test_metrics_from_a_traces_file_equal_those_of_the_columns(tmp_path):
    from_file = metrics_from_traces(write_traces_file(tmp_path, HAND))
    assert from_file == sums_from_columns(**columns(HAND))
    assert from_file.clamp_distortion == pytest.approx(0.0625)


def test_sums_of_shards_add_up_to_the_sums_of_the_whole():
    rows = random_rows(101, seed=1)
    whole = sums_from_columns(**columns(rows))
    shards = [sums_from_columns(**columns(rows[a:b])) for a, b in ((0, 30), (30, 31), (31, 101))]
    merged = shards[0] + shards[1] + shards[2]
    assert merged.n == whole.n and merged.n_level == whole.n_level
    assert merged.n_clamped == whole.n_clamped and merged.n_human == whole.n_human
    assert merged.sum_cus == pytest.approx(whole.sum_cus, abs=1e-12)
    assert merged.sum_distortion == pytest.approx(whole.sum_distortion, abs=1e-12)
    assert shards[0].merge(shards[1]) == shards[0] + shards[1]
    assert MetricSums() + whole == whole


def test_empty_sums_have_no_rates():
    assert math.isnan(MetricSums().fail_safe_rate) and math.isnan(MetricSums().mean_cus)


def test_to_dict_holds_the_metrics_and_counts():
    d = sums_from_columns(**columns(HAND)).to_dict()
    assert d["n"] == 4 and d["level_counts"] == [1, 2, 1]
    assert d["fail_safe_rate"] == pytest.approx(0.25) and d["clamp_distortion"] == pytest.approx(0.0625)
    json.dumps(d)


def test_traces_of_other_engines_and_gzip_and_stdin_give_the_same_metrics(tmp_path, monkeypatch):
    expected = sums_from_columns(**columns(HAND))
    foreign = write_traces_file(tmp_path, HAND, name="f.jsonl", uncertainty=0.1, engine="other")
    assert metrics_from_traces(foreign) == expected
    assert metrics_from_traces(write_traces_file(tmp_path, HAND, name="t.jsonl.gz")) == expected
    data = open(foreign, "rb").read()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    assert metrics_from_traces("-") == expected


def test_the_result_does_not_depend_on_the_number_of_workers(tmp_path):
    path = write_traces_file(tmp_path, random_rows(300, seed=2))
    one = metrics_from_traces(path, workers=1, block_bytes=2048)
    two = metrics_from_traces(path, workers=2, block_bytes=2048)
    assert one == two  # exactly: the same blocks, added in the same order
    assert one.n == 300
    whole = sums_from_columns(**columns(random_rows(300, seed=2)))
    assert one.mean_cus == pytest.approx(whole.mean_cus) and one.n_level == whole.n_level


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("bad_lines", [(41, 281), (281,), (251, 261)])
def test_the_first_bad_record_stops_the_metrics_naming_line_and_field(tmp_path, workers, bad_lines):
    rows = random_rows(300, seed=3)
    lines = [trace_line(r, t=i) for i, r in enumerate(rows)]
    lines[bad_lines[0] - 1] = lines[bad_lines[0] - 1].replace('"level": ', '"level": 9, "x": ')
    for later in bad_lines[1:]:
        lines[later - 1] = lines[later - 1].replace('"chaos": false', '"chaos": "no"')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as caught:
        metrics_from_traces(str(path), workers=workers, block_bytes=2048)
    assert (caught.value.line, caught.value.field) == (bad_lines[0], "level")


def test_metrics_check_every_phase_4_7_1_field(tmp_path):
    path = tmp_path / "t.jsonl"
    record = json.loads(trace_line(HAND[0]))
    del record["human_escalation"]
    path.write_text(trace_line(HAND[1]) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputError, match=r":2: human_escalation: missing"):
        metrics_from_traces(str(path))


def test_an_empty_traces_file_has_no_metrics(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match="no traces"):
        metrics_from_traces(str(path))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=60))
def test_exact_sum_is_the_sum_of_the_values_as_fractions(values):
    """Any finite floats, subnormals, negative zero and the largest ones included."""
    assert exact_sum(np.array(values, dtype=np.float64)) == sum((Fraction(v) for v in values), Fraction(0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(0.0, allow_nan=False, allow_infinity=False),
                          st.sampled_from([0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308])),
                max_size=60))
def test_exact_sum_of_values_without_a_sign_bit_counts_their_leading_ones(values):
    """Without a sign bit (no negative value, no -0.0) the leading 1 of each normal number is
    counted per exponent, not set in each mantissa: zeros and subnormals have none."""
    assert exact_sum(np.array(values, dtype=np.float64)) == sum((Fraction(v) for v in values), Fraction(0))


def test_exact_sum_refuses_what_is_not_finite():
    for bad in (np.nan, np.inf, -np.inf, -np.nan):
        with pytest.raises(ValueError, match="finite"):
            exact_sum(np.array([0.5, bad]))


_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from ami_engine.io import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
def batch():  # a batch's arrays: six of 2 MB and a JSONL block of 8 MB held at once, then all freed
    live = [np.ones(1 << 18) for _ in range(6)] + [np.ones(1 << 20)]
    return sum(a.sum() for a in live)
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_kept_freed_memory_is_reused_without_fresh_pages():
    """Batches of arrays made and freed one after the other: by default glibc hands the
    freed memory back and the kernel zeroes its pages again on the next batch's first
    touch (a fault per 4 KB page); once freed memory is kept, the next batch reuses it.
    Elsewhere the call must only run without an error (check=True)."""
    faults = {how: int(subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, how], capture_output=True, text=True,
                                      check=True).stdout)
              for how in ("default", "keep")}
    if platform.libc_ver()[0] == "glibc":
        assert faults["default"] >= 100 * 1000  # up to 5,120 pages per batch
        assert faults["keep"] < 1000

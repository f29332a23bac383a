"""DecisionTrace files (docs/formats.md): the writer's fixed form and the lenient-but-strict reader."""

import gzip
import json

import msgspec
import numpy as np
import pytest

from ami_engine.io.files import InputError
from ami_engine.io.stateset import STATE_FIELDS, StateSet
from ami_engine.io.traces import (
    ABSENT_MEANS,
    REASONS,
    REQUIRED_FIELDS,
    TraceChunk,
    TraceColumns,
    encode_traces,
    iter_trace_chunks,
    read_trace_records,
    read_traces,
    trace_records,
    write_traces,
)

KEY_ORDER = [
    "t", "cus", "cus_raw", "delta_cus", "cus_mean", "raw_action", "final_action", "soft_clamp", "level",
    "confidence", "delta_confidence", "human_escalation", "chaos", "model", "reason", "W", "J", "H", "C",
    "stream", "id", "state", "config_id",
]
SAFE = [0.0, 0.5, 0.0, 1.0]


def decisions(n=6, seed=0, repairs=None):
    """Columns and states of n decisions cycling through levels 0, 1 (clamped), 2."""
    rng = np.random.default_rng(seed)
    level = (np.arange(n) % 3).astype(np.int8)
    raw = rng.integers(0, 5, (n, 4)) / 4
    clamped = level == 1
    final = raw.copy()
    final[clamped] = raw[clamped] * 0.5
    final[level == 2] = SAFE
    delta = rng.normal(0, 0.1, n)
    delta[0] = np.nan
    cols = TraceColumns(
        t=[i if i % 2 else i * 0.5 for i in range(n)],
        cus=rng.random(n), cus_raw=rng.random(n), delta_cus=delta, cus_mean=rng.random(n),
        confidence=rng.random(n), delta_confidence=np.where(clamped, 0.1, np.nan),
        raw_action=raw, final_action=final, soft_clamp=clamped, human_escalation=level == 2, level=level,
        reason=(np.arange(n) % len(REASONS)).astype(np.int8),
        W=rng.random(n), J=rng.random(n), H=rng.random(n), C=rng.random(n),
    )
    states = StateSet(values=rng.random((n, 9)), streams=[["a", 1, None][i % 3] for i in range(n)],
                      t=[None] * n, ids=[f"s{i}" if i % 2 else i for i in range(n)], repairs=repairs)
    return cols, states


def encoded(cols, states, **kw):
    return b"".join(encode_traces(cols, states, config_id="abcdef0123456789", model="ami-v1", chaos=False, **kw))


def required_record(**changes):
    record = {
        "t": 0, "cus": 0.5, "delta_cus": None, "cus_mean": 0.5, "raw_action": [0.25, 0.5, 0.0, 1.0],
        "final_action": [0.25, 0.5, 0.0, 1.0], "soft_clamp": False, "level": 0, "confidence": 0.7,
        "delta_confidence": None, "human_escalation": False, "chaos": False,
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not DROP}


DROP = object()


def write_lines(tmp_path, records, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


# ------------------------------------------------------------------ the writer


def test_every_record_has_the_keys_in_the_fixed_order_compact_one_per_line():
    cols, states = decisions()
    data = encoded(cols, states)
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == 7
    for text in lines[:-1]:
        assert b" " not in text
        record = json.loads(text)
        assert list(record) == KEY_ORDER
        assert list(record["state"]) == list(STATE_FIELDS)


def test_input_repairs_appear_only_on_repaired_records():
    cols, states = decisions(n=3, repairs=[None, {"risk": "clipped"}, {}])
    records = [json.loads(x) for x in encoded(cols, states).splitlines()]
    assert [list(r)[-1] for r in records] == ["config_id", "input_repairs", "config_id"]
    assert records[1]["input_repairs"] == {"risk": "clipped"}


def test_values_written_are_the_columns_exactly():
    cols, states = decisions()
    records = [json.loads(x) for x in encoded(cols, states).splitlines()]
    for i, r in enumerate(records):
        assert r["t"] == cols.t[i] and type(r["t"]) is type(cols.t[i])
        assert r["cus"] == cols.cus[i] and r["cus_raw"] == cols.cus_raw[i]
        assert r["raw_action"] == cols.raw_action[i].tolist()
        assert r["final_action"] == cols.final_action[i].tolist()
        assert r["level"] == int(cols.level[i]) and r["reason"] == REASONS[cols.reason[i]]
        assert r["human_escalation"] is bool(cols.human_escalation[i])
        assert r["state"] == dict(zip(STATE_FIELDS, states.values[i].tolist(), strict=True))
        assert r["stream"] == states.streams[i] and r["id"] == states.ids[i]
        assert r["model"] == "ami-v1" and r["config_id"] == "abcdef0123456789" and r["chaos"] is False


def test_nan_deltas_are_written_as_null():
    cols, states = decisions()
    records = [json.loads(x) for x in encoded(cols, states).splitlines()]
    assert records[0]["delta_cus"] is None and records[1]["delta_cus"] is not None
    assert [r["delta_confidence"] is None for r in records] == [not c for c in cols.soft_clamp.tolist()]


def test_floats_are_written_in_shortest_round_trip_form():
    cols, states = decisions()
    cols.cus[:] = [0.1, 1 / 3, 1e-7, 0.30000000000000004, 1.0, 0.0]
    for text, x in zip(encoded(cols, states).splitlines(), cols.cus.tolist(), strict=True):
        token = text.split(b'"cus":')[1].split(b",")[0]
        assert float(token) == x
        assert len(token) <= len(repr(x))
        assert token == msgspec.json.encode(x)


def test_same_decisions_give_the_same_bytes_in_any_chunking(tmp_path):
    cols, states = decisions(n=50)
    whole = encoded(cols, states)
    assert encoded(cols, states) == whole
    assert encoded(cols, states, chunk_records=7) == whole
    a, b = str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.jsonl.gz")
    for path in (a, b):
        write_traces(path, cols, states, config_id="abcdef0123456789", model="ami-v1", chaos=False)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert gzip.decompress(open(a, "rb").read()) == whole


def test_trace_records_are_what_the_file_holds(tmp_path):
    cols, states = decisions()
    path = str(tmp_path / "t.jsonl")
    write_traces(path, cols, states, config_id="abcdef0123456789", model="ami-v1", chaos=True)
    assert trace_records(cols, states, config_id="abcdef0123456789", model="ami-v1", chaos=True) == \
        read_trace_records(path)


def test_decisions_and_states_must_match_in_number():
    cols, states = decisions(n=4)
    with pytest.raises(ValueError):
        encoded(cols, states.subset(np.arange(3)))


# ------------------------------------------------------------------ the reader


def test_round_trip_gives_back_the_columns(tmp_path):
    cols, states = decisions(n=30)
    path = str(tmp_path / "t.jsonl.gz")
    write_traces(path, cols, states, config_id="abcdef0123456789", model="ami-v1", chaos=False)
    chunk = read_traces(path)
    assert len(chunk) == 30 and chunk.line.tolist() == list(range(1, 31))
    for name in ("cus", "cus_raw", "cus_mean", "confidence", "W", "J", "H", "C"):
        assert np.array_equal(getattr(chunk, name), getattr(cols, name)), name
    for name in ("delta_cus", "delta_confidence"):
        assert np.array_equal(getattr(chunk, name), getattr(cols, name), equal_nan=True), name
    assert np.array_equal(chunk.raw_action, cols.raw_action) and np.array_equal(chunk.final_action, cols.final_action)
    assert np.array_equal(chunk.level, cols.level) and chunk.level.dtype == np.int8
    assert np.array_equal(chunk.soft_clamp, cols.soft_clamp)
    assert np.array_equal(chunk.human_escalation, cols.human_escalation)
    assert not chunk.chaos.any()
    assert chunk.t == cols.t
    assert chunk.reason == [REASONS[c] for c in cols.reason]
    assert np.array_equal(chunk.state, states.values) and chunk.has_state.all()
    assert chunk.stream == states.streams and chunk.id == states.ids
    assert chunk.model == ["ami-v1"] * 30 and chunk.config_id == ["abcdef0123456789"] * 30
    assert chunk.input_repairs is None


def test_foreign_traces_with_only_the_phase_4_7_1_fields_and_extra_fields_are_read(tmp_path):
    records = [
        required_record(uncertainty=0.3, latency_ms=12),
        required_record(t=1.5, delta_cus=0.1, delta_confidence=-0.05, soft_clamp=True, level=1,
                        final_action=[0.125, 0.5, 0.0, 1.0], engine={"name": "other", "v": [1, 2]}),
    ]
    chunk = read_traces(write_lines(tmp_path, records))
    assert len(chunk) == 2
    assert np.isnan(chunk.delta_cus[0]) and chunk.delta_cus[1] == 0.1
    assert np.isnan(chunk.delta_confidence[0]) and chunk.delta_confidence[1] == -0.05
    for name in ("reason", "cus_raw", "W", "J", "H", "C", "stream", "id", "state", "has_state", "config_id",
                 "model", "input_repairs"):
        assert getattr(chunk, name) is None, name
    assert read_trace_records(write_lines(tmp_path, records))[0]["latency_ms"] == 12


def test_optional_fields_on_some_records_only(tmp_path):
    state = dict.fromkeys(STATE_FIELDS, 0.25)
    records = [required_record(state=state, stream="a", W=0.5), required_record(), required_record(stream=None)]
    chunk = read_traces(write_lines(tmp_path, records))
    assert chunk.has_state.tolist() == [True, False, False]
    assert chunk.state[0].tolist() == [0.25] * 9 and np.isnan(chunk.state[1:]).all()
    assert chunk.stream == ["a", None, None]
    assert chunk.W[0] == 0.5 and np.isnan(chunk.W[1:]).all()


@pytest.mark.parametrize("field", [f for f in REQUIRED_FIELDS if f not in ABSENT_MEANS])
def test_each_phase_4_7_1_field_is_required(tmp_path, field):
    path = write_lines(tmp_path, [required_record(), required_record(**{field: DROP})])
    with pytest.raises(InputError) as caught:
        read_traces(path)
    assert (caught.value.line, caught.value.field) == (2, field)
    assert str(caught.value) == f"{path}:2: {field}: missing"


@pytest.mark.parametrize(
    "bad, field",
    [
        ('{"t": 0, "cus": 0.5,', None),  # broken JSON
        ("[1, 2, 3]", None),  # not an object
        (required_record(cus="0.5"), "cus"),
        (required_record(cus=True), "cus"),
        (required_record(cus=1.5), "cus"),
        (required_record(cus_mean=float("nan")), "cus_mean"),
        (required_record(confidence=float("inf")), "confidence"),
        (required_record(delta_cus="none"), "delta_cus"),
        (required_record(t=None), "t"),
        (required_record(level=3), "level"),
        (required_record(level=1.0), "level"),
        (required_record(level=True), "level"),
        (required_record(soft_clamp="yes"), "soft_clamp"),
        (required_record(chaos=0), "chaos"),
        (required_record(raw_action=[0.0, 0.5, 1.0]), "raw_action"),
        (required_record(final_action=[0.0, 0.5, 1.0, 1.0, 0.0]), "final_action"),
        (required_record(final_action=[0.0, "0.5", 1.0, 1.0]), "final_action[1]"),
        (required_record(raw_action=[0.0, float("nan"), 1.0, 1.0]), "raw_action[1]"),
        (required_record(reason=3), "reason"),
        (required_record(stream=1.5), "stream"),
        (required_record(state={"physical": 0.5}), "state.social"),
        (required_record(state=dict.fromkeys(STATE_FIELDS, 2.0)), "state.physical"),
        (required_record(input_repairs={"risk": "guessed"}), "input_repairs"),
    ],
)
def test_bad_record_is_an_input_error_naming_line_and_field(tmp_path, bad, field):
    path = write_lines(tmp_path, [required_record(), "", bad, required_record()])
    with pytest.raises(InputError) as caught:
        read_traces(path)
    assert (caught.value.line, caught.value.field) == (3, field)
    assert str(caught.value).startswith(f"{path}:3: " + (f"{field}: " if field else ""))


def test_chunks_are_bounded_and_line_numbers_run_on_across_blocks(tmp_path):
    records = [required_record(t=i) for i in range(40)]
    records.insert(10, "")
    path = write_lines(tmp_path, records)
    chunks = list(iter_trace_chunks(path, chunk_lines=4, block_bytes=700))
    assert all(len(c) <= 4 for c in chunks) and len(chunks) > 10
    joined = TraceChunk.concat(chunks)
    assert joined.t == list(range(40))
    assert joined.line.tolist() == list(range(1, 11)) + list(range(12, 42))


def test_a_bad_record_deep_in_the_file_is_found_with_small_blocks(tmp_path):
    records = [required_record(t=i) for i in range(40)]
    records[33] = required_record(level=7)
    path = write_lines(tmp_path, records)
    with pytest.raises(InputError) as caught:
        for _ in iter_trace_chunks(path, block_bytes=500):
            pass
    assert (caught.value.line, caught.value.field) == (34, "level")


def test_empty_traces_file(tmp_path):
    path = write_lines(tmp_path, [])
    assert list(iter_trace_chunks(path)) == []
    with pytest.raises(InputError, match="no traces"):
        read_traces(path)


def test_concat_fills_optional_columns_missing_from_some_chunks(tmp_path):
    a = read_traces(write_lines(tmp_path, [required_record(W=0.5, reason="drift")], "a.jsonl"))
    b = read_traces(write_lines(tmp_path, [required_record()], "b.jsonl"))
    joined = TraceChunk.concat([a, b])
    assert joined.W[0] == 0.5 and np.isnan(joined.W[1])
    assert joined.reason == ["drift", None]
    assert joined.state is None


def test_crlf_line_ends_and_a_last_line_without_newline_are_read(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\r\n".join(json.dumps(required_record(t=i)).encode() for i in range(3)))
    assert read_traces(str(path)).t == [0, 1, 2]

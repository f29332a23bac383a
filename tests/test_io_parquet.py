"""States and DecisionTraces as Parquet (docs/formats.md, Parquet): the same records, the same
checks and the same metrics as JSONL, and `convert` between the two."""

import dataclasses
import gzip
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ami_engine import ENGINE_MODEL
from ami_engine.cli import app
from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.io import parquet
from ami_engine.io.files import InputError
from ami_engine.io.states import read_states, write_states
from ami_engine.io.stateset import STATE_FIELDS
from ami_engine.io.traces import iter_trace_chunks, read_trace_records, read_trace_states, write_traces
from ami_engine.learning.data import data_from_traces_file
from ami_engine.learning.feedback_metrics import METRIC_COLUMNS, metrics_from_traces
from ami_engine.scenario import generate

BASE = load_config("base")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """The same chaos decisions as JSONL and as Parquet, written by `run`."""
    folder = tmp_path_factory.mktemp("traces")
    states = generate("chaos", 3000, 5, streams=6)
    cols = run(states, BASE)
    paths = {}
    for name in ("t.jsonl", "t.parquet"):
        paths[name] = folder / name
        write_traces(paths[name], cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    return paths


def test_run_writes_parquet_with_the_decision_trace_columns(tmp_path):
    out = tmp_path / "t.parquet"
    assert invoke("run", "--scenario", "balanced", "--n", 50, "--out", out).exit_code == 0
    schema = pq.read_schema(out)
    assert schema.names == list(parquet.TRACE_COLUMNS[:-1])  # no input repairs asked for
    assert schema.field("state").type == pa.struct([pa.field(f, pa.float64(), nullable=False)
                                                    for f in STATE_FIELDS])
    assert schema.field("raw_action").type == pa.list_(pa.float64(), 4)
    assert schema.field("final_action").type == pa.list_(pa.float64(), 4)
    assert not schema.field("cus").nullable and not schema.field("level").nullable
    assert schema.field("delta_cus").nullable and schema.field("delta_confidence").nullable
    records = read_trace_records(out)
    assert len(records) == 50 and set(records[0]["state"]) == set(STATE_FIELDS)


def test_jsonl_and_parquet_convert_both_ways_to_the_same_bytes(traces, tmp_path):
    back, gz, converted = tmp_path / "back.jsonl", tmp_path / "back.jsonl.gz", tmp_path / "c.parquet"
    assert invoke("convert", traces["t.jsonl"], converted).exit_code == 0
    assert converted.read_bytes() == traces["t.parquet"].read_bytes()  # as `run --out X.parquet` writes it
    assert invoke("convert", traces["t.parquet"], back).exit_code == 0
    assert back.read_bytes() == traces["t.jsonl"].read_bytes()
    assert invoke("convert", traces["t.parquet"], gz).exit_code == 0
    assert gzip.decompress(gz.read_bytes()) == traces["t.jsonl"].read_bytes()
    again = tmp_path / "again.parquet"
    assert invoke("convert", gz, again).exit_code == 0
    assert again.read_bytes() == traces["t.parquet"].read_bytes()


def test_metrics_on_parquet_equal_metrics_on_jsonl_to_the_bit(traces, tmp_path):
    jsonl = invoke("metrics", traces["t.jsonl"], "--json")
    table = invoke("metrics", traces["t.parquet"], "--json")
    assert jsonl.exit_code == 0 and table.exit_code == 0
    assert table.output == jsonl.output
    # whatever the blocks of the JSONL file and the batches of the Parquet file
    split_up = metrics_from_traces(traces["t.jsonl"], workers=2, block_bytes=8192)
    assert split_up == metrics_from_traces(traces["t.parquet"])
    small = list(parquet.iter_trace_blocks(traces["t.parquet"], METRIC_COLUMNS, batch_rows=700))
    assert len(small) == 5


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_read_only_the_columns_they_need(traces, monkeypatch, workers):
    read = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in original(self, *args, **kwargs):
            read.append(set(batch.schema.names))
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert metrics_from_traces(traces["t.parquet"], workers=workers) == metrics_from_traces(traces["t.jsonl"])
    assert read and all(names == set(METRIC_COLUMNS) for names in read)


def test_a_folder_of_hive_partitions_reads_as_one_data_set_in_path_order(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"])
    folder = tmp_path / "by_day"
    for day, part in (("2026-11-29", table.slice(1000)), ("2026-11-28", table.slice(0, 1000))):
        (folder / f"day={day}").mkdir(parents=True)
        pq.write_table(part, folder / f"day={day}" / "part-0.parquet")
    result = invoke("metrics", folder, "--json")
    assert result.output == invoke("metrics", traces["t.jsonl"], "--json").output
    assert read_trace_records(folder) == read_trace_records(traces["t.jsonl"])
    a, b = read_trace_states(folder).states, read_trace_states(traces["t.jsonl"]).states
    assert np.array_equal(a.values, b.values) and a.streams == b.streams and a.t == b.t


def test_check_finds_the_same_violations_in_either_form(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"])
    human = table.column("human_escalation").to_pylist()
    human[41] = not human[41]
    broken = table.set_column(table.schema.get_field_index("human_escalation"), "human_escalation",
                              pa.array(human))
    pq.write_table(broken, tmp_path / "b.parquet")
    assert invoke("convert", tmp_path / "b.parquet", tmp_path / "b.jsonl").exit_code == 0
    a = invoke("check", tmp_path / "b.parquet", "--json")
    b = invoke("check", tmp_path / "b.jsonl", "--json")
    assert a.exit_code == 1 and b.exit_code == 1
    assert json.loads(a.output)["violations"] == json.loads(b.output)["violations"]
    assert json.loads(a.output)["violations"][0]["line"] == 42


def _with_column(table, name, values, kind=None):
    index = table.schema.get_field_index(name)
    array = pa.array(values, type=kind) if kind is not None or not isinstance(values, pa.Array) else values
    return table.set_column(index, pa.field(name, array.type), array)


def _broken(table, name, row, value, kind=None):
    values = table.column(name).to_pylist()
    values[row] = value
    return _with_column(table, name, values, kind or table.schema.field(name).type)


BAD_VALUES = [
    ("cus", lambda t: _broken(t, "cus", 7, float("nan"), pa.float64()), 8, "not a finite number"),
    ("cus", lambda t: _broken(t, "cus", 7, 1.5, pa.float64()), 8, "outside [0, 1]"),
    ("cus", lambda t: _broken(t, "cus", 7, None, pa.float64()), 8, "missing (null)"),
    ("level", lambda t: _broken(t, "level", 9, 3), 10, "not one of the allowed values"),
    ("soft_clamp", lambda t: _broken(t, "soft_clamp", 3, None), 4, "missing (null)"),
    ("raw_action", lambda t: _broken(t, "raw_action", 5, [0.0, 1.0, 0.5], pa.list_(pa.float64())), 6,
     "expected 4 numbers"),
    ("final_action", lambda t: _broken(t, "final_action", 5, [0.0, 1.0, float("inf"), 0.5]), 6,
     "not a finite number"),
    ("cus_mean", lambda t: _with_column(t, "cus_mean", pc.cast(t.column("cus_mean"), pa.string())), 1,
     "expected numbers"),
    ("state.risk", lambda t: _broken(t, "state", 11, {**t.column("state")[11].as_py(), "risk": 2.0}), 12,
     "outside [0, 1]"),
]


@pytest.mark.parametrize("column, breaks, row, problem", BAD_VALUES,
                         ids=[f"{c}-{p}" for c, _, _, p in BAD_VALUES])
def test_a_bad_value_names_the_file_the_row_and_the_column(traces, tmp_path, column, breaks, row, problem):
    bad = tmp_path / "bad.parquet"
    table = pq.read_table(traces["t.parquet"]).slice(0, 20)
    if column.startswith("state"):
        state_type = pa.struct([pa.field(f, pa.float64()) for f in STATE_FIELDS])
        table = _with_column(table, "state", table.column("state").to_pylist(), state_type)
    pq.write_table(breaks(table), bad)
    commands = [("convert", bad, tmp_path / "out.jsonl")]
    if column != "level":  # `check` reports a level outside 0-2 as a broken invariant, as for JSONL
        commands.append(("check", bad))
    for args in commands:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert f"bad.parquet row {row}: {column}: {problem}" in result.output
    assert not (tmp_path / "out.jsonl").exists()
    if column in METRIC_COLUMNS:
        assert invoke("metrics", bad).exit_code == 2


def test_a_missing_required_column_is_refused_even_when_not_read(traces, tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pq.read_table(traces["t.parquet"]).drop_columns(["delta_confidence"]), bad)
    result = invoke("metrics", bad)
    assert result.exit_code == 2 and "bad.parquet: delta_confidence: missing column" in result.output


def test_null_confidence_and_no_chaos_column_are_read(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"]).slice(0, 10).drop_columns(["chaos"])
    table = _broken(table, "confidence", 2, None, pa.float64())
    pq.write_table(table, tmp_path / "t.parquet")
    assert invoke("metrics", tmp_path / "t.parquet").exit_code == 0
    assert invoke("convert", tmp_path / "t.parquet", tmp_path / "t.jsonl").exit_code == 0
    record = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[2])
    assert record["confidence"] is None and record["chaos"] is False


def test_a_later_chunk_with_more_columns_or_float_times_widens_the_file(tmp_path):
    states = generate("balanced", 40, 2, streams=2)
    cols = run(states, BASE)
    source = tmp_path / "t.jsonl"
    write_traces(source, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    records = [json.loads(line) for line in source.read_text().splitlines()]
    for r in records[:20]:
        del r["state"], r["W"], r["stream"]
    for r in records[30:]:
        r["t"] = r["t"] + 0.5
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "t.parquet"
    parquet.write_trace_chunks(out, lambda: iter_trace_chunks(source, chunk_lines=10))
    assert pq.read_schema(out).field("t").type == pa.float64()
    got = read_trace_records(out)
    for a, b in zip(got, records, strict=True):
        b.setdefault("stream", None)
        assert a == b


def test_states_read_alike_from_parquet_and_run_to_the_same_traces(tmp_path):
    states = generate("curriculum", 400, 3, streams=3)
    write_states(tmp_path / "s.jsonl", states)
    assert invoke("convert", tmp_path / "s.jsonl", tmp_path / "s.parquet").exit_code == 0
    a, b = read_states(tmp_path / "s.parquet"), read_states(tmp_path / "s.jsonl")
    assert np.array_equal(a.values, b.values) and (a.streams, a.t, a.ids) == (b.streams, b.t, b.ids)
    for name in ("s.jsonl", "s.parquet"):
        assert invoke("run", "--states", tmp_path / name, "--out", tmp_path / f"{name}.out.jsonl").exit_code == 0
    assert (tmp_path / "s.jsonl.out.jsonl").read_bytes() == (tmp_path / "s.parquet.out.jsonl").read_bytes()
    assert invoke("convert", tmp_path / "s.parquet", tmp_path / "back.jsonl").exit_code == 0
    assert (tmp_path / "back.jsonl").read_bytes() == (tmp_path / "s.jsonl").read_bytes()


def test_states_parquet_is_checked_like_states_jsonl(tmp_path):
    table = pa.table({f: [0.5, 0.5, 0.5] for f in STATE_FIELDS})
    risk = table.schema.get_field_index("risk")
    pq.write_table(table.set_column(risk, "risk", pa.array([0.5, 0.5, 1.5])), tmp_path / "range.parquet")
    with pytest.raises(InputError, match=r"range.parquet row 3: risk: outside \[0, 1\] \(1.5\)"):
        read_states(tmp_path / "range.parquet")
    pq.write_table(table.append_column("mood", pa.array([1, 2, 3])), tmp_path / "extra.parquet")
    with pytest.raises(InputError, match="extra.parquet: mood: unknown field"):
        read_states(tmp_path / "extra.parquet")
    pq.write_table(table.set_column(risk, "risk", pa.array([0.5, None, 0.5])), tmp_path / "gap.parquet")
    with pytest.raises(InputError, match="gap.parquet row 2: risk: missing"):
        read_states(tmp_path / "gap.parquet")
    filled = read_states(tmp_path / "gap.parquet", fill_missing=True)
    assert filled.values[1, risk] == 0.5 and filled.repairs == [None, {"risk": "filled"}, None]


def test_mixed_stream_types_cannot_go_into_one_parquet_column(tmp_path):
    states = generate("safe", 4, 1, streams=1)
    cols = run(states, BASE)
    source = tmp_path / "t.jsonl"
    write_traces(source, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    records = [json.loads(line) for line in source.read_text().splitlines()]
    records[0]["stream"], records[1]["stream"] = "a", 7
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = invoke("convert", source, tmp_path / "t.parquet")
    assert result.exit_code == 2 and "t.jsonl:2: stream: mixes strings and integers" in result.output
    assert not (tmp_path / "t.parquet").exists()


def test_explain_picks_a_parquet_row_as_it_picks_a_jsonl_line(tmp_path):
    states = generate("balanced", 30, 1, streams=2)
    write_states(tmp_path / "s.jsonl", states)
    write_states(tmp_path / "s.parquet", states)
    a = invoke("explain", "--states", tmp_path / "s.jsonl", "--line", 17, "--json")
    b = invoke("explain", "--states", tmp_path / "s.parquet", "--line", 17, "--json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    picked_a, picked_b = json.loads(a.output), json.loads(b.output)
    assert picked_b["picked"]["file"].endswith("s.parquet") and picked_b["picked"]["line"] == 17
    for doc in (picked_a, picked_b):
        doc.pop("picked")
    assert picked_a == picked_b
    assert invoke("explain", "--states", tmp_path / "s.parquet", "--line", 31).exit_code == 2


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_metrics_over_row_group_ranges_name_the_first_bad_row_in_file_order(traces, tmp_path, workers):
    """Ranges of row groups are read side by side; a bad value is still reported as a
    reading in order reports it: the first one in the file."""
    table = pq.read_table(traces["t.parquet"])
    cus = table.column("cus").to_numpy().copy()
    cus[[1234, 2500]] = 1.5
    bad = table.set_column(table.schema.get_field_index("cus"), "cus", pa.array(cus))
    path = tmp_path / "bad.parquet"
    pq.write_table(bad, path, row_group_size=200)
    assert pq.ParquetFile(path).metadata.num_row_groups == 15
    with pytest.raises(InputError, match=r"bad.parquet row 1235: cus: outside \[0, 1\]"):
        metrics_from_traces(path, workers=workers)
    good = tmp_path / "good.parquet"
    pq.write_table(table, good, row_group_size=200)
    assert metrics_from_traces(good, workers=workers) == metrics_from_traces(traces["t.jsonl"])


@pytest.mark.parametrize("kind", ["fixed", "variable"])
def test_an_action_column_is_read_from_where_its_slice_starts(kind):
    """A batch's action column may be a slice of a longer array (its values do not start
    at 0): each row gets its own four numbers, fixed-size lists and lists alike."""
    rows = [[0.1 * i, 0.2, 0.3, 0.4] for i in range(6)]
    full = pa.array(rows, type=pa.list_(pa.float64(), 4) if kind == "fixed" else pa.list_(pa.float64()))
    sliced = full.slice(2, 3)
    batch = parquet._Batch(pa.RecordBatch.from_arrays([sliced], names=["raw_action"]), "x.parquet", 0)
    got = parquet._action(batch, batch.batch.column(0), "raw_action")
    batch.raise_first()
    assert np.array_equal(got, np.array(rows[2:5]))


# ------------------------------------------------------------- integers beyond float64 and int64

NS = 1_733_500_000_000_000_000  # epoch nanoseconds: beyond 2**53, where float64 rounds


def _states_lines(n, **extra):
    states = generate("balanced", n, 4, streams=2)
    return [json.dumps({**dict(zip(STATE_FIELDS, row, strict=True)), "t": NS + i, **extra}) + "\n"
            for i, row in enumerate(states.values.tolist())]


def test_an_integer_t_beyond_2_53_is_read_and_written_exactly(tmp_path):
    (tmp_path / "s.jsonl").write_text("".join(_states_lines(40)))
    for out in ("t.jsonl", "t.parquet"):
        result = invoke("run", "--states", tmp_path / "s.jsonl", "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
    assert invoke("check", tmp_path / "t.parquet").exit_code == 0
    assert invoke("convert", tmp_path / "t.parquet", tmp_path / "back.jsonl").exit_code == 0
    assert (tmp_path / "back.jsonl").read_bytes() == (tmp_path / "t.jsonl").read_bytes()
    assert [r["t"] for r in read_trace_records(tmp_path / "t.parquet")] == [NS + i for i in range(40)]
    assert read_trace_states(tmp_path / "t.parquet").states.t == [NS + i for i in range(40)]
    # replayed, explained and decided again from Parquet, the times stay exact
    replayed = data_from_traces_file(str(tmp_path / "t.parquet"))
    assert replayed.subset(np.array([0, 39])).t == [NS, NS + 39]
    a = invoke("explain", "--states", tmp_path / "t.jsonl", "--line", 7, "--json")
    b = invoke("explain", "--states", tmp_path / "t.parquet", "--line", 7, "--json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert invoke("convert", tmp_path / "s.jsonl", tmp_path / "s.parquet").exit_code == 0
    assert invoke("run", "--states", tmp_path / "s.parquet", "--out", tmp_path / "again.parquet").exit_code == 0
    assert (tmp_path / "again.parquet").read_bytes() == (tmp_path / "t.parquet").read_bytes()


def test_a_uint64_t_column_is_read_exactly(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"]).slice(0, 6)
    big = [2**64 - 6 + i for i in range(6)]
    pq.write_table(_with_column(table, "t", big, pa.uint64()), tmp_path / "u.parquet")
    assert [r["t"] for r in read_trace_records(tmp_path / "u.parquet")] == big
    assert invoke("check", tmp_path / "u.parquet").exit_code == 0
    assert invoke("convert", tmp_path / "u.parquet", tmp_path / "u.jsonl").exit_code == 0
    assert [json.loads(line)["t"] for line in (tmp_path / "u.jsonl").read_text().splitlines()] == big
    states = pa.table({**{f: [0.5] * 3 for f in STATE_FIELDS}, "t": pa.array(big[:3], pa.uint64())})
    pq.write_table(states, tmp_path / "s.parquet")
    assert read_states(tmp_path / "s.parquet").t == big[:3]


BEYOND_64 = [("t", 2**63), ("t", -(2**63) - 1), ("id", 2**63), ("stream", 2**64), ("t", 10**400)]
BEYOND_64_IDS = ["t=2**63", "t=-2**63-1", "id=2**63", "stream=2**64", "t=10**400"]


@pytest.mark.parametrize("field, value", BEYOND_64, ids=BEYOND_64_IDS)
def test_an_integer_beyond_64_bits_is_refused_at_its_line_when_written_to_parquet(tmp_path, field, value):
    problem = "an integer beyond 64 bits cannot be written to Parquet; write JSONL"
    lines = _states_lines(6, stream=1, id=2)
    record = json.loads(lines[3])
    record[field] = value
    lines[3] = json.dumps(record) + "\n"
    (tmp_path / "s.jsonl").write_text("".join(lines[:2]) + "\n" + "".join(lines[2:]))  # line 5: the fourth state
    assert invoke("run", "--states", tmp_path / "s.jsonl", "--out", tmp_path / "t.jsonl").exit_code == 0
    for args in (("run", "--states", tmp_path / "s.jsonl", "--out", tmp_path / "x.parquet"),
                 ("convert", tmp_path / "s.jsonl", tmp_path / "x.parquet"),
                 ("convert", tmp_path / "t.jsonl", tmp_path / "x.parquet")):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        name, line = ("t.jsonl", 4) if args[1] == tmp_path / "t.jsonl" else ("s.jsonl", 5)
        assert f"{name}:{line}: {field}: {problem}" in result.output, result.output
        assert not (tmp_path / "x.parquet").exists()
    # JSONL keeps it exactly
    assert json.loads((tmp_path / "t.jsonl").read_text().splitlines()[3])[field] == value


def test_states_in_memory_beyond_64_bits_name_the_state(tmp_path):
    states = generate("safe", 3, 1, streams=1)
    states = dataclasses.replace(states, t=[1, 2**63, 3])
    with pytest.raises(InputError, match=r"state 1: t: an integer beyond 64 bits cannot be written to Parquet"):
        write_states(tmp_path / "s.parquet", states)
    assert not (tmp_path / "s.parquet").exists()


def test_a_uint64_states_column_beyond_int64_is_refused_when_written_to_parquet(tmp_path):
    states = pa.table({**{f: [0.5] * 3 for f in STATE_FIELDS}, "id": pa.array([1, 2, 2**63], pa.uint64())})
    pq.write_table(states, tmp_path / "s.parquet")
    result = invoke("run", "--states", tmp_path / "s.parquet", "--out", tmp_path / "t.parquet")
    assert result.exit_code == 2 and "s.parquet row 3: id: an integer beyond 64 bits" in result.output
    assert invoke("run", "--states", tmp_path / "s.parquet", "--out", tmp_path / "t.jsonl").exit_code == 0


# ----------------------------------------------------------------- the same checks in either form


def test_metrics_count_null_confidence_and_check_t_alike_in_either_form(traces, tmp_path):
    records = [json.loads(line) for line in traces["t.jsonl"].read_text().splitlines()]
    records[5]["confidence"] = None
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert invoke("convert", tmp_path / "n.jsonl", tmp_path / "n.parquet").exit_code == 0
    jsonl = invoke("metrics", tmp_path / "n.jsonl", "--json")
    table = invoke("metrics", tmp_path / "n.parquet", "--json")
    assert json.loads(jsonl.output)["null_confidence"] == 1
    assert table.output == jsonl.output
    records[5]["t"] = "noon"
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    table = pq.read_table(traces["t.parquet"])
    pq.write_table(_with_column(table, "t", pc.cast(table.column("t"), pa.string())), tmp_path / "b.parquet")
    for name in ("b.jsonl", "b.parquet"):
        result = invoke("metrics", tmp_path / name)
        assert result.exit_code == 2 and ": t: " in result.output, result.output


# Each breaks row 7 (a whole column of the wrong type is reported at its first row).
LEARN_REFUSES = [
    ("level", lambda t: _broken(t, "level", 6, 7), 7, "not one of the allowed values"),
    ("cus", lambda t: _broken(t, "cus", 6, float("nan"), pa.float64()), 7, "not a finite number"),
    ("delta_confidence", lambda t: _broken(t, "delta_confidence", 6, float("inf"), pa.float64()), 7,
     "not a finite number"),
    ("reason", lambda t: _with_column(t, "reason", pa.array(range(len(t)))), 1, "expected strings"),
    ("input_repairs", lambda t: t.append_column(
        "input_repairs", pa.array([None] * 6 + [[("risk", "guessed")]] + [None] * (len(t) - 7),
                                  pa.map_(pa.string(), pa.string()))), 7, "not one of the allowed values"),
]


@pytest.mark.parametrize("column, breaks, row, problem", LEARN_REFUSES, ids=[c for c, *_ in LEARN_REFUSES])
def test_replayed_parquet_traces_are_checked_in_every_column_like_jsonl(traces, tmp_path, column, breaks, row,
                                                                       problem):
    table = pq.read_table(traces["t.parquet"]).slice(0, 20)
    pq.write_table(breaks(table), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=rf"bad.parquet row {row}: {column}: {re.escape(problem)}"):
        data_from_traces_file(str(tmp_path / "bad.parquet"))
    assert invoke("convert", tmp_path / "bad.parquet", tmp_path / "bad.jsonl").exit_code == 2
    records = [json.loads(line) for line in traces["t.jsonl"].read_text().splitlines()[:20]]
    records[6][column] = {"level": 7, "cus": float("nan"), "delta_confidence": float("inf"), "reason": 6,
                          "input_repairs": {"risk": "guessed"}}[column]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=rf"bad.jsonl:7: {column}"):
        data_from_traces_file(str(tmp_path / "bad.jsonl"))


def test_repairs_are_checked_where_a_batch_starts_inside_the_column(tmp_path):
    """A batch's input_repairs column may be a slice of a longer array: a bad value is
    reported at its own row."""
    rows = [None, [("risk", "filled")], None, [("risk", "clipped"), ("social", "wrong")], None]
    full = pa.array(rows, type=pa.map_(pa.string(), pa.string()))
    batch = parquet._Batch(pa.RecordBatch.from_arrays([full.slice(1, 4)], names=["input_repairs"]), "x.parquet", 0)
    got = parquet._repairs(batch, batch.batch.column(0))
    assert got == [{"risk": "filled"}, None, {"risk": "clipped", "social": "wrong"}, None]
    with pytest.raises(InputError, match=r"x.parquet row 3: input_repairs: not one of the allowed values"):
        batch.raise_first()


# ------------------------------------------------------------------------------- page checksums


def _zeroed_inside(path, column, target):
    """A copy of `path` with 200 bytes zeroed in the middle of `column`'s first column chunk."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = meta.column([meta.column(i).path_in_schema for i in range(meta.num_columns)].index(column))
    data = bytearray(path.read_bytes())
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    data[middle:middle + 200] = bytes(200)
    target.write_bytes(bytes(data))
    return target


def test_a_damaged_page_is_an_error_naming_the_file(traces, tmp_path):
    bad = _zeroed_inside(traces["t.parquet"], "cus", tmp_path / "bad.parquet")
    for args in (("metrics", bad), ("check", bad), ("convert", bad, tmp_path / "out.jsonl"),
                 ("learn", "--traces", bad, "--out", tmp_path / "s.toml")):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "bad.parquet: not a readable Parquet file: " in result.output and "checksum" in result.output
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "s.toml").exists()
    # a file of another writer, without checksums, is read as it is
    pq.write_table(pq.read_table(traces["t.parquet"]), tmp_path / "plain.parquet")
    assert metrics_from_traces(tmp_path / "plain.parquet") == metrics_from_traces(traces["t.jsonl"])


# ----------------------------------------------------------------------------- folders of files


def test_numeric_partitions_are_read_in_the_order_of_their_values(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"])
    folder = tmp_path / "by_hour"
    edges = [0, 400, 800, 1200, 1600, 3000]
    for (a, b), hour in zip(zip(edges, edges[1:]), ("2", "9", "10", "10.5", "11"), strict=True):
        (folder / f"hour={hour}").mkdir(parents=True)
        pq.write_table(table.slice(a, b - a), folder / f"hour={hour}" / "part-0.parquet")
    assert [p.split("/")[-2] for p in parquet.parquet_files(folder)] == [
        "hour=2", "hour=9", "hour=10", "hour=10.5", "hour=11"]
    assert read_trace_records(folder) == read_trace_records(traces["t.jsonl"])
    assert invoke("metrics", folder, "--json").output == invoke("metrics", traces["t.jsonl"], "--json").output


def test_a_linked_partition_folder_is_read_and_a_folder_reached_twice_is_refused(traces, tmp_path):
    table = pq.read_table(traces["t.parquet"])
    folder, elsewhere = tmp_path / "by_day", tmp_path / "elsewhere"
    (folder / "day=1").mkdir(parents=True)
    elsewhere.mkdir()
    pq.write_table(table.slice(0, 1000), folder / "day=1" / "part-0.parquet")
    pq.write_table(table.slice(1000), elsewhere / "part-0.parquet")
    (folder / "day=2").symlink_to(elsewhere, target_is_directory=True)
    assert read_trace_records(folder) == read_trace_records(traces["t.jsonl"])
    (folder / "day=2" / "again").symlink_to(folder, target_is_directory=True)
    result = invoke("metrics", folder)
    assert result.exit_code == 2
    assert f"by_day: the folder {folder}/day=2/again is {folder} again (through a link)" in result.output

"""One trace schema: the writer, the JSONL and Parquet readers and the required fields all
follow io/_trace_schema.TRACE_SCHEMA, and the bytes written are those of the format."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.errors import InputError
from ami_engine.io import parquet
from ami_engine.io._trace_schema import ABSENT_MEANS, FIELD_NAMES, REQUIRED_FIELDS, TRACE_SCHEMA, arrow_nullable
from ami_engine.io.states import states_from_records
from ami_engine.io.traces import TraceChunk, encode_traces, read_traces, write_traces
from ami_engine.scenario import generate

# SHA-256 of the JSONL traces of 400 curriculum states (seed 7, 4 streams) under each
# profile, and of 400 chaos states under base marked as a chaos test: any change of a
# field, its order or its number formatting changes them.
TRACE_HASHES = {
    "base": "6eb08cf1b7282ac6592900a878c965977a0e2355907eb7fcb13d053c9bb1f393",
    "production_safe": "603b8cb5e11ab61a8883253f4837ec3ad804f0093427f850eea876e94878e3b0",
    "high_critical": "c032cbd0c8b083dd27fbcf45d2fed0153d43c342f61da5a358295bc7987bfeab",
    "chaos_tuning": "caaa4f15b71433ff7149ab2c497be215935d414792003cbbc5867d0137349ec2",
    "chaos": "2ba30ce5807e01c707749a56a1d7b887b12abc9eca1405e2262c30030aefa016",
}


def _traces(profile: str, scenario: str = "curriculum", chaos: bool = False) -> bytes:
    cfg = load_config(profile)
    states = generate(scenario, 400, 7, 4)
    cols = run(states, cfg)
    return b"".join(encode_traces(cols, states, config_id=cfg.config_id, model="ami-v1", chaos=chaos))


@pytest.mark.parametrize("name", sorted(TRACE_HASHES))
def test_traces_keep_their_bytes(name):
    data = _traces("base", "chaos", chaos=True) if name == "chaos" else _traces(name)
    assert hashlib.sha256(data).hexdigest() == TRACE_HASHES[name]


@pytest.fixture(scope="module")
def record_line() -> bytes:
    states = states_from_records([{"physical": 0.5, "social": 0.3, "context": 0.7, "risk": 1.2, "compassion": 0.1,
                                   "justice": 0.8, "harm_sens": 0.4, "responsibility": 0.2, "id": "a"}],
                                 fill_missing=True, clip=True)
    cfg = load_config("base")
    return b"".join(encode_traces(run(states, cfg), states, config_id=cfg.config_id, model="ami-v1", chaos=False))


def test_writer_keys_follow_the_schema_order(record_line):
    assert tuple(json.loads(record_line)) == FIELD_NAMES


def test_required_fields_are_the_phase_4_7_1_fields():
    assert REQUIRED_FIELDS == ("t", "cus", "delta_cus", "cus_mean", "raw_action", "final_action", "soft_clamp",
                               "level", "confidence", "delta_confidence", "human_escalation", "chaos")
    assert ABSENT_MEANS == {"chaos": False}


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_a_record_without_a_field_is_refused_exactly_when_the_field_is_required(tmp_path, record_line, field):
    record = json.loads(record_line)
    del record[field]
    path = tmp_path / "traces.jsonl"
    path.write_text(json.dumps(record) + "\n")
    spec = next(f for f in TRACE_SCHEMA if f.name == field)
    if spec.may_be_absent:
        chunk = read_traces(str(path))
        if field in ABSENT_MEANS:
            assert getattr(chunk, field).tolist() == [ABSENT_MEANS[field]]
    else:
        with pytest.raises(InputError, match=rf"traces.jsonl:1: {field}: missing"):
            read_traces(str(path))


def test_the_column_reader_has_a_column_for_every_field():
    columns = {f.name for f in dataclasses.fields(TraceChunk)}
    assert set(FIELD_NAMES) <= columns


def test_parquet_columns_and_nullability_follow_the_schema(tmp_path, record_line):
    source = tmp_path / "traces.jsonl"
    source.write_bytes(record_line)
    chunk = read_traces(str(source))
    target = tmp_path / "traces.parquet"
    parquet.write_trace_chunks(target, lambda: [chunk])
    schema = parquet.file_schema(target)
    assert tuple(schema.names) == FIELD_NAMES
    for spec in TRACE_SCHEMA:
        assert schema.field(spec.name).nullable == arrow_nullable(spec), spec.name
    # and back: the same record, the same bytes
    again = tmp_path / "again.jsonl"
    from ami_engine.io.convert import convert

    convert(str(target), str(again))
    assert again.read_bytes() == record_line


def test_parquet_and_jsonl_writers_give_the_same_records(tmp_path):
    cfg = load_config("high_critical")
    states = generate("curriculum", 200, 2, 3)
    cols = run(states, cfg)
    write_traces(tmp_path / "t.jsonl", cols, states, config_id=cfg.config_id, model="ami-v1", chaos=False)
    write_traces(tmp_path / "t.parquet", cols, states, config_id=cfg.config_id, model="ami-v1", chaos=False)
    from ami_engine.io.convert import convert

    convert(str(tmp_path / "t.parquet"), str(tmp_path / "back.jsonl"))
    assert (tmp_path / "back.jsonl").read_bytes() == (tmp_path / "t.jsonl").read_bytes()


def test_a_parquet_file_without_a_required_column_names_it(tmp_path, record_line):
    import pyarrow.parquet as pq

    source = tmp_path / "traces.jsonl"
    source.write_bytes(record_line)
    target = tmp_path / "traces.parquet"
    parquet.write_trace_chunks(target, lambda: [read_traces(str(source))])
    table = pq.read_table(target)
    for spec in TRACE_SCHEMA:
        cut = tmp_path / f"without_{spec.name}.parquet"
        pq.write_table(table.drop([spec.name]), cut)
        if spec.may_be_absent:
            read_traces(str(cut))
        else:
            with pytest.raises(InputError, match=rf"{spec.name}: missing column"):
                read_traces(str(cut))


def test_input_repairs_may_say_dropped_in_either_form(tmp_path, record_line):
    record = json.loads(record_line)
    record["input_repairs"] = {"severity": "dropped"}
    source = tmp_path / "traces.jsonl"
    source.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    target = tmp_path / "traces.parquet"
    parquet.write_trace_chunks(target, lambda: [read_traces(str(source))])
    assert read_traces(str(target)).input_repairs == [{"severity": "dropped"}]

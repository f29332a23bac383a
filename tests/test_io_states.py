"""The strict states reader and writer (docs/engine.md §1, docs/formats.md "States")."""

import gzip
import io
import json
import sys

import numpy as np
import pytest

from ami_engine.io.files import InputError, atomic_output, open_text_lines
from ami_engine.io.states import read_states, states_from_records, write_states
from ami_engine.io.stateset import STATE_FIELDS, StateSet

GOOD = dict.fromkeys(STATE_FIELDS, 0.5)
DROP = object()  # a field to leave out


def line(**changes):
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not DROP})


def write(tmp_path, *lines, name="s.jsonl"):
    path = tmp_path / name
    path.write_text("".join(f"{text}\n" for text in lines))
    return str(path)


def error_of(path, **options):
    with pytest.raises(InputError) as caught:
        read_states(path, **options)
    return caught.value


# ------------------------------------------------------------------ good input


def test_a_state_is_nine_fields_in_column_order_with_optional_stream_t_id(tmp_path):
    rec = {f: i / 10 for i, f in enumerate(STATE_FIELDS)}
    path = write(tmp_path, json.dumps({**rec, "stream": "a", "t": 12.5, "id": 7}), json.dumps(rec))
    states = read_states(path)
    assert states.values.shape == (2, 9) and states.values.dtype == np.float64
    assert states.values[0].tolist() == [i / 10 for i in range(9)]
    assert states.streams == ["a", None] and states.t == [12.5, None] and states.ids == [7, None]
    assert states.repairs is None and states.expect_level_min is None


def test_stream_string_1_and_integer_1_stay_different(tmp_path):
    states = read_states(write(tmp_path, line(stream="1"), line(stream=1), line(stream=None)))
    assert states.streams == ["1", 1, None]
    assert [type(s) for s in states.streams] == [str, int, type(None)]
    assert states.stream_codes()[1] == 3


def test_t_keeps_integers_as_integers(tmp_path):
    assert read_states(write(tmp_path, line(t=3), line(t=3.0))).t == [3, 3.0]
    assert [type(t) for t in read_states(write(tmp_path, line(t=3), line(t=3.0))).t] == [int, float]


def test_integer_values_0_and_1_are_numbers(tmp_path):
    states = read_states(write(tmp_path, line(risk=0, justice=1)))
    assert states.values[0, STATE_FIELDS.index("risk")] == 0.0
    assert states.values[0, STATE_FIELDS.index("justice")] == 1.0


def test_blank_lines_are_skipped_and_crlf_is_accepted(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(f"\n{line(t=1)}\r\n   \n{line(t=2)}\r\n\n".encode())
    assert read_states(str(path)).t == [1, 2]


def test_write_then_read_gives_the_same_states(tmp_path):
    rng = np.random.default_rng(3)
    states = StateSet(values=rng.random((50, 9)), streams=[i % 3 if i % 2 else f"s{i % 3}" for i in range(50)],
                      t=[None if i % 5 == 0 else i * 0.5 for i in range(50)], ids=[f"s{i}" for i in range(50)])
    path = str(tmp_path / "s.jsonl")
    write_states(path, states)
    back = read_states(path)
    assert np.array_equal(back.values, states.values)
    assert back.streams == states.streams and back.t == states.t and back.ids == states.ids


def test_written_states_have_the_fields_in_order_then_stream_t_id(tmp_path):
    states = StateSet(values=np.full((2, 9), 0.25), streams=["a", None], t=[1, None], ids=[None, "x"])
    path = str(tmp_path / "s.jsonl")
    write_states(path, states)
    first, second = (json.loads(text) for text in open(path))
    assert list(first) == [*STATE_FIELDS, "stream", "t"]
    assert list(second) == [*STATE_FIELDS, "id"]


def test_gzip_round_trip_and_deterministic_bytes(tmp_path):
    states = StateSet(values=np.random.default_rng(0).random((20, 9)), streams=[None] * 20, t=[None] * 20,
                      ids=list(range(20)))
    a, b = str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.jsonl.gz")
    write_states(a, states)
    write_states(b, states)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert gzip.decompress(open(a, "rb").read()).count(b"\n") == 20
    assert np.array_equal(read_states(a).values, states.values)


def test_dash_reads_stdin(monkeypatch, tmp_path):
    data = f"{line(t=1)}\n{line(t=2)}\n".encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    assert read_states("-").t == [1, 2]


def test_dash_reads_gzip_from_stdin(monkeypatch):
    data = gzip.compress(f"{line(t=1)}\n".encode())
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    assert read_states("-").t == [1]


# ------------------------------------------------------------------ bad input: one error, naming line and field


@pytest.mark.parametrize(
    "bad, field, value_text",
    [
        ('{"physical": 0.5, "social": ', None, None),  # broken JSON
        (line(risk=DROP), "risk", None),  # missing field
        (line(risk=float("nan")), "risk", "NaN"),
        (line(risk=float("inf")), "risk", "Infinity"),
        (line(risk="high"), "risk", '"high"'),
        (line(risk=True), "risk", "true"),  # booleans are not numbers
        (line(risk=None), "risk", "null"),
        (line(risk=1.5), "risk", "1.5"),
        (line(risk=-0.01), "risk", "-0.01"),
        (line(colour=0.3), "colour", "0.3"),  # any other key
        (line(stream=1.5), "stream", "1.5"),
        (line(stream=True), "stream", "true"),
        (line(stream=["a"]), "stream", '["a"]'),
        (line(t="noon"), "t", '"noon"'),
        (line(t=None), "t", "null"),
        (line(id=2.5), "id", "2.5"),
        (line(expect_level_min=1), "expect_level_min", None),  # only in regression files
        ("[0.5, 0.5]", None, "[0.5, 0.5]"),  # not an object
        (line() + " " + line(), None, None),  # two objects on one line
    ],
)
def test_bad_line_is_an_input_error_naming_file_line_field_and_value(tmp_path, bad, field, value_text):
    path = write(tmp_path, line(), "", bad, line())
    err = error_of(path)
    assert err.line == 3 and err.field == field
    assert str(err).startswith(f"{path}:3: " + (f"{field}: " if field else ""))
    if value_text is not None:
        assert str(err).endswith(f"({value_text})")


def test_empty_file_is_an_input_error(tmp_path):
    for path in (write(tmp_path), write(tmp_path, "", "  ", name="blank.jsonl")):
        err = error_of(path)
        assert err.line is None and "no states" in str(err) and str(err).startswith(path)


def test_the_first_bad_line_is_reported_even_when_a_later_line_is_broken_json(tmp_path):
    err = error_of(write(tmp_path, line(), line(risk=2.0), line(), "{broken"))
    assert (err.line, err.field) == (2, "risk")


def test_nothing_is_skipped_a_bad_last_line_fails_the_whole_file(tmp_path):
    err = error_of(write(tmp_path, *[line(t=i) for i in range(1000)], line(social="x")))
    assert (err.line, err.field) == (1001, "social")


# ------------------------------------------------------------------ repairs only on request


def test_fill_missing_fills_with_one_half_and_records_it(tmp_path):
    states = read_states(write(tmp_path, line(), line(risk=DROP, empathy=DROP)), fill_missing=True)
    assert states.values[1].tolist() == [0.5] * 9
    assert states.repairs == [None, {"risk": "filled", "empathy": "filled"}]


def test_clip_clips_out_of_range_values_and_records_it(tmp_path):
    states = read_states(write(tmp_path, line(risk=1.25, context=-0.5), line()), clip=True)
    assert states.values[0, STATE_FIELDS.index("risk")] == 1.0
    assert states.values[0, STATE_FIELDS.index("context")] == 0.0
    assert states.repairs == [{"context": "clipped", "risk": "clipped"}, None]


def test_fill_and_clip_together_record_both(tmp_path):
    states = read_states(write(tmp_path, line(physical=DROP, risk=3)), fill_missing=True, clip=True)
    assert states.repairs == [{"physical": "filled", "risk": "clipped"}]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), None, "0.5", True])
def test_nan_infinity_and_wrong_types_are_never_repaired(tmp_path, value):
    err = error_of(write(tmp_path, line(risk=value)), fill_missing=True, clip=True)
    assert (err.line, err.field) == (1, "risk")


def test_regression_files_may_carry_expect_level_min(tmp_path):
    states = read_states(write(tmp_path, line(expect_level_min=2), line()), allow_expect_level=True)
    assert states.expect_level_min.tolist() == [2, 0]
    err = error_of(write(tmp_path, line(expect_level_min=3)), allow_expect_level=True)
    assert err.field == "expect_level_min"


# ------------------------------------------------------------------ states passed in memory


def test_records_in_memory_are_checked_alike_and_errors_name_the_record_index():
    with pytest.raises(InputError) as caught:
        states_from_records([GOOD, {**GOOD, "risk": float("nan")}])
    assert str(caught.value) == "record 1: risk: not a finite number (NaN)"
    with pytest.raises(InputError, match=r"^record 0: colour: unknown field"):
        states_from_records([{**GOOD, "colour": 1}])
    with pytest.raises(InputError, match=r"^record 2: justice: missing"):
        states_from_records([GOOD, GOOD, {k: v for k, v in GOOD.items() if k != "justice"}])
    with pytest.raises(InputError, match=r"^record 0: risk: expected `float`, got `bool`"):
        states_from_records([{**GOOD, "risk": True}])
    with pytest.raises(InputError, match=r"^record 0: t: not a finite number"):
        states_from_records([{**GOOD, "t": float("inf")}])
    with pytest.raises(InputError, match="no states"):
        states_from_records([])
    # Text no file can hold (UTF-8 cannot encode a lone surrogate) is refused, not written.
    with pytest.raises(InputError) as caught:
        states_from_records([GOOD, {**GOOD, "stream": "\ud800"}])
    assert str(caught.value) == "record 1: stream: not valid Unicode text (a lone surrogate): '\\ud800'"
    with pytest.raises(InputError, match=r"^record 0: id: not valid Unicode text"):
        states_from_records([{**GOOD, "id": "a\udc00b"}])


def test_records_accept_numpy_numbers():
    states = states_from_records([{**GOOD, "risk": np.float64(0.25), "t": np.int64(4)}])
    assert states.values[0, STATE_FIELDS.index("risk")] == 0.25 and states.t == [4]


def test_records_fill_and_clip_like_files():
    states = states_from_records([{**GOOD, "risk": 7}, {"physical": 0.1}], fill_missing=True, clip=True)
    assert states.values[0, STATE_FIELDS.index("risk")] == 1.0
    assert states.repairs[0] == {"risk": "clipped"}
    assert states.repairs[1] == {f: "filled" for f in STATE_FIELDS[1:]}


# ------------------------------------------------------------------ files: stdin/stdout, gzip, atomic output


def test_atomic_output_leaves_no_file_behind_on_error(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as out:
            out.write(b"partial")
            raise RuntimeError("failed half way")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_old_file_when_the_new_one_fails(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), atomic_output(str(target)) as out:
        out.write(b"new")
        raise RuntimeError
    assert target.read_bytes() == b"old\n" and len(list(tmp_path.iterdir())) == 1


def test_atomic_output_replaces_on_success_and_gzips_deterministically(tmp_path):
    for name in ("a.gz", "b.gz"):
        with atomic_output(str(tmp_path / name)) as out:
            out.write(b"hello\n")
    a, b = (tmp_path / "a.gz").read_bytes(), (tmp_path / "b.gz").read_bytes()
    assert a == b and gzip.decompress(a) == b"hello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz", "b.gz"]


def test_atomic_output_dash_writes_stdout(capsysbinary):
    with atomic_output("-") as out:
        out.write(b"to stdout\n")
    assert capsysbinary.readouterr().out == b"to stdout\n"


def test_open_text_lines_reads_plain_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_text("x\ny\n")
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(b"x\ny\n"))
    assert list(open_text_lines(str(tmp_path / "a.txt"))) == ["x\n", "y\n"]
    assert list(open_text_lines(str(tmp_path / "a.txt.gz"))) == ["x\n", "y\n"]


def test_input_error_from_a_finished_message():
    assert str(InputError("f.jsonl:3: step: missing")) == "f.jsonl:3: step: missing"


def test_a_last_line_without_newline_is_read(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(f"{line(t=1)}\n{line(t=2)}")
    assert read_states(str(path)).t == [1, 2]

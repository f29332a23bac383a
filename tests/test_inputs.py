"""No input or option crashes the tool, and nothing a user owns is destroyed or left half-made.

Each bad input or option gives exit 2 and one line naming the file, line, field or option,
before any work is done and before any output exists; user text is printed as written,
never read as markup.
"""

import gzip
import hashlib
import json
import os
import sys
import threading

import pytest
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.io.files import InputError, atomic_output, read_once, remove_stale_temps, write_outputs
from ami_engine.io.history import read_history
from fuzz_inputs import SUGGESTION, trace_record

runner = CliRunner()
GOOD = {"physical": 0.5, "social": 0.4, "context": 0.6, "risk": 0.7, "compassion": 0.5, "justice": 0.5,
        "harm_sens": 0.5, "responsibility": 0.5, "empathy": 0.5}


def invoke(*args, stdin=None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def refused(result, *names):
    """Exit 2 with one line on stderr that names each of `names`."""
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def states_file(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------ malformed files


def test_bad_utf8_inside_a_json_string_names_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + json.dumps({**GOOD, "stream": "X"}).encode()
                     .replace(b'"X"', b'"\xff\xfe"') + b"\n")
    out = tmp_path / "t.jsonl"
    line = refused(invoke("run", "--states", path, "--out", out), f"{path}:2")
    assert "UTF-8" in line and not out.exists()


def test_bad_utf8_in_a_toml_config_names_file_and_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes(b'J_MIN = 0.8\n[meta]\nnote = "\xff"\n')
    line = refused(invoke("run", "--config", path, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl"),
                   f"{path}:3")
    assert "UTF-8" in line


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "not gzip"])
def test_corrupt_or_truncated_gzip_is_refused_naming_the_file(tmp_path, damage):
    data = gzip.compress(b"".join(json.dumps(GOOD).encode() + b"\n" for _ in range(200)), mtime=0)
    data = {"corrupt": data[:20] + bytes(b ^ 0x5A for b in data[20:40]) + data[40:],
            "truncated": data[: len(data) // 2], "not gzip": b"\x1f\x8b\x00\x00garbage"}[damage]
    path = tmp_path / "s.jsonl.gz"
    path.write_bytes(data)
    assert "gzip" in refused(invoke("metrics", path), path)
    assert "gzip" in refused(invoke("run", "--states", path, "--out", tmp_path / "t.jsonl"), path)
    assert not (tmp_path / "t.jsonl").exists()


def test_gzip_compressed_toml_config_is_read(tmp_path):
    path = tmp_path / "c.toml.gz"
    path.write_bytes(gzip.compress(b"J_MIN = 0.7\n"))
    out = tmp_path / "t.jsonl"
    assert invoke("run", "--config", path, "--scenario", "safe", "--n", 5, "--out", out).exit_code == 0
    from ami_engine.config import load_config

    assert load_config(str(path))["J_MIN"] == 0.7


def test_symlink_loop_and_folder_are_refused_naming_the_path(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    assert "symbolic links" in refused(invoke("metrics", loop), loop)
    assert "no .parquet files in the folder" in refused(invoke("metrics", tmp_path), tmp_path)
    run_on_folder = invoke("run", "--states", tmp_path, "--out", tmp_path / "t.jsonl")
    assert "no .parquet files in the folder" in refused(run_on_folder, tmp_path)


@pytest.mark.parametrize("deep", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000])
def test_json_nested_100k_deep_is_refused(tmp_path, deep):
    record = json.dumps(trace_record(0)).encode()
    path = tmp_path / "t.jsonl"
    path.write_bytes(record + b"\n" + record[:-1] + b', "extra": ' + deep + b"}\n")  # an unknown field: skipped
    assert "nested too deeply" in refused(invoke("metrics", path), f"{path}:2")
    history = tmp_path / "h.jsonl"
    history.write_bytes(b'{"step": 0, "L": 1, "extra": ' + deep + b"}\n")
    with pytest.raises(InputError, match="h.jsonl:1: invalid JSON: nested too deeply"):
        read_history(history)


def test_toml_nested_deeply_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("a = " + "[" * 100_000)
    refused(invoke("run", "--config", path, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl"), path)


# ------------------------------------------------- what is not a regular file, sizes, BOM


@pytest.fixture
def fifo():
    """Makes FIFOs; a command still waiting on one after 20 s is let go (a writer opens and
    closes it, so the reading sees an empty file) and the test fails rather than hangs."""
    made, waited, done = [], [], threading.Event()

    def release():
        while not done.wait(0.2):
            for path in made:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    waited.append(path)
                except OSError:  # no reader waiting
                    pass

    def make(path):
        os.mkfifo(path)
        made.append(path)
        return path

    timer = threading.Timer(20, release)
    timer.start()
    yield make
    done.set()
    timer.cancel()
    timer.join()
    assert not waited, f"a command waited on {waited[0]}"


def suggestion_learned_on(tmp_path, data):
    """A suggestion naming `data` as the states file it was learned on."""
    path = tmp_path / "s.toml"
    path.write_text(f'extends = "base"\nJ_MIN = 0.7\n\n[meta.data]\nsource = "states"\npath = "{data.name}"\n'
                    f'sha256 = "{hashlib.sha256(data.read_bytes()).hexdigest()}"\n\n[meta.split]\n'
                    'method = "by_stream"\ntrain_fraction = 0.5\nseed = 3\n')
    return path


def input_commands(tmp_path, name):
    """Every way a file named `name` is read as a whole: (args, the path as named)."""
    target = tmp_path / name
    good = tmp_path / "good.toml"
    good.write_text("J_MIN = 0.7\n")
    out = tmp_path / "out.jsonl"
    return target, [
        ["gate", target],
        ["run", "--config", target, "--scenario", "safe", "--n", 5, "--out", out],
        ["run", "--states", target, "--out", out],
        ["metrics", target],
        ["gate", good, "--regression", target],
        ["learn", "--states", target, "--budget", 1, "--out", tmp_path / "s.toml"],
        ["report", "--suggestion", good, "--history", target, "--out", tmp_path / "r.html"],
        ["explain", "--states", target, "--line", 1],
    ]


def test_a_fifo_is_refused_by_name_without_waiting_for_a_writer(tmp_path, fifo):
    target, commands = input_commands(tmp_path, "f.toml")
    fifo(target)
    for args in commands:
        assert "is a FIFO, not a regular file" in refused(invoke(*args), target), args
    assert not (tmp_path / "out.jsonl").exists()


def test_a_fifo_named_as_parquet_is_refused_without_waiting(tmp_path, fifo):
    from ami_engine.io._pinned import pinned

    target = fifo(tmp_path / "t.parquet")
    assert "is a FIFO" in refused(invoke("metrics", target), target)
    assert "is a FIFO" in refused(invoke("run", "--states", target, "--out", tmp_path / "o.jsonl"), target)
    with pytest.raises(InputError, match="is a FIFO, not a regular file"), pinned(str(target), digest=True):
        pass


@pytest.mark.parametrize(("device", "kind"), [("/dev/zero", "a character device"), ("/dev/null", "a character device"),
                                              ("folder", "a folder")])
def test_a_device_or_a_folder_is_refused_as_not_a_regular_file(tmp_path, device, kind):
    good = tmp_path / "good.toml"
    good.write_text("J_MIN = 0.7\n")
    path = tmp_path if device == "folder" else device
    out = tmp_path / "out.jsonl"
    for args in (["gate", path], ["run", "--config", path, "--scenario", "safe", "--n", 5, "--out", out],
                 ["apply", path, "--approved-by", "A. Reviewer", "--out", tmp_path / "p.toml"]):
        assert f"is {kind}, not a regular file" in refused(invoke(*args), path), args
    if device != "folder":  # a folder is a Parquet data set
        assert f"is {kind}" in refused(invoke("gate", good, "--regression", path), path)
        assert f"is {kind}" in refused(invoke("run", "--states", path, "--out", out), path)
    assert not out.exists() and not (tmp_path / "p.toml").exists()


def test_a_data_copy_that_is_not_a_regular_file_is_named_as_such(tmp_path, fifo):
    data = states_file(tmp_path / "d.jsonl", [{**GOOD, "stream": f"s{i % 4}"} for i in range(8)])
    suggestion = suggestion_learned_on(tmp_path, data)
    for copy, kind in ((fifo(tmp_path / "f.jsonl"), "a FIFO"), ("/dev/zero", "a character device")):
        assert f"is {kind}, not a regular file" in refused(invoke("gate", suggestion, "--data", copy), "--data", copy)
        refused(invoke("report", "--suggestion", suggestion, "--data", copy, "--out", tmp_path / "r.html"), kind)
    data.unlink()
    fifo(data)
    assert "is a FIFO" in refused(invoke("gate", suggestion), suggestion, "[meta.data] path")


def test_a_link_to_a_regular_file_is_read(tmp_path):
    target = tmp_path / "c.toml"
    target.write_text("J_MIN = 0.7\n")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    result = invoke("run", "--config", link, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl")
    assert result.exit_code == 0, result.output


def test_a_compressed_config_larger_than_any_config_is_refused_unread(tmp_path):
    path = tmp_path / "c.toml.gz"
    path.write_bytes(gzip.compress(b"#" * ((64 << 20) + 1), compresslevel=1))
    assert path.stat().st_size < 1 << 20
    out = tmp_path / "t.jsonl"
    for args in (["gate", path], ["run", "--config", path, "--scenario", "safe", "--n", 5, "--out", out]):
        assert "larger than 64 MiB (decompressed)" in refused(invoke(*args), path)


def test_a_config_at_the_size_limit_is_read(tmp_path, monkeypatch):
    from ami_engine.config import load_config
    from ami_engine.io import tomlfile

    path = tmp_path / "c.toml.gz"
    text = b"J_MIN = 0.7\n# " + b"x" * 100 + b"\n"
    path.write_bytes(gzip.compress(text))
    monkeypatch.setattr(tomlfile, "MAX_TOML_BYTES", len(text))
    assert load_config(str(path))["J_MIN"] == 0.7
    monkeypatch.setattr(tomlfile, "MAX_TOML_BYTES", len(text) - 1)
    with pytest.raises(InputError, match=f"larger than {len(text) - 1} bytes"):
        load_config(str(path))


def test_an_empty_suggestion_is_not_applied(tmp_path):
    for text in ("", "# nothing here\n\n"):
        path = tmp_path / "empty.toml"
        path.write_text(text)
        line = refused(invoke("apply", path, "--approved-by", "A. Reviewer", "--out", tmp_path / "p.toml"), path)
        assert "empty" in line
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.toml"]


def test_a_byte_order_mark_is_named_in_toml_and_json_lines(tmp_path):
    bom = b"\xef\xbb\xbf"
    config = tmp_path / "c.toml"
    config.write_bytes(bom + b"J_MIN = 0.7\n")
    states = tmp_path / "s.jsonl"
    states.write_bytes(bom + json.dumps(GOOD).encode() + b"\n")
    traces = tmp_path / "t.jsonl"
    traces.write_bytes(bom + json.dumps(trace_record(0)).encode() + b"\n")
    history = tmp_path / "h.jsonl"
    history.write_bytes(bom + b'{"step": 0, "L": 1}\n')
    out = tmp_path / "o.jsonl"
    for args, path in ((["gate", config], config),
                       (["run", "--config", config, "--scenario", "safe", "--n", 5, "--out", out], config),
                       (["run", "--states", states, "--out", out], states), (["metrics", traces], traces)):
        assert "byte order mark; save it as UTF-8 without BOM" in refused(invoke(*args), f"{path}:1")
    with pytest.raises(InputError, match="h.jsonl:1: starts with a byte order mark"):
        read_history(history)


# ------------------------------------------------------------------ keys given twice


def test_a_key_given_twice_in_a_states_line_is_refused(tmp_path):
    line = json.dumps({**GOOD, "stream": "a"})
    twice = line.replace('"risk": 0.7', '"risk": 0.7, "risk": 0.1')
    path = tmp_path / "s.jsonl"
    path.write_text(f"{line}\n\n{twice}\n")
    out = tmp_path / "t.jsonl"
    assert refused(invoke("run", "--states", path, "--out", out), f"{path}:3") == f"error: {path}:3: risk: given twice"
    assert not out.exists()


@pytest.mark.parametrize("where", ["plain", "colons in an id", "escaped text", "null stream", "explicit default",
                                   "dropped key"])
def test_a_key_given_twice_is_found_wherever_the_line_hides_it(tmp_path, where):
    from ami_engine.io.states import read_states

    extra = {"plain": {}, "colons in an id": {"id": "2024-01-01T00:00:00"}, "escaped text": {"id": 'a\\":"b'},
             "null stream": {"stream": None}, "explicit default": {"expect_level_min": 0},
             "dropped key": {"note": {"x": 1, "y": [1, 2]}}}[where]
    lines = [json.dumps({**GOOD, **extra, "id": f"{extra.get('id', '')}{i}"}) for i in range(50)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    kw = {"allow_expect_level": True, "drop_unknown": where == "dropped key"}
    assert len(read_states(str(path), **kw)) == 50  # nothing given twice: all read
    lines[37] = lines[37][:-1] + ', "empathy": 0.9}'
    path.write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(InputError, match=r"r.jsonl:38: empathy: given twice"):
        read_states(str(path), **kw)


def test_a_regression_case_that_gives_its_expectation_twice_is_refused(tmp_path):
    suite = tmp_path / "cases.jsonl"
    case = json.dumps({**GOOD, "expect_level_min": 2})
    suite.write_text(case[:-1] + ', "expect_level_min": 0}\n')
    good = tmp_path / "good.toml"
    good.write_text("J_MIN = 0.7\n")
    line = refused(invoke("gate", good, "--regression", suite), f"{suite}:1")
    assert line == f"error: {suite}:1: expect_level_min: given twice"


# -------------------------------------------------------------------------- markup


def test_markup_in_the_output_path_is_printed_as_written_after_the_output(tmp_path):
    out = tmp_path / "a[/x].jsonl"  # the folder `a[` and the file `x].jsonl`
    result = invoke("run", "--scenario", "safe", "--n", 5, "--out", out)
    assert result.exit_code == 0, result.exception
    assert f"-> {out}" in result.stderr and out.exists()


def test_markup_in_names_and_messages_is_printed_as_written(tmp_path):
    name = "[bold]x[/bold] [/y] [meta.data]"
    line = refused(invoke("run", "--profile", name, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl"))
    assert name in line


def test_messages_naming_meta_tables_keep_them(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(SUGGESTION.replace(b"[meta.split]", b"[meta.other]"))
    assert "[meta.split]" in refused(invoke("gate", path), path)


def test_newlines_in_a_path_keep_the_message_on_one_line(tmp_path):
    path = tmp_path / "a\nb.jsonl"
    refused(invoke("metrics", path), "a\\nb.jsonl")


# ----------------------------------------------------------- sizes and metadata


def test_scenario_larger_than_memory_is_refused_before_any_work(tmp_path):
    out = tmp_path / "t.jsonl"
    assert "memory" in refused(invoke("run", "--scenario", "safe", "--n", 10**12, "--out", out), "--n")
    refused(invoke("run", "--scenario", "safe", "--n", 2**63 - 1, "--out", out), "--n")
    assert not out.exists()


def test_a_drift_window_longer_than_any_stream_is_taken_at_its_word(tmp_path):
    # CUS_MEAN_WINDOW has no upper bound: a window longer than every stream is the whole
    # stream, whatever its size, and costs no memory beyond the data's.
    outs = []
    for window in (2**63 - 1, 10**6, 400):
        path = tmp_path / f"c{window}.toml"
        path.write_text(f"CUS_MEAN_WINDOW = {window}\n")
        outs.append(tmp_path / f"t{window}.jsonl")
        result = invoke("run", "--config", path, "--scenario", "chaos", "--n", 300, "--streams", 1, "--out", outs[-1])
        assert result.exit_code == 0, result.output
    lines = [[{k: v for k, v in json.loads(line).items() if k != "config_id"} for line in out.read_text().splitlines()]
             for out in outs]
    assert lines[0] == lines[1] == lines[2]
    path = tmp_path / "zero.toml"
    path.write_text("CUS_MEAN_WINDOW = 0\n")
    refused(invoke("run", "--config", path, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl"),
            path, "CUS_MEAN_WINDOW", ">= 1")


@pytest.mark.parametrize(("old", "new", "field"), [
    (b"n = 40", b"n = 100000000000", "memory"),
    (b"n = 40", b"n = 1e11", "meta.data.scenario.n"),
    (b"n = 40", b"n = true", "meta.data.scenario.n"),
    (b"seed = 3\nstreams", b'seed = "x"\nstreams', "meta.data.scenario.seed"),
    (b'name = "balanced"', b"name = 5", "meta.data.scenario.name"),
    (b'[meta.data.scenario]\nname = "balanced"\nn = 40\nseed = 3\nstreams = 8\n', b"", "meta.data.scenario"),
    (b"[meta.data.scenario]", b"[meta.data.elsewhere]", "meta.data.scenario"),
])
def test_tampered_suggestion_metadata_is_refused_naming_the_field(tmp_path, old, new, field):
    path = tmp_path / "s.toml"
    assert old in SUGGESTION
    path.write_bytes(SUGGESTION.replace(old, new, 1))
    refused(invoke("gate", path), path, field)


def test_suggestion_split_seed_that_is_infinite_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_bytes(SUGGESTION.replace(b"train_fraction = 0.8\nseed = 3", b"train_fraction = 0.8\nseed = inf"))
    refused(invoke("gate", path), path, "[meta.split]")


def test_config_extending_a_name_too_long_to_look_up_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'extends = "{"x" * 300}"\n')
    refused(invoke("run", "--config", path, "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl"),
            path, "extends", "no such profile")


def test_suggestion_scenario_that_is_not_a_table_is_named(tmp_path):
    path = tmp_path / "s.toml"
    text = SUGGESTION.replace(b'source = "scenario"', b'source = "scenario"\nscenario = 5')
    path.write_bytes(text.replace(b"[meta.data.scenario]", b"[meta.data.elsewhere]"))
    refused(invoke("gate", path), path, "meta.data.scenario", "a table")


def test_suggestion_data_that_is_not_a_table_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    text = SUGGESTION.split(b"[meta.data]")[0].replace(b"[meta]\n", b"[meta]\ndata = 5\n")
    path.write_bytes(text + b"[meta.split]\ntrain_fraction = 0.8\nseed = 3\n")
    refused(invoke("gate", path), path, "[meta.data]")


# -------------------------------------------------------------------------- options

OPTION_CASES = [
    ("--seed", ["run", "--scenario", "safe", "--n", 5, "--seed", -1]),
    ("--streams", ["run", "--scenario", "safe", "--n", 5, "--streams", 0]),
    ("--n", ["run", "--scenario", "safe", "--n", 0]),
    ("--scenario", ["run", "--scenario", "[/x]", "--n", 5]),
    ("--points-per-axis", ["learn", "--scenario", "safe", "--n", 50, "--strategy", "grid", "--points-per-axis", 0]),
    ("--step-scale", ["learn", "--scenario", "safe", "--n", 50, "--strategy", "random", "--perturb",
                      "--step-scale", 5]),
    ("--study", ["learn", "--scenario", "safe", "--n", 50, "--study", "foo://x"]),
    ("--critical-factor", ["learn", "--scenario", "safe", "--n", 50, "--critical-factor", -1]),
    ("--critical-factor", ["gate", "x.toml", "--critical-factor", "inf"]),
    ("--critical-margin", ["learn", "--scenario", "safe", "--n", 50, "--critical-margin", "nan"]),
    ("--train-fraction", ["learn", "--scenario", "safe", "--n", 50, "--train-fraction", 1]),
    ("--budget", ["learn", "--scenario", "safe", "--n", 50, "--budget", 0]),
    ("--budget", ["learn", "--scenario", "safe", "--n", 50, "--budget", -5]),
    ("--batch-size", ["learn", "--scenario", "safe", "--n", 50, "--batch-size", 0]),
    ("--strategy", ["learn", "--scenario", "safe", "--n", 50, "--strategy", "magic"]),
    ("--top", ["explain", "--state", json.dumps(GOOD), "--top", -1]),
    ("--line", ["explain", "--states", "s.jsonl", "--line", 0]),
    ("--state", ["explain", "--state", "[" * 100_000]),
    ("--n", ["run", "--scenario", "safe", "--n", "1e12"]),  # not an integer: refused by the parser
    ("--seed", ["run", "--scenario", "safe", "--n", 5, "--seed", "[/x]"]),
]


@pytest.mark.parametrize(("option", "args"), OPTION_CASES, ids=[f"{o} {str(a[-1])[:8]}" for o, a in OPTION_CASES])
def test_bad_option_value_is_refused_by_name_before_any_work(tmp_path, option, args):
    out = tmp_path / "deep" / "out.toml"
    if args[0] in ("run", "learn"):
        args = [*args, "--out", out]
    refused(invoke(*args), option)
    assert not (tmp_path / "deep").exists()


def test_missing_option_and_unknown_command_are_one_line(tmp_path):
    refused(invoke("run", "--scenario", "safe", "--n", 5), "--out")
    refused(invoke("runn"), "runn")


def test_output_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    blocker = states_file(tmp_path / "file", [GOOD])
    refused(invoke("run", "--scenario", "safe", "--n", 5, "--out", tmp_path), "--out", "folder")
    refused(invoke("run", "--scenario", "safe", "--n", 5, "--out", blocker / "t.jsonl"), "--out", "not a folder")
    refused(invoke("run", "--scenario", "safe", "--n", 5, "--out", tmp_path / ("a" * 300)), "--out", "255")


# ------------------------------------------------------------------------- stdin


def test_explain_reads_states_from_stdin(tmp_path):
    text = "".join(json.dumps({**GOOD, "risk": r}) + "\n" for r in (0.1, 0.9))
    result = invoke("explain", "--states", "-", "--line", 2, "--json", stdin=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["state"]["risk"] == 0.9


def test_read_once_hashes_and_parses_the_same_bytes_of_stdin(monkeypatch):
    import hashlib
    import io

    from ami_engine.io.states import read_states

    raw = gzip.compress(json.dumps(GOOD).encode() + b"\n", mtime=0)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    loaded = read_once("-")
    assert loaded.sha256 == hashlib.sha256(raw).hexdigest() and loaded.name == "<stdin>"
    assert len(read_states(loaded)) == 1 and len(read_states(loaded)) == 1


@pytest.mark.parametrize("packed", [False, True])
def test_a_streamed_file_hashes_every_byte_it_parses_once_and_is_read_once(tmp_path, monkeypatch, packed):
    import io

    from ami_engine.io.files import StreamedFile
    from ami_engine.io.traces import read_trace_states

    text = "".join(json.dumps(trace_record(i)) + "\n" for i in range(50)).encode()
    raw = gzip.compress(text, mtime=0) if packed else text + b"\n\n"  # trailing blank lines are hashed too
    path = tmp_path / ("t.jsonl.gz" if packed else "t.jsonl")
    path.write_bytes(raw)
    for source in (str(path), "-"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
        streamed = StreamedFile(source)
        with pytest.raises(RuntimeError, match="once it has been read"):
            _ = streamed.sha256
        found = read_trace_states(streamed)
        assert found.n_records == 50 and streamed.sha256 == hashlib.sha256(raw).hexdigest()
        with pytest.raises(RuntimeError, match="read once"):
            read_trace_states(streamed)


def test_a_streamed_file_that_stops_its_reader_has_no_digest(tmp_path):
    from ami_engine.io.files import StreamedFile
    from ami_engine.io.traces import read_trace_states

    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(trace_record(0)) + "\n{not json\n" + json.dumps(trace_record(1)) + "\n")
    streamed = StreamedFile(str(path))
    with pytest.raises(InputError, match=":2"):
        read_trace_states(streamed)
    with pytest.raises(RuntimeError, match="once it has been read"):
        _ = streamed.sha256


def test_only_one_input_may_be_stdin(tmp_path):
    refused(invoke("learn", "--states", "-", "--regression", "-", "--out", tmp_path / "s.toml"),
            "--states", "--regression")


def test_learn_reads_stdin_and_a_reject_leaves_no_earlier_suggestion(tmp_path):
    """One run for both: states from stdin, a regression suite no candidate can pass."""
    out, history = tmp_path / "s.toml", tmp_path / "h.jsonl"
    out.write_text("# the suggestion of an earlier run\n")
    history.write_text('{"step": 0, "L": 9}\n')
    regression = states_file(tmp_path / "r.jsonl", [{**GOOD, "risk": 0.1, "harm_sens": 0.1, "expect_level_min": 2}])
    text = "".join(json.dumps({**GOOD, "risk": 0.05 * (i % 19), "stream": f"s{i % 6}"}) + "\n" for i in range(60))
    result = invoke("learn", "--states", "-", "--regression", regression, "--strategy", "random", "--budget", 2,
                    "--batch-size", 2, "--out", out, "--history", history, stdin=text)
    # No candidate passes the suite, so the run ends with nothing to suggest.
    assert result.exit_code == 0 and "no improvement found" in result.output, result.output
    assert not out.exists() and "removed" in result.stderr
    assert json.loads(history.read_text().splitlines()[0])["L"] != 9  # this run's history


# ---------------------------------------------------------------- outputs


def test_output_temporary_files_are_named_for_their_process(tmp_path):
    target = tmp_path / "t.jsonl"
    with atomic_output(target) as fh:
        fh.write(b"x")
        [temp] = [p.name for p in tmp_path.iterdir()]
    assert temp.startswith(f".t.jsonl.ami-tmp-{os.getpid()}-")
    assert [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]


@pytest.mark.parametrize("name", ["y.parquet/", "y.jsonl/"])
def test_an_output_name_ending_in_a_path_separator_is_refused(tmp_path, name):
    result = invoke("run", "--scenario", "safe", "--n", 5, "--out", f"{tmp_path}/{name}")
    assert result.exit_code == 2 and f"{name}: ends in a path separator" in result.output
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="ends in a path separator"):
        write_outputs({f"{tmp_path}/a.jsonl": b"one\n", f"{tmp_path}/{name}": b"two\n"})
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_files_of_dead_processes_are_removed_on_the_next_output(tmp_path):
    stale = tmp_path / ".t.jsonl.ami-tmp-999999999-0a1b2c3d"  # above any process id Linux hands out
    live = tmp_path / f".u.jsonl.ami-tmp-{os.getppid()}-0a1b2c3d"
    other = tmp_path / ".keep.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    assert invoke("run", "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.jsonl").exit_code == 0
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path) == []


def test_outputs_written_as_a_set_appear_all_or_none(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "sub" / "b.jsonl.gz"
    write_outputs({str(a): b"one\n", str(b): b"two\n"})
    assert a.read_bytes() == b"one\n" and gzip.decompress(b.read_bytes()) == b"two\n"
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(InputError, match="blocker"):
        write_outputs({str(a): b"new\n", str(blocker / "c.jsonl"): b"three\n"})
    assert a.read_bytes() == b"one\n" and sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "blocker", "sub"]
    write_outputs({str(a): None, str(b): b"again\n"})
    assert not a.exists() and gzip.decompress(b.read_bytes()) == b"again\n"


def _traces_with(tmp_path, name, change):
    source = tmp_path / "t.jsonl"
    if not source.exists():
        assert invoke("run", "--scenario", "chaos", "--n", 60, "--seed", 1, "--out", source).exit_code == 0
    lines = source.read_text().splitlines()
    record = json.loads(lines[9])
    change(record)
    lines[9] = json.dumps(record)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_key_inside_a_trace_state_that_is_not_a_state_field_is_refused(tmp_path):
    path = _traces_with(tmp_path, "sev.jsonl", lambda r: r["state"].update(severity=0.9))
    for args in (["convert", path, tmp_path / "o.jsonl"], ["learn", "--traces", path, "--out", tmp_path / "s.toml"]):
        refused(invoke(*args), f"{path}:10", "state.severity", "unknown field")
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "s.toml").exists()


def test_traces_mixing_string_and_integer_streams_convert_to_jsonl_but_not_to_parquet(tmp_path):
    path = _traces_with(tmp_path, "mixed.jsonl", lambda r: r.update(stream=7))
    result = invoke("convert", path, tmp_path / "o.jsonl")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.jsonl").read_text().splitlines()[9])["stream"] == 7
    refused(invoke("convert", path, tmp_path / "o.parquet"), f"{path}:10", "stream", "mixes strings and integers")


@pytest.mark.parametrize("line, field", [(b'{"step": 1, "L": NaN}', "L"), (b'{"step": true, "L": 1.0}', "step"),
                                         (b'{"step": 1, "L": 1e999}', "L"), (b'{"step": 1.5, "L": 1.0}', "step"),
                                         (b'{"step": 1, "L": 1.0, "fail_safe_rate": -Infinity}', "fail_safe_rate")])
def test_a_history_line_with_a_number_no_run_makes_is_refused(tmp_path, line, field):
    from ami_engine.io.history import read_history

    path = tmp_path / "h.jsonl"
    path.write_bytes(b'{"step": 0, "L": 1.0}\n' + line + b"\n")
    with pytest.raises(InputError, match=rf"^{path}:2: {field}: "):
        read_history(path)

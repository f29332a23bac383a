"""Fuzzing every reader: byte-mutated copies of valid inputs are read, or refused with one
line naming the file (exit 2 on the command line), never a traceback and never a partial
output. The runs are seeded (derandomize) so that CI sees the same inputs every time;
scripts/fuzz_readers.py runs thousands of mutations per reader."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ami_engine.cli import app
from fuzz_inputs import KINDS, READER_BY_NAME, READERS, TOKENS, VALUES, Mutation, outcome

mutation = st.builds(
    Mutation,
    kind=st.sampled_from(KINDS),
    where=st.floats(0.0, 1.0),
    size=st.floats(0.0, 1.0),
    byte=st.integers(0, 255),
    token=st.integers(0, max(len(TOKENS), len(VALUES)) - 1),
)
mutations = st.lists(mutation, min_size=1, max_size=4)
FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_every_valid_input_is_read(folder):
    assert {r.name: outcome(r, r.valid, folder) for r in READERS} == {r.name: "ok" for r in READERS}


@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_reader_reads_or_refuses_by_name_every_mutated_input(reader, folder):
    @FUZZ
    @given(edits=mutations)
    def run(edits):
        result = outcome(reader, reader.mutator(reader.valid, edits), folder)
        assert result in ("ok", "error"), result

    run()


# ------------------------------------------------------------------ through the CLI

runner = CliRunner()
CLI_CASES = {
    # reader -> (arguments, with {input} and {out} to fill in; the outputs it may write)
    "states": (["run", "--states", "{input}", "--out", "{out}/t.jsonl"], ["t.jsonl"]),
    "states.gz": (["run", "--states", "{input}", "--out", "{out}/t.jsonl.gz"], ["t.jsonl.gz"]),
    "traces": (["metrics", "{input}", "--json"], []),
    "traces.gz": (["check", "{input}", "--json"], []),
    "config": (["run", "--config", "{input}", "--scenario", "safe", "--n", "5", "--out", "{out}/t.jsonl"],
               ["t.jsonl"]),
    "history": (["report", "--suggestion", "{out}/../suggestion.toml", "--history", "{input}", "--out",
                 "{out}/r.html"], ["r.html"]),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_command_exits_0_1_or_2_with_one_line_and_no_output_on_error(name, tmp_path):
    reader = READER_BY_NAME[name]
    args, outputs = CLI_CASES[name]
    (tmp_path / "suggestion.toml").write_bytes(READER_BY_NAME["suggestion"].valid)
    out = tmp_path / "out"
    out.mkdir()
    source = tmp_path / f"input{reader.suffix}"

    @settings(FUZZ, max_examples=15)
    @given(edits=mutations)
    def run(edits):
        source.write_bytes(reader.mutator(reader.valid, edits))
        for leftover in out.iterdir():
            leftover.unlink()
        result = runner.invoke(app, [a.format(input=source, out=out) for a in args])
        assert isinstance(result.exception, SystemExit | None), result.exception
        assert result.exit_code in (0, 1, 2)
        if result.exit_code == 2:
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and str(source) in lines[0], result.stderr
            assert os.listdir(out) == []
        else:
            assert sorted(os.listdir(out)) == sorted(outputs)

    run()

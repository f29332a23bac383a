"""The project documents itself: the docs pages exist and link correctly, nothing shipped
points outside the repository, and every command's --help ends with a working example."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ami_engine.cli import app
from ami_engine.report import render_report

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
# Files that are not part of this repository; shipped text must not send a reader to them.
_OUTSIDE = ("../shared", "spec/", "/work/", "ENGINE.md", "TRACE.md", "LEARNING.md", "PHASE_6_0.md", "STYLE.md")
_TEXT_SUFFIXES = {".py", ".toml", ".md", ".txt", ".css", ".js", ".html", ".json"}


def _slug(heading: str) -> str:
    """The anchor a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {_slug(h) for h in _HEADING.findall(text)}


def _local_links(page: Path) -> list[tuple[Path, str | None]]:
    """(target file, anchor or None) of every relative link of a Markdown page."""
    out = []
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path).resolve() if path else page.resolve(), anchor or None))
    return out


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_readme_links_the_docs_pages_and_each_exists():
    linked = {p for p, _ in _local_links(ROOT / "README.md") if p.suffix == ".md"}
    expected = {(DOCS / name).resolve() for name in
                ("engine.md", "learning.md", "gate.md", "formats.md", "glossary.md")}
    assert expected <= linked
    for path in linked:
        assert path.is_file(), f"README.md links {path.relative_to(ROOT)}, which does not exist"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    for path, anchor in _local_links(page):
        assert path.is_file(), f"{page.name} links {path}, which does not exist"
        if anchor is not None and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page.name} links {path.name}#{anchor}: no such heading"


def test_the_docs_index_lists_every_page():
    indexed = {p for p, _ in _local_links(DOCS / "README.md")}
    for page in DOCS.glob("*.md"):
        if page.name != "README.md":
            assert page.resolve() in indexed, f"docs/README.md does not list {page.name}"


def _shipped_text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in (ROOT / "src", DOCS):
        files += [p for p in folder.rglob("*") if p.is_file() and p.suffix in _TEXT_SUFFIXES
                  and "__pycache__" not in p.parts]
    return files


def test_nothing_shipped_points_outside_the_repository():
    offenders = []
    for path in _shipped_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            offenders += [f"{path.relative_to(ROOT)}:{number}: {needle}" for needle in _OUTSIDE if needle in line]
    assert offenders == []


def _commands() -> dict[str, Any]:
    """The registered commands by name (click objects, as Typer builds them)."""
    return dict(typer.main.get_command(app).commands)


def _example(help_text: str) -> str:
    """The command line that ends a --help text: what follows its last `Example:`."""
    head, marker, tail = help_text.rstrip().rpartition("Example:")
    assert marker, "the help text has no example"
    # Nothing but the example may follow the option tables.
    assert "╰" in head and "╰" not in tail and "│" not in tail
    return " ".join(tail.split())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_each_commands_help_ends_with_an_example_that_parses(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    example = _example(result.output)
    words = shlex.split(example)
    assert words[:2] == ["ami-engine", name], example
    # The example's options and arguments are the command's own: click accepts them as given.
    command = _commands()[name]
    with command.make_context(name, words[2:], resilient_parsing=False):
        pass


def test_the_top_level_help_ends_with_an_example_and_points_to_the_docs():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert _example(result.output).startswith("ami-engine ")
    assert "docs/README.md" in result.output


@pytest.mark.parametrize("name", sorted(_commands()))
def test_docs_pages_named_by_help_exist(name):
    text = " ".join(CliRunner().invoke(app, [name, "--help"]).output.split())
    named = re.findall(r"docs/[\w.-]+\.md", text)
    assert named, f"`{name} --help` names no docs page"
    for page in named:
        assert (ROOT / page).is_file(), f"`{name} --help` names {page}, which does not exist"


def test_the_report_names_docs_pages_that_exist():
    html = render_report(None)
    named = set(re.findall(r"docs/[\w.-]+\.md", html))
    assert {"docs/glossary.md", "docs/engine.md", "docs/gate.md", "docs/learning.md"} <= named
    for page in named:
        assert (ROOT / page).is_file()


def test_every_escalation_reason_and_parameter_is_documented():
    from ami_engine.config import PARAMS
    from ami_engine.engine import REASONS

    engine = (DOCS / "engine.md").read_text(encoding="utf-8")
    glossary = (DOCS / "glossary.md").read_text(encoding="utf-8")
    for reason in REASONS:
        assert f"`{reason}`" in engine and f"`{reason}`" in glossary, reason
    for name in PARAMS:
        assert f"`{name}`" in engine, name


def _code_blocks(page: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w+)\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def test_the_format_examples_are_read_by_the_real_readers(tmp_path):
    """Each states, regression, trace and config example of formats.md is a valid file."""
    from ami_engine.config import load_config
    from ami_engine.io.states import read_states
    from ami_engine.io.traces import read_traces

    kinds = []
    for i, (lang, body) in enumerate(_code_blocks(DOCS / "formats.md")):
        path = tmp_path / f"example{i}.{'toml' if lang == 'toml' else 'jsonl'}"
        path.write_text(body, encoding="utf-8")
        if lang == "toml":
            load_config(str(path))
            kinds.append("config")
        elif body.startswith('{"physical"'):
            regression = "expect_level_min" in body
            assert len(read_states(str(path), allow_expect_level=regression)) == 1
            kinds.append("regression" if regression else "states")
        elif body.startswith('{"t"'):
            assert len(read_traces(str(path))) == 1
            kinds.append("trace")
    assert {"states", "regression", "trace", "config"} <= set(kinds)

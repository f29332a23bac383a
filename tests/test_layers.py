"""The layers point down (pyproject.toml [tool.importlinter]): cli, report, gate, the
learning loop and its suggestion, the optimizer and constraints, metrics and loss, the
engine, config, io. A module imports only the layers below its own, and nothing outside
the engine reads the engine's kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())"]


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([*LINT_IMPORTS, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, env=env, cwd=src)


def _layer_modules() -> list[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c["layers"] for c in contracts if c["type"] == "layers"]
    names = []
    for layer in layers:
        for part in layer.replace(":", "|").split("|"):
            names.append(part.strip().strip("()"))
    return names


def test_every_import_points_down_and_only_the_engine_reads_its_kernel():
    result = _lint(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_belongs_to_a_layer():
    layers = _layer_modules()
    graph = grimp.build_graph("ami_engine", cache_dir=None)
    # A package whose modules sit in several layers (ami_engine.learning) is in none itself.
    containers = {name.rsplit(".", k)[0] for name in layers for k in range(1, name.count("."))}
    outside = sorted(m for m in graph.modules - containers - {"ami_engine"}
                     if not any(m == name or m.startswith(name + ".") for name in layers))
    assert not outside, f"modules in no layer of [tool.importlinter]: {outside}"
    for package in sorted((graph.modules & containers) - {"ami_engine"}):
        imported = graph.find_modules_directly_imported_by(package)
        assert not imported, f"{package} is split across layers, so it must import nothing itself: {imported}"

@pytest.fixture
def copied_src(tmp_path: Path) -> Path:
    shutil.copytree(SRC / "ami_engine", tmp_path / "ami_engine", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _add_import(src: Path, module: str, line: str) -> None:
    path = src / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_an_import_that_points_up_breaks_the_contract(copied_src: Path):
    # The cycle the layers forbid: learning reaching up into the gate.
    _add_import(copied_src, "ami_engine.learning.loss", "from ..gate import run_gate  # noqa")
    result = _lint(copied_src)
    assert result.returncode == 1
    assert "ami_engine.learning.loss -> ami_engine.gate" in result.stdout
    assert "1 kept, 1 broken" in result.stdout


def test_reading_the_kernel_outside_the_engine_breaks_the_contract(copied_src: Path):
    _add_import(copied_src, "ami_engine.gate.checks", "from ..engine import _kernel as K  # noqa")
    result = _lint(copied_src)
    assert result.returncode == 1
    assert "ami_engine.gate.checks -> ami_engine.engine._kernel" in result.stdout

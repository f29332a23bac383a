"""The optimisation history that `learn` writes (docs/formats.md, history).

One JSON object per line, one line per optimisation step; a reader needs at least `step`
and `L` on each line and keeps every other field as written. A step where no candidate was
feasible has an infinite L, which the history writes as JSON's `Infinity`: the reader
takes it back.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ..errors import InputError
from ._errors import BOM_PROBLEM, UTF8_BOM
from ._open import display_name, read_bytes

_REQUIRED = ("step", "L")


def _check_numbers(row: dict[str, Any], source: str, number: int) -> None:
    """`step` a whole number >= 0 and `L` and every other top-level number finite: a curve
    drawn from NaN or infinity would show a figure no run made. (Python's JSON reader takes
    NaN, Infinity and 1e999 as floats; true is not a step.)"""
    step = row["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InputError(source, number, "step", "expected a whole number >= 0", step)
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(source, number, key, "not a finite number", value)
    if isinstance(row["L"], bool) or not isinstance(row["L"], (int, float)):
        raise InputError(source, number, "L", "expected a number", row["L"])


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every line of a history file as a dict; a bad line is an InputError naming it."""
    source = display_name(path)
    rows = []
    for number, line in enumerate(read_bytes(path).split(b"\n"), start=1):
        if not line.strip():
            continue
        if line.startswith(UTF8_BOM):
            raise InputError(source, number, None, BOM_PROBLEM)
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InputError(source, number, None, f"not UTF-8 text (byte {exc.start + 1})") from None
        except json.JSONDecodeError as exc:
            raise InputError(source, number, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise InputError(source, number, None, "invalid JSON: nested too deeply") from None
        if not isinstance(row, dict):
            raise InputError(source, number, None, "not a JSON object", row)
        for key in _REQUIRED:
            if key not in row:
                raise InputError(source, number, key, "missing (a history line needs at least `step` and `L`)")
        _check_numbers(row, source, number)
        rows.append(row)
    return rows

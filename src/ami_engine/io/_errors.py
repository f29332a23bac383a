"""What is wrong with a line of input, in words that name the file, the line and the field.

msgspec reports a refused value as `what - at `$.path``; `explain_line` and
`explain_validation` turn that into the InputError a person reads,
`FILE:LINE: field: what (value)`, and an operating-system error on a file becomes
`FILE: what` (`os_input_error`).
"""

from __future__ import annotations

import errno
import json
import math
import re
from typing import Any

import msgspec

from ..errors import _NO_VALUE, _SHOWN_CHARS, InputError, show_value

_AT_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_NAMED_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>[^`]*)`$")
# msgspec refuses bad UTF-8 inside strings, and nesting deeper than the stack, with these.
DECODE_ERRORS = (msgspec.MsgspecError, UnicodeDecodeError, RecursionError)
# What some editors put first in a UTF-8 file; neither JSON lines nor TOML allow it.
UTF8_BOM = b"\xef\xbb\xbf"
BOM_PROBLEM = "starts with a byte order mark; save it as UTF-8 without BOM"


def os_input_error(exc: OSError, source: str | None = None) -> InputError:
    """An operating-system error on a file as an InputError naming the file:
    `FILE: no such file or directory`."""
    name = source if source is not None else str(exc.filename) if exc.filename is not None else "<file>"
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        name = name[:_SHOWN_CHARS - 3] + "..." if len(name) > _SHOWN_CHARS else name
    return InputError(name, None, None, _lower_first(reason))


def explain_line(line: bytes, exc: Exception, source: str, line_no: int | None) -> InputError:
    """What is wrong with one line that msgspec refused, as an InputError naming the field."""
    if isinstance(exc, RecursionError):
        return InputError(source, line_no, None, "invalid JSON: nested too deeply")
    if isinstance(exc, UnicodeDecodeError):
        return InputError(source, line_no, None, "not UTF-8 text inside a string")
    if line.startswith(UTF8_BOM):
        return InputError(source, line_no, None, BOM_PROBLEM)
    try:
        # The standard library also reads NaN and Infinity, so that they can be named.
        parsed = json.loads(line)
    except (ValueError, RecursionError):
        return InputError(source, line_no, None, f"invalid JSON: {_lower_first(str(exc))}", line)
    if isinstance(exc, msgspec.ValidationError):
        return explain_validation(str(exc), parsed, source, line_no)
    try:
        found = _first_non_finite(parsed, "")
    except RecursionError:
        found = None
    if found is not None:
        return InputError(source, line_no, found[0], "not a finite number", found[1])
    return InputError(source, line_no, None, f"invalid JSON: {_lower_first(str(exc))}", line)


def explain_validation(message: str, record: Any, source: str, line_no: int | None) -> InputError:
    """Turn msgspec's `what - at `$.path`` into `field: what (value)`."""
    match = _AT_PATH.match(message)
    assert match is not None
    # msgspec writes `[...]` for "some value of this mapping": name the mapping itself.
    what, path = match["msg"], (match["path"] or "").split("[...]")[0]
    named = _NAMED_FIELD.match(what)
    if named is not None:
        field = _join_path(path, named["name"])
        if named["kind"] == "missing required":
            return InputError(source, line_no, field, "missing")
        return InputError(source, line_no, field, "unknown field", _lookup(record, f"{path}.{named['name']}"))
    if not path and what.startswith("Expected `object`"):
        return InputError(source, line_no, None, "not a JSON object", record)
    value = _lookup(record, path)
    if what == "Number out of range" and isinstance(value, float) and not math.isfinite(value):
        what = "not a finite number"
    elif what.startswith("Invalid enum value"):
        what = "not one of the allowed values"
    return InputError(source, line_no, _join_path(path, None), _lower_first(what), value)


def _join_path(path: str, name: str | None) -> str | None:
    field = path.lstrip(".")
    if name is not None:
        field = f"{field}.{name}" if field else name
    return field or None


def _lookup(record: Any, path: str) -> Any:
    value = record
    for key, index in _PATH_TOKEN.findall(path):
        try:
            value = value[key] if key else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return _NO_VALUE
    return value


def _first_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path.lstrip("."), value
    if isinstance(value, dict):
        items = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        found = _first_non_finite(sub, sub_path)
        if found is not None:
            return found
    return None


def _lower_first(text: str) -> str:
    text = text.removeprefix("JSON is malformed: ")
    return text[:1].lower() + text[1:]



__all__ = ["BOM_PROBLEM", "DECODE_ERRORS", "UTF8_BOM", "InputError", "explain_line", "explain_validation",
           "os_input_error", "show_value"]

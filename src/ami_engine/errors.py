"""The errors this package raises on purpose, and the exit code each one means.

    AmiEngineError                 anything this package refuses, with a one-line message
    ├── InputError                 bad input: a file, a record, a config value   (exit 2)
    ├── UsageError                 a bad option or combination of options        (exit 2)
    └── GateRejected               a check refused what was asked of it          (exit 1)

Every other error class of the package derives from one of these (ConfigError and
LearnError are InputErrors, StudyError a UsageError, ApplyRefused a GateRejected), so a
caller catches `AmiEngineError` for all of them and the command line maps each to its
exit code and label in one place. InputError and UsageError are also ValueErrors, as the
errors they replace were.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

_NO_VALUE = object()
_SHOWN_CHARS = 80


class AmiEngineError(Exception):
    """Something this package refuses; `str()` is the one line shown to a person."""

    exit_code: ClassVar[int] = 2
    label: ClassVar[str] = "error:"


class InputError(AmiEngineError, ValueError):
    """Bad input, reported as `FILE:LINE: field: what is wrong (value)`.

    Built either from parts, `InputError(source, line, field, problem, value)`, where
    `source` names the file (or, for records passed in memory, `record INDEX`), `line` is
    1-based or None and `field` is None when the problem is the line as a whole; or from a
    finished message, `InputError(message)`. The command line prints the message and exits
    with status 2.
    """

    def __init__(
        self,
        source: str,
        line: int | None = None,
        field: str | None = None,
        problem: str | None = None,
        value: Any = _NO_VALUE,
    ) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.problem = problem
        self.value_text = None if value is _NO_VALUE else show_value(value)
        super().__init__(self._message())

    @property
    def where(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def _message(self) -> str:
        if self.problem is None:
            return self.where
        parts = [self.where]
        if self.field is not None:
            parts.append(self.field)
        text = ": ".join(parts) + ": " + self.problem
        if self.value_text is not None:
            text += f" ({self.value_text})"
        return text

    def with_line_offset(self, lines: int) -> InputError:
        """The same error with its line number moved on by `lines`."""
        line = None if self.line is None else self.line + lines
        return _restore(type(self), self.source, line, self.field, self.problem, self.value_text)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _restore, (type(self), self.source, self.line, self.field, self.problem, self.value_text)


def _restore(
    cls: type[InputError], source: str, line: int | None, field: str | None, problem: str | None,
    value_text: str | None,
) -> InputError:
    err = cls(source, line, field, problem)
    err.value_text = value_text
    err.args = (err._message(),)
    return err


class UsageError(AmiEngineError, ValueError):
    """Bad option value or combination of options (exit code 2)."""


class GateRejected(AmiEngineError):
    """A check refused what was asked of it: nothing was written (exit code 1)."""

    exit_code: ClassVar[int] = 1
    label: ClassVar[str] = "refused:"


def show_value(value: Any) -> str:
    """A value as it would look in JSON (NaN and Infinity included), cut to a readable length."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace").strip()
    else:
        try:
            text = json.dumps(value, allow_nan=True, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    return text


__all__ = ["AmiEngineError", "GateRejected", "InputError", "UsageError", "show_value"]

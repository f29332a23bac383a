"""Keys given twice in a JSON line: `{"risk": 0.9, "risk": 0.1}` is refused, not read as
its last value.

msgspec keeps the last value of a repeated key and cannot be told otherwise, so the lines
are checked after they are decoded, at a cost that grows with the bytes, not the keys.
Each key is followed by a colon; what the records decoded gives a lower bound of the
distinct keys each line gave. Then, cheapest first:

- lines with no more colons than keys known give no key twice: one count over the
  bytes, the usual case;
- where no backslash escapes anything, each colon inside a string was decoded as one: the
  colons less those of the strings decoded (a time in an id) are the keys given;
- otherwise the colons outside strings are counted line by line, and only a line with more
  of them than keys known, or one this count cannot be sure of (a backslash, a nested
  object or array), is decoded again, key by key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from ..errors import InputError

_CHUNK = 1 << 20  # bytes counted at a time: small enough to stay in the processor's cache
_NEWLINE, _QUOTE, _COLON, _BACKSLASH, _BRACE, _BRACKET = b'\n":\\{['
_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def refuse_repeated_keys(data: bytes, lines: np.ndarray, source: str, *, known_total: int,
                         known_each: Callable[[], np.ndarray], colons_in_strings: Callable[[], int | None]) -> None:
    """Raise `FILE:LINE: KEY: given twice` for the first record of `data` that gives a key
    more than once. Record i was decoded from line `lines[i]` (1-based) and is known to
    have given at least `known_each()[i]` distinct keys, `known_total` in all;
    `colons_in_strings()` counts the colons of every string the records decoded (keys and
    values), or is None when they are not all known."""
    colons = _count(data, _COLON)
    if colons <= known_total:
        return
    if _count(data, _BACKSLASH) == 0:
        in_strings = colons_in_strings()
        if in_strings is not None and colons - in_strings <= known_total:
            return
    chars = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(chars == _NEWLINE)
    if ends.size == 0 or ends[-1] != len(data) - 1:
        ends = np.append(ends, len(data))
    keys, unsure = _keys_per_line(chars, ends)
    at = lines - 1
    for i in np.flatnonzero((keys[at] > known_each()) | unsure[at]).tolist():
        line = int(lines[i])
        start = int(ends[line - 2]) + 1 if line > 1 else 0
        text = data[start:int(ends[line - 1])]
        if not unsure[line - 1] and len(_KEYS.decode(text)) >= keys[line - 1]:
            continue  # as many distinct keys as keys given (a value was null, or its default)
        repeated = _repeated_key(text)
        if repeated is not None:
            raise InputError(source, line, repeated, "given twice")


def _count(data: bytes, char: int) -> int:
    chars = np.frombuffer(data, dtype=np.uint8)
    return sum(int(np.count_nonzero(chars[i:i + _CHUNK] == char)) for i in range(0, chars.size, _CHUNK))


def _keys_per_line(chars: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per line (ending at `ends`): the colons outside strings, which are its keys when it
    is one flat object; and whether that count is unsure (a backslash may escape a quote,
    a nested object or array has keys of its own)."""
    keys = np.zeros(ends.size, dtype=np.int64)
    unsure = np.zeros(ends.size, dtype=bool)
    first = 0
    while first < ends.size:
        last = min(int(np.searchsorted(ends, int(ends[first]) + _CHUNK)), ends.size - 1)
        start = int(ends[first - 1]) + 1 if first else 0
        part = chars[start:int(ends[last]) + 1]
        line_ends = ends[first:last + 1] - start
        n = line_ends.size
        # Quotes, colons and line ends, in order: a colon is inside a string when an odd
        # number of quotes comes before it on its line.
        at = np.flatnonzero((part == _QUOTE) | (part == _COLON) | (part == _NEWLINE))
        kind = part[at]
        quotes = np.cumsum(kind == _QUOTE)
        line_end = kind == _NEWLINE
        line = np.cumsum(line_end) - line_end
        before = np.concatenate(([0], quotes[line_end]))[line]
        outside = (kind == _COLON) & ((quotes - before) % 2 == 0)
        keys[first:last + 1] = np.bincount(line[outside], minlength=n)
        odd = np.flatnonzero((part == _BACKSLASH) | (part == _BRACKET))
        unsure[first + np.searchsorted(line_ends, odd)] = True
        braces = np.bincount(np.searchsorted(line_ends, np.flatnonzero(part == _BRACE)), minlength=n)
        unsure[first:last + 1] |= braces > 1
        first = last + 1
    return keys, unsure


def _repeated_key(text: bytes) -> str | None:
    """The first key the line's top-level object gives twice, or None."""
    try:
        pairs = json.loads(text, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return None
    seen: set[str] = set()
    for key, _ in pairs if isinstance(pairs, list) else ():
        if key in seen:
            return key
        seen.add(key)
    return None


def _pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return pairs

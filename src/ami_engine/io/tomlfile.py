"""Reading and writing TOML documents (configs, suggestions, profiles).

Reading: UTF-8 text, gzip-compressed or not (`.gz`), any problem an InputError naming the
file. Such a document is a few kilobytes: more than MAX_TOML_BYTES is refused unread, so
that a small gzip file holding gigabytes cannot fill memory. Writing: TOML has no null and
knows no NumPy, so values are made plain first.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import numpy as np
import tomli_w

from ..errors import InputError
from ._errors import BOM_PROBLEM, UTF8_BOM
from ._open import InMemoryFile, display_name, read_bytes, read_text

MAX_TOML_BYTES = 64 << 20
_TOML_KIND = "a config, profile or suggestion"
_BOM = UTF8_BOM.decode()


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document in `text`; `where` names it in errors."""
    if text.startswith(_BOM):  # TOML allows none; tomllib would say only "invalid statement"
        raise InputError(where, 1, None, BOM_PROBLEM)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, None, None, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(where, None, None, "not valid TOML: arrays or tables nested too deeply") from None


def read_toml_bytes(path: str | os.PathLike[str] | InMemoryFile) -> bytes:
    """The bytes of a TOML file (`-` = stdin, `.gz` decompressed), at most MAX_TOML_BYTES."""
    return read_bytes(path, limit=MAX_TOML_BYTES, what=_TOML_KIND)


def read_toml_text(path: str | os.PathLike[str] | InMemoryFile) -> str:
    """The text of a TOML file, as read_toml_bytes."""
    return read_text(path, limit=MAX_TOML_BYTES, what=_TOML_KIND)


def read_toml(path: str | os.PathLike[str] | InMemoryFile) -> dict[str, Any]:
    """The TOML document in the file `path` (`-` = stdin, `.gz` decompressed)."""
    return parse_toml(read_toml_text(path), display_name(path))


def plain_data(obj: Any, *, keep_none: bool = True) -> Any:
    """`obj` with private `_keys` dropped and NumPy scalars made plain (for JSON and TOML);
    None values are left out unless keep_none."""
    if isinstance(obj, dict):
        return {str(k): plain_data(v, keep_none=keep_none) for k, v in obj.items()
                if (keep_none or v is not None) and not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v, keep_none=keep_none) for v in obj if keep_none or v is not None]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def toml_ready(obj: Any) -> Any:
    """TOML has no null: `obj` as plain data with None values left out."""
    return plain_data(obj, keep_none=False)


def dumps_toml(doc: dict[str, Any]) -> str:
    return tomli_w.dumps(toml_ready(doc))

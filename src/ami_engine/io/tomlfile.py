"""Reading and writing TOML documents (configs, suggestions, profiles).

Reading: UTF-8 text, gzip-compressed or not (`.gz`), any problem an InputError naming the
file. Writing: TOML has no null and knows no NumPy, so values are made plain first.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

import numpy as np
import tomli_w

from ..errors import InputError
from ._open import InMemoryFile, display_name, read_text


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """The TOML document in `text`; `where` names it in errors."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(where, None, None, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise InputError(where, None, None, "not valid TOML: arrays or tables nested too deeply") from None


def read_toml(path: str | os.PathLike[str] | InMemoryFile) -> dict[str, Any]:
    """The TOML document in the file `path` (`-` = stdin, `.gz` decompressed)."""
    return parse_toml(read_text(path), display_name(path))


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

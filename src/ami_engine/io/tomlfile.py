"""Writing TOML documents (suggestions, profiles): TOML has no null and knows no NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np
import tomli_w


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

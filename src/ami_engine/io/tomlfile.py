"""Writing TOML documents (suggestions, profiles): TOML has no null and knows no NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np
import tomli_w


def toml_ready(obj: Any) -> Any:
    """`obj` with None values left out, private `_keys` dropped and NumPy scalars made plain."""
    if isinstance(obj, dict):
        return {str(k): toml_ready(v) for k, v in obj.items() if v is not None and not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [toml_ready(v) for v in obj if v is not None]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def dumps_toml(doc: dict[str, Any]) -> str:
    return tomli_w.dumps(toml_ready(doc))

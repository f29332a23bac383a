"""Numba's on-disk cache of the engine's compiled loops, kept only while the code they were
compiled from is unchanged.

Numba keys a cached function on its own source file. The kernels in _kernel.py inline the
rules of rules.py and scores.py and take the parameter offsets and reason codes as
constants, so a change to any of those (a checkout updated by `git pull` under an editable
install, say) would leave kernels compiled from the old rules in place, to be loaded and
run without a word. Here the key of every cached function of the engine also carries a
digest of all of it: the three source files and the constants. Any change compiles anew.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from numba.core import caching

from ..config.params import KERNEL_ROW, ROW_OFFSET
from ..io.traces import REASON_CODES

_HERE = Path(__file__).resolve().parent
_SOURCES = tuple(_HERE / name for name in ("_kernel.py", "rules.py", "scores.py"))


def _engine_digest() -> str:
    digest = hashlib.sha256()
    for path in _SOURCES:
        digest.update(path.read_bytes())
    digest.update(repr((sorted(ROW_OFFSET.items()), KERNEL_ROW, sorted(REASON_CODES.items()))).encode())
    return digest.hexdigest()


_DIGEST = _engine_digest()


def _engine_locator(base: type) -> type:
    """`base` (one of Numba's locators) for the engine's own files only, its key extended
    by the engine's digest."""

    class EngineLocator(base):  # type: ignore[misc, valid-type]
        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if Path(py_file).resolve() not in _SOURCES:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self) -> Any:
            return super().get_source_stamp(), _DIGEST

    EngineLocator.__name__ = EngineLocator.__qualname__ = f"Engine{base.__name__}"
    return EngineLocator


def install() -> None:
    """Put the engine's locators first in Numba's list (once): each declines every function
    but the engine's, which then go where Numba would put them (the folder NUMBA_CACHE_DIR
    names, else the source's __pycache__, else the user's cache folder)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    # The locators' names, public from Numba 0.61 on (with a leading underscore before).
    bases = [getattr(caching, name, None) or getattr(caching, f"_{name}", None)
             for name in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or None in bases:  # a Numba laid out otherwise: its own keys, as before
        return
    classes = impl._locator_classes
    if any(getattr(c, "_ami_engine", False) for c in classes):
        return
    ours = [_engine_locator(base) for base in bases]
    for cls in ours:
        cls._ami_engine = True
    classes[:0] = ours


install()  # on import, before the engine makes any compiled function

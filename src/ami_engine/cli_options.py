"""Checks of command-line option values, made before a command does any work.

Each option is checked by the name of its parameter, the same way in every command that
has it: `--seed` is a non-negative integer wherever it appears. A check returns nothing or
raises UsageError, whose one-line message names the option, what it must be and the value
given. Numbers must be finite: `nan` and `inf` are refused wherever a number is read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import UsageError
from .scenario import LEARN_BYTES_PER_STATE, MAX_STREAMS, SCENARIOS, check_scenario_size

INT64_MAX = 2**63 - 1
MAX_BUDGET = 1_000_000
MAX_BATCH = 100_000
MAX_POINTS_PER_AXIS = 100  # 100**7 grid points still index in 64 bits
_NAME_MAX = 255  # bytes in one file name on the usual file systems


Check = Callable[[Any], None]


def integer(lo: int, hi: int) -> Check:
    """An integer in [lo, hi]."""

    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"must be an integer in [{lo}, {hi}]")

    return check


def number(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A finite number in the interval from lo to hi (each end open or closed)."""
    left, right = "(" if lo_open or lo == -math.inf else "[", ")" if hi_open or hi == math.inf else "]"
    interval = f"{left}{lo:g}, {hi:g}{right}"

    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("must be a finite number" + ("" if interval == "(-inf, inf)" else f" in {interval}"))
        below = value <= lo if lo_open else value < lo
        above = value >= hi if hi_open else value > hi
        if below or above:
            raise ValueError(f"must be in {interval}")

    return check


def one_of(names: Iterable[str]) -> Check:
    allowed = tuple(names)

    def check(value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")

    return check


def scenario_size(value: Any) -> None:
    """States a run can decide."""
    integer(1, INT64_MAX)(value)
    check_scenario_size(value)


def learn_scenario_size(value: Any) -> None:
    """States a learning run can hold."""
    integer(1, INT64_MAX)(value)
    check_scenario_size(value, bytes_per_state=LEARN_BYTES_PER_STATE)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MIN_MEMORY = 1 << 20


def parse_size(text: str) -> int:
    """Bytes of a size such as 4G, 512M, 1.5G or 1048576 (K, M, G, T: powers of 1024; an
    optional trailing B); a ValueError when it is not one, or under 1M."""
    body = str(text).strip().upper()
    body = body[:-1] if body.endswith("B") and len(body) > 1 else body
    unit = body[-1:] if body[-1:] in _SIZE_UNITS and body[-1:] else ""
    number_text = body[: len(body) - len(unit)]
    try:
        amount = float(number_text)
    except ValueError:
        raise ValueError("must be a size such as 4G, 512M or a number of bytes") from None
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError("must be a positive size such as 4G or 512M")
    size = int(amount * _SIZE_UNITS[unit])
    if size < MIN_MEMORY:
        raise ValueError("must be at least 1M")
    return size


def memory_size(value: Any) -> None:
    parse_size(value)


def study_location(value: Any) -> None:
    """A file path, or a storage URL whose scheme names a known database."""
    text = str(value)
    if "://" not in text:
        output_path(text)
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(text).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError):
        scheme = text.split("://", 1)[0]
        raise ValueError(f"unknown storage URL scheme {scheme!r} (use a file path, sqlite:///FILE or "
                         "postgresql://...)") from None


def output_path(value: Any) -> None:
    """A file that can be written: not a folder, a name the file system can hold, in a
    folder that is one (or can be made)."""
    text = str(value)
    if text == "-":
        return
    path = Path(text)
    if len(os.fsencode(path.name)) > _NAME_MAX:
        raise ValueError(f"file name longer than {_NAME_MAX} bytes")
    try:
        if not path.name or path.is_dir():
            raise ValueError("is a folder; name a file")
        for folder in (path.parent, *path.parent.parents):
            if folder.exists():
                if not folder.is_dir():
                    raise ValueError(f"{folder} is not a folder")
                if not os.access(folder, os.W_OK | os.X_OK):
                    raise ValueError(f"folder {folder} is not writable")
                break
    except OSError as exc:
        raise ValueError((exc.strerror or str(exc)).lower()) from None


def cluster_spec(value: Any) -> None:
    """local:N or tcp://HOST:PORT, and Dask installed to use it."""
    from .cluster import ClusterError, ClusterSpec, require_dask

    try:
        ClusterSpec.parse(value)
        require_dask()
    except ClusterError as exc:
        raise ValueError(str(exc)) from None


def _strategies() -> tuple[str, ...]:
    from .learning.policy_optimizer import STRATEGIES

    return tuple(STRATEGIES)


def strategy(value: Any) -> None:
    one_of(_strategies())(value)


# Parameter name -> its check. The option is `--` + the name with `-` for `_`.
OPTION_CHECKS: dict[str, Check] = {
    "n": scenario_size,
    "seed": integer(0, INT64_MAX),
    "streams": integer(1, MAX_STREAMS),
    "scenario": one_of(SCENARIOS),
    "strategy": strategy,
    "budget": integer(1, MAX_BUDGET),
    "batch_size": integer(1, MAX_BATCH),
    "points_per_axis": integer(1, MAX_POINTS_PER_AXIS),
    "step_scale": number(0.0, 1.0, lo_open=True),
    "train_fraction": number(0.0, 1.0, lo_open=True, hi_open=True),
    "critical_factor": number(0.0),
    "critical_margin": number(),
    "top": integer(0, INT64_MAX),
    "line": integer(1, INT64_MAX),
    "study": study_location,
    "memory": memory_size,
    "out": output_path,
    "history": output_path,
    "report": output_path,
    "audit_log": output_path,
    "cluster": cluster_spec,
}


def option_name(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def check_options(values: Mapping[str, Any], checks: Mapping[str, Check] = OPTION_CHECKS) -> None:
    """Check every given option value that has a check; the first bad one raises UsageError."""
    for name, value in values.items():
        check = checks.get(name)
        if check is None or value is None:
            continue
        try:
            check(value)
        except ValueError as exc:
            from .io.files import show_value

            raise UsageError(f"{option_name(name)}: {exc} (got {show_value(value)})") from None

"""The AMI decision engine, model ami-v1 (docs/engine.md): each rule one function in
rules.py, the compiled paths in _kernel.py, the Python API in _batch.py."""

from . import _cache  # noqa: F401  (first: the engine's compiled functions are cached under its key)
from ._batch import (
    DIRECT_MAX_CONFIGS,
    ActionSpace,
    ScoreTable,
    decide,
    direct_sums,
    load_kernels,
    run,
    run_records,
    trace_records,
)
from ._kernel import REASONS
from .sums import EngineSums

__all__ = ["DIRECT_MAX_CONFIGS", "REASONS", "ActionSpace", "EngineSums", "ScoreTable", "decide", "direct_sums",
           "load_kernels", "run", "run_records", "trace_records"]

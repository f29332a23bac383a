"""The AMI decision engine, model ami-v1 (docs/engine.md)."""

from .batch import ActionSpace, ScoreTable, decide, run, run_records, trace_records
from .kernel import REASONS

__all__ = ["ActionSpace", "REASONS", "ScoreTable", "decide", "run", "run_records", "trace_records"]

"""The AMI decision engine, model ami-v1 (docs/engine.md)."""

from .batch import ActionSpace, ScoreTable, decide, run, run_records, trace_records
from .kernel import REASONS, TIE, confidence_and_margin, is_candidate  # the last three: the rules `explain` shows
from .sums import EngineSums

__all__ = ["REASONS", "TIE", "ActionSpace", "EngineSums", "ScoreTable", "confidence_and_margin", "decide",
           "is_candidate", "run", "run_records", "trace_records"]

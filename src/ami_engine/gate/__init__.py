"""The safety gate, its search-time constraints, and approval with an audit trail."""

from .approval import ApplyRefused, ApplyResult, apply_suggestion
from .constraints import CriticalFloor, regression_failures
from .gate import Check, GateReport, GateThresholds, gate_suggestion_file, run_gate

__all__ = [
    "ApplyRefused",
    "ApplyResult",
    "Check",
    "CriticalFloor",
    "GateReport",
    "GateThresholds",
    "apply_suggestion",
    "gate_suggestion_file",
    "regression_failures",
    "run_gate",
]

"""The safety gate, its search-time constraints, and approval with an audit trail."""

from .approval import ApplyRefused, ApplyResult, ApplyUsageError, apply_suggestion
from .constraints import CriticalFloor, regression_failures
from .gate import Check, GateReport, GateThresholds, gate_suggestion, gate_suggestion_file, run_gate
from .yardstick import BaselineRefused

__all__ = [
    "ApplyRefused",
    "ApplyResult",
    "ApplyUsageError",
    "BaselineRefused",
    "Check",
    "CriticalFloor",
    "GateReport",
    "GateThresholds",
    "apply_suggestion",
    "gate_suggestion",
    "gate_suggestion_file",
    "regression_failures",
    "run_gate",
]

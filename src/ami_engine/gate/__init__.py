"""The safety gate: its checks, its verdict, the gate on a suggestion, and approval with an audit trail."""

from .approval import ApplyRefused, ApplyResult, ApplyUsageError, apply_suggestion
from .constraints import CriticalFloor, regression_failures
from .gate import GateThresholds, run_gate
from .suggestions import gate_suggestion, gate_suggestion_file
from .verdict import Check, GateReport
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

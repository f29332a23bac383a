"""The safety gate, its search-time constraints, and approval with an audit trail."""

from .constraints import CriticalFloor, regression_failures
from .gate import Check, GateReport, gate_suggestion_file, run_gate

__all__ = ["Check", "CriticalFloor", "GateReport", "gate_suggestion_file", "regression_failures", "run_gate"]

"""The gate's critical floor and regression suite: the search-time constraints of learning
(learning/constraints.py), which the gate applies to one config."""

from ..learning.constraints import CriticalFloor, critical_tallies, regression_failures

__all__ = ["CriticalFloor", "critical_tallies", "regression_failures"]

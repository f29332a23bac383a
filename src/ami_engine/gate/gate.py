"""The safety gate (docs/gate.md): ACCEPT or REJECT a config against a baseline, check by check.

Checks, in order: bounds, invariants, determinism, heldout_loss, critical_floor,
regression, certificate (checks.py). Every check reports its figure and its threshold, so
that a reviewer sees why a config passed or failed; the verdict (verdict.py) is ACCEPT only
when every check passes. On a suggestion file (suggestions.py) the baseline is first judged
against a trusted yardstick (yardstick.py): a suggestion never chooses what its hard
floors are compared with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import Config
from ..engine import run
from ..io.stateset import StateSet
from ..learning.bounds import DEFAULT_DELTA, check_delta
from ..learning.constraints import CriticalFloor
from ..learning.loss import LossWeights
from ..suites import chaos_suite
from .certificate import decide_held_out
from .checks import (
    CHECK_NAMES,
    check_bounds,
    check_certificate,
    check_critical_floor,
    check_determinism,
    check_heldout_loss,
    check_invariants,
    check_regression,
)
from .verdict import ACCEPT, REJECT, Check, GateReport

DEFAULT_CRITICAL, DEFAULT_WEIGHTS = CriticalFloor(), LossWeights()


@dataclass(frozen=True)
class GateThresholds:
    """The gate's settable thresholds. The chaos suite is not among them: it always runs.

    critical: the critical floor (factor 0 turns it off; its figures are still shown).
    heldout_tolerance: how much higher than the baseline's the held-out L may be.
    delta: the certificate's bounds hold at confidence 1 - delta.
    """

    critical: CriticalFloor = DEFAULT_CRITICAL
    heldout_tolerance: float = 0.0
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        factor, margin, tol = self.critical.factor, self.critical.margin, self.heldout_tolerance
        if not (math.isfinite(factor) and factor >= 0):
            raise ValueError(f"critical factor: must be a finite number >= 0, got {factor!r}")
        if not math.isfinite(margin):
            raise ValueError(f"critical margin: must be a finite number, got {margin!r}")
        if not (math.isfinite(tol) and tol >= 0):
            raise ValueError(f"held-out tolerance: must be a finite number >= 0, got {tol!r}")
        check_delta(self.delta)


def run_gate(config: Config, baseline: Config, *, held_out: StateSet | None = None,
             regression: StateSet | None = None, critical: CriticalFloor = DEFAULT_CRITICAL,
             weights: LossWeights = DEFAULT_WEIGHTS, heldout_tolerance: float = 0.0,
             delta: float = DEFAULT_DELTA, observe=None) -> GateReport:
    """Every check of the gate on one config; ACCEPT only when all pass. `observe(positions,
    columns)`: shown the held-out decisions of [config, baseline] part by part, as they are
    made (learning tallies the needless fail-safes from them)."""
    GateThresholds(critical, heldout_tolerance, delta)  # the thresholds are checked once, here
    chaos_columns = run(chaos_suite(), config)  # shared by the invariants and the determinism check
    # One run of both configs over the held-out data, shared by the held-out loss and the certificate.
    decided = None
    if held_out is not None and len(held_out):
        decided = decide_held_out(held_out, (config, baseline), weights, observe=observe)
    checks = (
        check_bounds(config, baseline),
        check_invariants(config, chaos_columns),
        check_determinism(config, chaos_columns),
        check_heldout_loss(config, baseline, held_out, weights, heldout_tolerance, decided),
        check_critical_floor(config, baseline, critical),
        check_regression(config, regression),
        check_certificate(config, baseline, held_out, weights, critical, delta, decided),
    )
    return GateReport(config.config_id, baseline.config_id, checks,
                      heldout_sums=None if decided is None else decided.sums)


__all__ = [
    "ACCEPT", "CHECK_NAMES", "DEFAULT_CRITICAL", "DEFAULT_WEIGHTS", "REJECT", "Check", "GateReport", "GateThresholds",
    "check_bounds", "check_certificate", "check_critical_floor", "check_determinism", "check_heldout_loss",
    "check_invariants", "check_regression", "run_gate",
]

"""The result of a learning run: its status, the figures of the suggestion against the
baseline (training, held-out, each scenario profile), the figures it makes worse, the
needless fail-safes it removes, and the suggestion document with all of them in [meta]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .. import ENGINE_MODEL, __version__
from ..config import Config
from ..engine import ScoreTable
from ..io.stateset import StateSet
from ..suites import profile_suite
from .bounds import promise
from .loss import LossWeights
from .needless import needless_fail_safes
from .settings import MAX_GATE_TRIES, LearnSettings

ACCEPTED, REJECTED, NO_IMPROVEMENT, NOT_GATED = "accepted", "rejected", "no improvement", "not gated"


@dataclass
class LearnResult:
    suggestion: Config
    suggestion_toml: dict[str, Any]
    history: list[dict[str, Any]]
    gate: Any  # GateReport
    accepted: bool
    needless: dict[str, Any]
    summary: dict[str, Any]
    held_out: StateSet
    status: str = ACCEPTED
    grid_note: str | None = None
    # Large Parquet traces: held_out keeps no t and id; this gives them for held-out positions.
    held_out_keys: Callable[[np.ndarray], StateSet] | None = field(default=None, repr=False)


def _scenario_figures(baseline: Config, suggestion: Config, weights: LossWeights) -> dict[str, Any]:
    out = {}
    for name, states in profile_suite().items():
        table = ScoreTable(states, baseline)
        sums = table.evaluate([baseline, suggestion])
        entry = {}
        for label, row in zip(("baseline", "suggestion"), sums):
            entry[label] = {**row.figures(weights), "mean_H": float(row.mean_H)}
        out[name] = entry
    return out


def build_result(data, baseline, settings, split, space, chosen, sums, held_out, history, gate_report, status,
                 note=None, racing=None, needless=None) -> LearnResult:
    """The suggestion document and summary; `sums` holds the EngineSums of [baseline, chosen]
    on the "train" and "heldout" data; `needless`: the chosen config's needless fail-safes
    over all the states, when the caller has them."""
    accepted = status == ACCEPTED
    w = settings.weights
    metrics = {part: {"baseline": rows[0].figures(w), "suggestion": rows[1].figures(w)}
               for part, rows in sums.items()}
    if needless is None:
        needless = needless_fail_safes(data.states, baseline, chosen)
    row = space.from_dict(chosen.learned())
    meta: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool_version": __version__,
        "engine_model": ENGINE_MODEL,
        "baseline": baseline.source,
        "baseline_config_id": baseline.config_id,
        "config_id": chosen.config_id,
        "seed": settings.seed,
        "strategy": settings.strategy,
        "strategy_options": dict(settings.strategy_options),
        "budget": settings.budget,
        "batch_size": settings.batch_size,
        "loss_weights": w.as_list(),
        "params_on_bound": space.on_bound(row),
        "baseline_params": baseline.learned(),
        "bounds": {k: list(v) for k, v in space.bounds.items()},
        "critical_floor": {"factor": settings.critical.factor, "margin": settings.critical.margin},
        "data": data.meta(),
        "split": split.meta(),
        "metrics": metrics,
        "scenarios": _scenario_figures(baseline, chosen, w),
        "needless": {k: v for k, v in needless.items() if not k.startswith("_")},
    }
    meta["status"] = status
    if racing is not None:
        meta["racing"] = racing
    if note is not None:
        meta["strategy_note"] = note
    meta["worse"] = worse_figures(metrics, meta["scenarios"])
    if gate_report is not None:
        meta["gate"] = gate_report.to_meta()
        certificate = _certificate_meta(gate_report, settings)
        if certificate is not None:
            meta["certificate"] = certificate
    doc: dict[str, Any] = {"extends": baseline.source}
    doc.update(chosen.learned())
    doc["meta"] = meta
    summary = {"accepted": accepted, "status": status, "metrics": metrics, "needless": meta["needless"]}
    keys = None
    if data.keys is not None:
        def keys(positions: np.ndarray) -> StateSet:
            return data.subset(split.held_out[positions])
    return LearnResult(chosen, doc, history, gate_report, accepted, needless, summary, held_out, status,
                       note, held_out_keys=keys)


def _certificate_meta(gate_report, settings: LearnSettings) -> dict[str, Any] | None:
    """The certificate check's figure, its verdict and its promise in words, for [meta]."""
    try:
        check = gate_report.check("certificate")
    except KeyError:
        return None
    out = {**check.figure, "passed": check.passed, "bonferroni_finalists": MAX_GATE_TRIES,
           "family_delta": settings.delta}
    if check.passed:
        out["promise"] = promise(check.figure, settings.delta)
    return out


# The figures of a data set that learning may make worse (higher); each is compared per data set.
_WATCHED = ("L", "fail_safe_rate", "mean_cus", "clamp_distortion")


def worse_figures(metrics: dict[str, Any], scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure that is higher under the suggestion than under the baseline, on the
    training data, the held-out data and each scenario profile (mean H too, on those)."""
    out = []
    parts = [(part, m) for part, m in metrics.items()] + [(f"{name} profile", m) for name, m in scenarios.items()]
    for label, m in parts:
        names = _WATCHED + (("mean_H",) if "mean_H" in m["baseline"] else ())
        for name in names:
            before, after = m["baseline"][name], m["suggestion"][name]
            if after > before + 1e-12:
                out.append({"data": label, "figure": name, "baseline": before, "suggestion": after})
    return out

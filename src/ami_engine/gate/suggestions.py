"""The gate on a suggestion: the config and [meta] of a suggestion read once, its baseline
judged against a trusted yardstick (yardstick.py) first, its held-out data, regression
suite and loss weights rebuilt from [meta]."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Config, load_config, parse_config
from ..config.loader import one_read_per_file
from ..io.files import InputError
from ..io.states import read_states
from ..io.stateset import StateSet
from ..learning.constraints import CriticalFloor
from ..learning.loss import LossWeights
from ..suggestion import Suggestion, SuggestionError
from .gate import DEFAULT_CRITICAL, GateThresholds, run_gate
from .verdict import GateReport
from .yardstick import check_baseline


def gate_suggestion(suggestion: Suggestion, baseline: str | Config | None = None,
                    regression: str | StateSet | None = None, *, thresholds: GateThresholds | None = None,
                    weights: LossWeights | None = None, critical: CriticalFloor | None = None,
                    data: str | Path | None = None) -> GateReport:
    """The gate on a suggestion (or any config) already read: its config and its [meta]
    come from the bytes read once (suggestion.py); the file is not opened again.

    The baseline is the suggestion's `extends` unless given; either way it is judged
    against a trusted yardstick first (yardstick.py) and refused (BaselineRefused) when it
    weakens a parameter learning never touches. The held-out data is rebuilt from
    `[meta.data]` and `[meta.split]` when the suggestion has them (`data`: a moved copy of
    its data file, accepted only with the same SHA-256), else the held-out check is not
    applicable; the regression suite is the one given, else the one the suggestion was
    learned with; the loss weights are those of `[meta] loss_weights` unless given. The
    thresholds are the gate's own, never read from the file. `critical` sets the critical
    floor alone, for callers that have no other threshold to set.
    """
    if critical is not None and thresholds is not None:
        raise ValueError("give the critical floor either in thresholds or as critical, not both")
    with one_read_per_file():
        return _gate_suggestion(suggestion, baseline, regression, thresholds or GateThresholds(critical or
                                DEFAULT_CRITICAL), weights, data)


def _gate_suggestion(suggestion: Suggestion, baseline: str | Config | None, regression: str | StateSet | None,
                     thresholds: GateThresholds, weights: LossWeights | None, data: str | Path | None) -> GateReport:
    config, meta = suggestion.config, dict(suggestion.meta)
    if baseline is None:
        base = suggestion.baseline()
        _same_baseline(base, meta, suggestion.name)
    else:
        base = baseline if isinstance(baseline, Config) else load_config(baseline)
    # The floor on the critical set is the stricter of the baseline's and its yardstick's.
    critical = dataclasses.replace(thresholds.critical, anchor=check_baseline(base).config)
    if isinstance(regression, (str, Path)):
        regression = read_states(regression, allow_expect_level=True)
    elif regression is None:
        regression = suggestion.regression()
    return run_gate(config, base, held_out=suggestion.held_out(data), regression=regression,
                    critical=critical, weights=weights or _weights_from_meta(meta, suggestion.name),
                    heldout_tolerance=thresholds.heldout_tolerance, delta=thresholds.delta)


def gate_suggestion_file(path: str | Path, baseline: str | Config | None = None,
                         regression: str | StateSet | None = None, *, thresholds: GateThresholds | None = None,
                         weights: LossWeights | None = None, critical: CriticalFloor | None = None,
                         data: str | Path | None = None) -> GateReport:
    """The gate on a suggestion file (see gate_suggestion), read once; so is every config
    file it depends on (one_read_per_file)."""
    with one_read_per_file():
        return gate_suggestion(Suggestion.read(path), baseline, regression, thresholds=thresholds,
                               weights=weights, critical=critical, data=data)


def suggestion_baseline(config: Config, where: str) -> Config:
    """The config the file at `where` extends (a relative path read from the file's folder)."""
    return parse_config({"extends": config.extends or "base"}, where)


def _same_baseline(base: Config, meta: Mapping[str, Any], where: str) -> None:
    """A suggestion's `extends` must still give the baseline it records it was learned and
    gated against; a file that extends another config than that is refused, not judged
    against what it now names."""
    recorded = meta.get("baseline_config_id")
    if recorded is not None and recorded != base.config_id:
        raise SuggestionError(f"{where}: extends {base.source!r} gives config_id {base.config_id}, but the "
                              f"suggestion was learned against {recorded} ([meta] baseline_config_id); pass "
                              "--baseline to judge it against another config")


def _weights_from_meta(meta: Mapping[str, Any], where: str) -> LossWeights:
    raw = meta.get("loss_weights")
    if raw is None:
        return LossWeights()
    try:
        return LossWeights.from_list(raw)
    except (TypeError, ValueError) as exc:
        raise InputError(where, None, "meta.loss_weights", f"three or four numbers in [0, 1e6], not all of the "
                         f"first three 0 ({exc})", raw) from None

"""A realistic, synthetic input for the HTML report: suggestion, history and traces.

`sample_report_inputs()` returns keyword arguments for `render_report`. The numbers are
made up but shaped like the real thing: a suggestion of the `base` profile learned from a
scenario, twelve optimisation steps, and DecisionTraces of the suggestion whose levels,
clamps and drift follow the rules of docs/engine.md §8-11 closely enough to look right.
Everything is seeded, so equal arguments give equal inputs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ami_engine.config import LEARNED_BOUNDS, LEARNED_PARAMS, load_config
from ami_engine.io.stateset import STATE_FIELDS

BASE = load_config("base")
BASELINE_PARAMS = {name: BASE.values[name] for name in LEARNED_PARAMS}
SUGGESTED_PARAMS = {
    "J_MIN": 0.7825, "H_MAX": 0.3610, "SOFT_CLAMP_ALPHA": 0.5210, "SOFT_CLAMP_BETA": 0.4480,
    "SOFT_CLAMP_GAMMA": 0.2950, "DELTA_CUS_THRESHOLD": 0.25, "CUS_MEAN_THRESHOLD": 0.85,
}
BOUNDS = {name: list(bounds) for name, bounds in LEARNED_BOUNDS.items()}
SAFE_ACTION = list(BASE.values["SAFE_ACTION"])
CONFIG_ID = "3f9c2a71d04b8e65"
BASELINE_CONFIG_ID = BASE.config_id
WEIGHTS = (1.5, 1.0, 0.5)


def _metrics(fail_safe: float, l1: float, mean_cus: float, distortion: float, n: int, **extra: float) -> dict:
    loss = WEIGHTS[0] * fail_safe + WEIGHTS[1] * mean_cus + WEIGHTS[2] * distortion
    return {
        "L": round(loss, 6), "fail_safe_rate": fail_safe, "mean_cus": mean_cus, "clamp_distortion": distortion,
        "level_rates": [round(1 - fail_safe - l1, 6), l1, fail_safe], "human_escalation_rate": fail_safe, "n": n,
        **extra,
    }


def _histograms(states: np.ndarray, needless: np.ndarray) -> dict:
    edges = [round(x, 2) for x in np.linspace(0, 1, 11)]
    out = {}
    for i, field in enumerate(STATE_FIELDS):
        out[field] = {
            "edges": edges,
            "all": [int(c) for c in np.histogram(states[:, i], bins=edges)[0]],
            "needless": [int(c) for c in np.histogram(states[needless, i], bins=edges)[0]],
        }
    return out


def _traces(rng: np.random.Generator, n_streams: int, per_stream: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """DecisionTraces of the suggestion, the states behind them, and which were needless fail-safes."""
    p = SUGGESTED_PARAMS
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    records, all_states, needless = [], [], []
    for s in range(n_streams):
        # A slow random walk per stream, so that timelines show drift episodes.
        centre = rng.uniform(0.3, 0.7, size=9)
        window: list[float] = []
        previous = None
        for i in range(per_stream):
            centre = np.clip(centre + rng.normal(0, 0.02, size=9), 0.05, 0.95)
            state = np.clip(centre + rng.normal(0, 0.12, size=9), 0, 1)
            fields = dict(zip(STATE_FIELDS, state))
            j = float(np.clip(0.45 + 0.5 * fields["justice"] + rng.normal(0, 0.06), 0, 1))
            h = float(np.clip(0.05 + 0.55 * fields["harm_sens"] * fields["risk"] + rng.normal(0, 0.05), 0, 1))
            confidence = float(np.clip(0.95 - 0.9 * fields["risk"] * (1 - fields["context"]) + rng.normal(0, 0.1),
                                       0, 1))
            cus_raw = float(np.clip(0.55 * (1 - confidence) + 0.45 * fields["risk"] + rng.normal(0, 0.05), 0, 1))
            raw = [float(v) for v in rng.choice(grid, size=4)]
            window = (window + [cus_raw])[-10:]
            delta = None if previous is None else cus_raw - previous
            previous = cus_raw
            cus_mean = sum(window) / len(window)
            baseline_l2 = j < BASELINE_PARAMS["J_MIN"] - 0.1 or confidence < 0.3
            if j < 0.70:
                level, reason = 2, "j_critical"
            elif h > 0.60:
                level, reason = 2, "h_critical"
            elif confidence < 0.2:
                level, reason = 2, "low_confidence"
            elif rng.random() < 0.02:
                level, reason = 2, "divergence"
            elif rng.random() < 0.25:
                level, reason = 1, "no_clear_leader"
            elif (delta is not None and delta > p["DELTA_CUS_THRESHOLD"]) or cus_mean > p["CUS_MEAN_THRESHOLD"]:
                level, reason = 1, "drift"
            else:
                level, reason = 0, "normal"
            clamp = level == 1
            if level == 2:
                final = list(SAFE_ACTION)
                j, h = 0.72 + 0.1 * fields["justice"], 0.04 + 0.05 * fields["harm_sens"]
            elif clamp:
                final = [
                    max(0.0, raw[0] * (1 - p["SOFT_CLAMP_ALPHA"] * cus_raw)), raw[1],
                    max(0.0, raw[2] * (1 - p["SOFT_CLAMP_BETA"] * cus_raw)),
                    min(1.0, raw[3] + p["SOFT_CLAMP_GAMMA"] * cus_raw),
                ]
            else:
                final = list(raw)
            after = min(1.0, confidence + 0.05) if clamp else confidence
            records.append({
                "t": s * per_stream + i,
                "cus": round(cus_raw * (0.9 if clamp else 1.0), 6),
                "delta_cus": None if delta is None else round(delta, 6),
                "cus_mean": round(cus_mean, 6),
                "raw_action": raw,
                "final_action": [round(v, 6) for v in final],
                "soft_clamp": clamp,
                "level": level,
                "confidence": round(after, 6),
                "delta_confidence": round(after - confidence, 6) if clamp else None,
                "human_escalation": level == 2,
                "chaos": False,
                "model": "ami-v1",
                "reason": reason,
                "cus_raw": round(cus_raw, 6),
                "W": round(0.5 + 0.3 * j, 6), "J": round(j, 6), "H": round(h, 6), "C": round(0.5 + 0.1 * h, 6),
                "stream": f"s{s}",
                "id": f"s{s}-{i}",
                "state": {k: round(float(v), 6) for k, v in fields.items()},
                "config_id": CONFIG_ID,
            })
            all_states.append(state)
            needless.append(baseline_l2 and level < 2)
    return records, np.array(all_states), np.array(needless)


def _history(rng: np.random.Generator, steps: int) -> list[dict]:
    history = []
    loss, heldout = 2.118, 2.141
    params = dict(BASELINE_PARAMS)
    for step in range(steps):
        if step:
            share = min(1.0, step / max(1, steps - 3))
            for name in params:  # the best config so far moves in jumps towards the suggestion
                if rng.random() < 0.6:
                    params[name] = round(BASELINE_PARAMS[name] + share * (SUGGESTED_PARAMS[name]
                                                                          - BASELINE_PARAMS[name]), 4)
            loss = min(loss, round(2.118 - 0.364 * share + rng.normal(0, 0.004), 4))
            heldout = round(2.141 - 0.352 * share + rng.normal(0, 0.01), 4)
        fail_safe = round(0.49 - 0.105 * (2.118 - loss) / 0.364, 4)
        history.append({
            "step": step, "L": loss, "fail_safe_rate": fail_safe,
            "mean_cus": round(0.82 - 0.06 * (2.118 - loss) / 0.364, 4),
            "clamp_distortion": round(0.061 - 0.013 * (2.118 - loss) / 0.364, 4),
            **params,
            "heldout_L": heldout, "heldout_fail_safe_rate": round(fail_safe + 0.006, 4),
            "heldout_mean_cus": round(0.823 - 0.058 * (2.141 - heldout) / 0.352, 4),
            "heldout_clamp_distortion": round(0.062 - 0.012 * (2.141 - heldout) / 0.352, 4),
        })
    for record in history[-3:]:  # the search found the suggestion three steps before its end
        record.update(SUGGESTED_PARAMS)
    return history


def sample_report_inputs(n_streams: int = 4, per_stream: int = 500, steps: int = 12, seed: int = 7) -> dict[str, Any]:
    """Keyword arguments for render_report: suggestion (parsed TOML), history and traces."""
    rng = np.random.default_rng(seed)
    traces, states, needless = _traces(rng, n_streams, per_stream)
    history = _history(rng, steps)
    n = len(traces)
    n_needless = int(needless.sum())
    reasons = {"j_critical": 0, "h_critical": 0, "low_confidence": 0, "divergence": 0, "no_valid_candidate": 0}
    split = rng.multinomial(n_needless, [0.0, 0.0, 0.71, 0.29, 0.0])
    reasons.update({k: int(v) for k, v in zip(reasons, split)})
    levels = np.array([r["level"] for r in traces])
    new_l0 = int(np.sum(needless & (levels == 0)))
    means = {f: (states[:, i].mean(), states[needless, i].mean()) for i, f in enumerate(STATE_FIELDS)}
    suggestion = {
        "extends": "base",
        **SUGGESTED_PARAMS,
        "meta": {
            "created": "2025-01-15T10:42:07Z",
            "tool_version": "0.1.0",
            "engine_model": "ami-v1",
            "baseline": "base",
            "baseline_config_id": BASELINE_CONFIG_ID,
            "config_id": CONFIG_ID,
            "seed": seed,
            "strategy": "tpe",
            "strategy_options": {"n_startup": 24},
            "budget": 240,
            "batch_size": 24,
            "loss_weights": list(WEIGHTS),
            "params_on_bound": ["DELTA_CUS_THRESHOLD", "CUS_MEAN_THRESHOLD"],
            "baseline_params": dict(BASELINE_PARAMS),
            "bounds": copy.deepcopy(BOUNDS),
            "critical_floor": {"factor": 0.25, "margin": 0.02},
            "data": {
                "source": "scenario", "description": "curriculum, n=2000, seed 7",
                "sha256": "9d5e3f0c1a7b2d4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6",
                "n_records": n, "n_streams": n_streams,
            },
            "split": {"method": "by_stream" if n_streams >= 5 else "in_time", "train_fraction": 0.8, "seed": seed,
                      "n_train": int(0.8 * n), "n_heldout": n - int(0.8 * n)},
            "metrics": {
                "train": {"baseline": _metrics(0.49, 0.22, 0.82, 0.061, int(0.8 * n)),
                          "suggestion": _metrics(0.385, 0.27, 0.76, 0.048, int(0.8 * n))},
                "heldout": {"baseline": _metrics(0.496, 0.21, 0.823, 0.062, n - int(0.8 * n)),
                            "suggestion": _metrics(0.391, 0.26, 0.765, 0.05, n - int(0.8 * n))},
            },
            "scenarios": {
                "safe": {"baseline": _metrics(0.0, 0.37, 0.31, 0.071, 2000, mean_H=0.12),
                         "suggestion": _metrics(0.0, 0.33, 0.30, 0.052, 2000, mean_H=0.121)},
                "balanced": {"baseline": _metrics(0.18, 0.18, 0.52, 0.043, 2000, mean_H=0.19),
                             "suggestion": _metrics(0.12, 0.21, 0.50, 0.036, 2000, mean_H=0.196)},
                "critical": {"baseline": _metrics(0.96, 0.04, 0.91, 0.007, 2000, mean_H=0.083),
                             "suggestion": _metrics(0.93, 0.06, 0.90, 0.008, 2000, mean_H=0.088)},
                "chaos": {"baseline": _metrics(0.64, 0.31, 0.74, 0.05, 2000, mean_H=0.16),
                          "suggestion": _metrics(0.55, 0.36, 0.72, 0.041, 2000, mean_H=0.165)},
            },
            "gate": {
                "verdict": "ACCEPT",
                "checks": [
                    {"name": "bounds", "passed": True, "figure": 0, "threshold": "== 0 outside",
                     "detail": "7 learned parameters inside their bounds; every other parameter as in base"},
                    {"name": "invariants", "passed": True, "figure": 0, "threshold": "== 0 violations",
                     "detail": "20,000 chaos states (4 seeds x 8 streams) and 4 scenario profiles"},
                    {"name": "determinism", "passed": True, "figure": "identical", "threshold": "byte-identical",
                     "detail": "two runs of the chaos suite, SHA-256 equal"},
                    {"name": "heldout_loss", "passed": True, "figure": 1.7929, "threshold": "<= 2.1441",
                     "detail": "L on 400 held-out records"},
                    {"name": "critical_floor_fail_safe", "passed": True, "figure": 0.93, "threshold": ">= 0.2400",
                     "detail": "0.25 x baseline fail-safe rate 0.96 on critical (2,000 states, seed 6001)"},
                    {"name": "critical_floor_mean_H", "passed": True, "figure": 0.088, "threshold": "<= 0.1030",
                     "detail": "baseline mean H 0.083 + margin 0.02"},
                    {"name": "regression", "passed": None, "figure": "n/a", "threshold": "every level >= expected",
                     "detail": "no regression file given"},
                ],
            },
            "needless": {
                "count": n_needless,
                "baseline_l2": int(n_needless + np.sum(levels == 2)),
                "n": n,
                "by_reason": reasons,
                "new_level": {"0": new_l0, "1": n_needless - new_l0},
                "fields": [{"field": f, "mean_needless": round(float(m[1]), 4), "mean_all": round(float(m[0]), 4),
                            "mean_still_l2": round(float(m[0]) + 0.05, 4)} for f, m in means.items()],
                "histograms": _histograms(states, needless),
                "summary": [
                    f"{f.replace('_', ' ')} is {'low' if m[1] < m[0] else 'high'} (mean {m[1]:.2f} vs {m[0]:.2f} "
                    "over all states)"
                    for f, m in sorted(means.items(), key=lambda kv: -abs(kv[1][1] - kv[1][0]))[:3]
                ],
            },
        },
    }
    return {"suggestion": suggestion, "history": history, "traces": traces}

"""The engine's Python API: one config over a state set, many configs over a ScoreTable,
and a single decision. All paths run the same compiled rules (kernel.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config, ConfigError
from ..io.stateset import StateSet
from ..io.traces import TraceColumns
from ..io.traces import trace_records as _io_trace_records
from . import kernel
from .scores import action_grid

BLOCK = 256  # states per parallel work item in the pre-decision pass
_PRE_BYTES_PER_DECISION = 4 + 1 + 1 + 8 * kernel.PRE_FLOATS


@dataclass(frozen=True)
class ActionSpace:
    """The action grid of a config and what the kernels need to score it."""

    actions: np.ndarray  # (A, 4) in grid order
    comp_of: np.ndarray  # (A,) index of each action's compassion value in the grid
    comp_values: np.ndarray  # (G,)
    score_weights: np.ndarray  # (4,)

    @classmethod
    def of(cls, config: Config) -> ActionSpace:
        grid = np.asarray(config["ACTION_GRID"], dtype=np.float64)
        g = grid.shape[0]
        actions = action_grid(config["ACTION_GRID"])
        comp_of = (np.arange(actions.shape[0]) // (g * g)) % g
        return cls(actions, comp_of.astype(np.int64), grid, np.asarray(config["SCORE_WEIGHTS"], dtype=np.float64))

    def key(self) -> tuple:
        return (tuple(self.comp_values), tuple(self.score_weights))


def _stream_layout(states: StateSet) -> tuple[np.ndarray, np.ndarray]:
    """State indices grouped by stream (input order kept inside a stream), and offsets."""
    codes, n_streams = states.stream_codes()
    order = np.argsort(codes, kind="stable").astype(np.int64)
    ptr = np.zeros(n_streams + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(codes, minlength=n_streams))
    return order, ptr


def _config_matrix(configs: Sequence[Config]) -> np.ndarray:
    return np.ascontiguousarray([c.kernel_row() for c in configs], dtype=np.float64)


def _trace_times(states: StateSet) -> list[Any]:
    return [i if t is None else t for i, t in enumerate(states.t)]


class _Pre:
    """Pre-decision arrays for a chunk of configs."""

    def __init__(self, n_configs: int, n_states: int) -> None:
        self.a = np.empty((n_configs, n_states), dtype=np.int32)
        self.level = np.empty((n_configs, n_states), dtype=np.int8)
        self.reason = np.empty((n_configs, n_states), dtype=np.int8)
        self.f = np.empty((n_configs, n_states, kernel.PRE_FLOATS), dtype=np.float64)

    def args(self) -> tuple:
        return self.a, self.level, self.reason, self.f


def _finish(states: StateSet, space: ActionSpace, cfgs: np.ndarray, layout, pre: _Pre, full: bool):
    order, ptr = layout
    n_cfg, n = cfgs.shape[0], len(states)
    shape = (n_cfg, n) if full else (0, 0)
    out = dict(
        cus=np.empty(shape),
        delta_cus=np.empty(shape),
        cus_mean=np.empty(shape),
        final=np.empty((*shape, 4)),
        soft=np.empty(shape, dtype=np.bool_),
        level=np.empty(shape, dtype=np.int8),
        conf=np.empty(shape),
        dconf=np.empty(shape),
        reason=np.empty(shape, dtype=np.int8),
        scores=np.empty((*shape, 4)),
    )
    n_streams = ptr.shape[0] - 1
    sums = np.zeros((n_cfg * n_streams, kernel.N_SUMS))
    kernel.finish(states.values, space.actions, cfgs, order, ptr, *pre.args(), full, *out.values(), sums)
    return out, sums.reshape(n_cfg, n_streams, kernel.N_SUMS).sum(axis=1)


def _columns(states: StateSet, space: ActionSpace, pre: _Pre, out: dict, c: int) -> TraceColumns:
    level = out["level"][c]
    return TraceColumns(
        t=_trace_times(states),
        cus=out["cus"][c],
        cus_raw=pre.f[c, :, 2].copy(),
        delta_cus=out["delta_cus"][c],
        cus_mean=out["cus_mean"][c],
        confidence=out["conf"][c],
        delta_confidence=out["dconf"][c],
        raw_action=space.actions[pre.a[c]],
        final_action=out["final"][c],
        soft_clamp=out["soft"][c],
        human_escalation=level == 2,
        level=level,
        reason=out["reason"][c],
        W=out["scores"][c, :, 0],
        J=out["scores"][c, :, 1],
        H=out["scores"][c, :, 2],
        C=out["scores"][c, :, 3],
    )


def run(states: StateSet, config: Config) -> TraceColumns:
    """Decide every state under one config (the direct path: no per-state sort of all actions)."""
    space = ActionSpace.of(config)
    cfgs = _config_matrix([config])
    pre = _Pre(1, len(states))
    kernel.pre_direct(states.values, space.actions, space.comp_of, space.comp_values, space.score_weights,
                      cfgs[0], BLOCK, *pre.args())
    out, _ = _finish(states, space, cfgs, _stream_layout(states), pre, full=True)
    return _columns(states, space, pre, out, 0)


class ScoreTable:
    """Every action's S, J, H for every state, sorted by S once; shared by all configs that
    have the same ACTION_GRID and SCORE_WEIGHTS (ENGINE.md section 3: scores never depend
    on thresholds). Memory: about 26 bytes x 625 actions per state."""

    def __init__(self, states: StateSet, config: Config) -> None:
        self.states = states
        self.space = ActionSpace.of(config)
        n, a, g = len(states), self.space.actions.shape[0], self.space.comp_values.shape[0]
        self.s = np.empty((n, a))
        self.j = np.empty((n, a))
        self.h = np.empty((n, a))
        self.a = np.empty((n, a), dtype=np.int16)
        self.c = np.empty((n, g))
        self.fallback = np.empty(n, dtype=np.int64)
        sp = self.space
        kernel.build_score_table(states.values, sp.actions, sp.comp_of, sp.comp_values, sp.score_weights, BLOCK,
                                 self.s, self.j, self.h, self.a, self.c, self.fallback)
        self.layout = _stream_layout(states)

    def __len__(self) -> int:
        return len(self.states)

    def _check(self, configs: Sequence[Config]) -> np.ndarray:
        for cfg in configs:
            if ActionSpace.of(cfg).key() != self.space.key():
                raise ConfigError(f"{cfg.source}: ACTION_GRID and SCORE_WEIGHTS must match the score table's")
        return _config_matrix(configs)

    def _pre(self, cfgs: np.ndarray) -> _Pre:
        pre = _Pre(cfgs.shape[0], len(self))
        sp = self.space
        kernel.pre_sweep(self.states.values, sp.actions, sp.comp_of, self.s, self.j, self.h, self.a, self.c,
                         self.fallback, cfgs, BLOCK, *pre.args())
        return pre

    def chunk_size(self, memory_bytes: int = 128 << 20) -> int:
        """Configs per kernel call so that the per-decision scratch stays under memory_bytes."""
        return max(1, memory_bytes // max(1, len(self) * _PRE_BYTES_PER_DECISION))

    def evaluate(self, configs: Sequence[Config], *, memory_bytes: int = 128 << 20) -> np.ndarray:
        """Per-config sums over all states (columns: kernel.S_*), shape (len(configs), N_SUMS)."""
        cfgs = self._check(configs)
        step = self.chunk_size(memory_bytes)
        parts = []
        for start in range(0, cfgs.shape[0], step):
            chunk = cfgs[start:start + step]
            _, sums = _finish(self.states, self.space, chunk, self.layout, self._pre(chunk), full=False)
            parts.append(sums)
        return np.concatenate(parts) if parts else np.zeros((0, kernel.N_SUMS))

    def run(self, config: Config) -> TraceColumns:
        """Full per-decision columns of one config through the sweep path."""
        cfgs = self._check([config])
        pre = self._pre(cfgs)
        out, _ = _finish(self.states, self.space, cfgs, self.layout, pre, full=True)
        return _columns(self.states, self.space, pre, out, 0)


def decide(state: Mapping[str, Any], config: Config, history: Sequence[float] | None = None) -> dict[str, Any]:
    """One decision. `history` is the stream's previous pre-clamp CUS values, oldest first
    (the `cus_raw` of its earlier traces); the result is that decision's trace record,
    exactly what the batch path writes for it."""
    from ..io.states import states_from_records

    states = states_from_records([dict(state)])
    space = ActionSpace.of(config)
    cfgs = _config_matrix([config])
    pre = _Pre(1, 1)
    kernel.pre_direct(states.values, space.actions, space.comp_of, space.comp_values, space.score_weights,
                      cfgs[0], BLOCK, *pre.args())
    window = int(config["CUS_MEAN_WINDOW"])
    past = [float(x) for x in (history or [])]
    ring = np.zeros(window)
    for j, value in enumerate(past):
        ring[j % window] = value
    final = np.empty(4)
    raw = space.actions[pre.a[0, 0]]
    delta_cus, cus_mean = kernel.drift_step(ring, len(past), pre.f[0, 0, 2])
    level, reason, cus, confidence, dconf, clamped, W, J, H, C = kernel.settle(
        states.values[0], raw, pre.level[0, 0], pre.reason[0, 0], pre.f[0, 0, 0], pre.f[0, 0, 2],
        pre.f[0, 0, 3], pre.f[0, 0, 4], delta_cus, cus_mean, cfgs[0], final)
    cols = TraceColumns(
        t=_trace_times(states),
        cus=np.array([cus]),
        cus_raw=pre.f[0, :, 2].copy(),
        delta_cus=np.array([delta_cus]),
        cus_mean=np.array([cus_mean]),
        confidence=np.array([confidence]),
        delta_confidence=np.array([dconf]),
        raw_action=raw[None, :].copy(),
        final_action=final[None, :].copy(),
        soft_clamp=np.array([clamped]),
        human_escalation=np.array([level == 2]),
        level=np.array([level], dtype=np.int8),
        reason=np.array([reason], dtype=np.int8),
        W=np.array([W]),
        J=np.array([J]),
        H=np.array([H]),
        C=np.array([C]),
    )
    return trace_records(cols, states, config, chaos=False)[0]


def run_records(states: Sequence[Mapping[str, Any]], config: Config, chaos: bool = False) -> list[dict[str, Any]]:
    """Decide in-memory state records; returns the trace records as plain dicts."""
    from ..io.states import states_from_records

    stateset = states_from_records([dict(s) for s in states])
    return trace_records(run(stateset, config), stateset, config, chaos=chaos)


def trace_records(cols: TraceColumns, states: StateSet, config: Config, chaos: bool = False) -> list[dict[str, Any]]:
    """The trace records as plain dicts: exactly what the JSONL writer puts on each line."""
    return _io_trace_records(cols, states, config_id=config.config_id, model=ENGINE_MODEL, chaos=chaos)

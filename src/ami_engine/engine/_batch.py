"""The engine's Python API: one config over a state set, many configs over a ScoreTable,
and a single decision. All paths run the same compiled rules (rules.py, through _kernel.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .. import ENGINE_MODEL
from ..config import Config, ConfigError
from ..io.spill import take_rows
from ..io.stateset import Nones, StateSet
from ..io.traces import REASONS, TraceColumns
from ..io.traces import trace_records as _io_trace_records
from . import _kernel as kernel
from .scores import action_grid
from .sums import EngineSums

BLOCK = 256  # states per parallel work item in the pre-decision pass
# Sums of at most this many configs are cheaper by the direct path than through a score
# table (a table costs about five to ten direct passes to build, then far less per config).
DIRECT_MAX_CONFIGS = 5
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
        return _action_space(tuple(config["ACTION_GRID"]), tuple(config["SCORE_WEIGHTS"]))

    def key(self) -> tuple:
        return (tuple(self.comp_values), tuple(self.score_weights))

    @property
    def index_type(self) -> type[np.signedinteger]:
        """The integer type a score table keeps its sorted actions' indices in: 16 bits
        while they fit (up to 13 grid values), else 32."""
        return np.int16 if self.actions.shape[0] <= np.iinfo(np.int16).max + 1 else np.int32

    def table_bytes_per_state(self) -> int:
        """What a score table (ScoreTable) holds per state: each action's score and index,
        J and H per group of actions that differ only in delay, C per compassion value."""
        a, g = self.actions.shape[0], self.comp_values.shape[0]
        return a * (8 + np.dtype(self.index_type).itemsize) + 2 * 8 * (a // g) + g * 8 + 8


@lru_cache(maxsize=32)
def _action_space(grid: tuple[float, ...], weights: tuple[float, ...]) -> ActionSpace:
    """The action space of a grid and weights, worked out once: every config of a search
    shares it. Its arrays are shared too, and never written."""
    values = np.asarray(grid, dtype=np.float64)
    g = values.shape[0]
    actions = action_grid(grid)
    comp_of = (np.arange(actions.shape[0]) // (g * g)) % g
    return ActionSpace(actions, comp_of.astype(np.int64), values, np.asarray(weights, dtype=np.float64))


def _longest(codes: np.ndarray) -> int:
    """The number of decisions of the longest stream (0 for no states)."""
    return int(np.bincount(codes).max()) if codes.size else 0


def _longest_in(layout: tuple[np.ndarray, np.ndarray]) -> int:
    """_longest from a _stream_layout, which has counted the streams already."""
    ptr = layout[1]
    return int(np.diff(ptr).max()) if ptr.size > 1 else 0


def _stream_layout(codes: np.ndarray, n_streams: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions grouped by stream code (input order kept inside a stream), and offsets."""
    order = np.argsort(codes, kind="stable").astype(np.int64)
    ptr = np.zeros(n_streams + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(codes, minlength=n_streams))
    return order, ptr


def _config_matrix(configs: Sequence[Config]) -> np.ndarray:
    return np.ascontiguousarray([c.kernel_row() for c in configs], dtype=np.float64)


def _trace_times(states: StateSet) -> list[Any]:
    if isinstance(states.t, Nones):
        return list(range(len(states)))
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

    def put(self, start: int, part: _Pre) -> None:
        """Copy the pre-decisions of a part of the states that begins at `start`."""
        stop = start + part.a.shape[1]
        self.a[:, start:stop] = part.a
        self.level[:, start:stop] = part.level
        self.reason[:, start:stop] = part.reason
        self.f[:, start:stop] = part.f


class _Outputs:
    """Per-decision columns written by the finish pass (empty unless `full`)."""

    def __init__(self, n_configs: int, n_states: int, full: bool) -> None:
        shape = (n_configs, n_states) if full else (0, 0)
        self.full = full
        self.cus = np.empty(shape)
        self.delta_cus = np.empty(shape)
        self.cus_mean = np.empty(shape)
        self.final = np.empty((*shape, 4))
        self.soft = np.empty(shape, dtype=np.bool_)
        self.level = np.empty(shape, dtype=np.int8)
        self.conf = np.empty(shape)
        self.dconf = np.empty(shape)
        self.reason = np.empty(shape, dtype=np.int8)
        self.scores = np.empty((*shape, 4))

    def args(self) -> tuple:
        return (self.cus, self.delta_cus, self.cus_mean, self.final, self.soft, self.level, self.conf, self.dconf,
                self.reason, self.scores)


class _Streams:
    """What the finish pass carries per (config, stream) from one part of the states to
    the next: the drift window, the decisions seen, and the sums.

    A window is kept for at most `longest` values, the decisions of the longest stream
    there will be: a stream shorter than its window never wraps round it, so a window of
    any size (CUS_MEAN_WINDOW has no upper bound) costs no more than the data."""

    def __init__(self, cfgs: np.ndarray, n_streams: int, longest: int) -> None:
        tasks = cfgs.shape[0] * n_streams
        self.n_configs, self.n_streams = cfgs.shape[0], n_streams
        self.rings = np.zeros((tasks, self.width(int(cfgs[:, kernel.WINDOW].max()) if tasks else 1, longest)))
        self.seen = np.zeros(tasks, dtype=np.int64)
        self.sums = np.zeros((tasks, kernel.N_SUMS))

    @staticmethod
    def width(window: int, longest: int) -> int:
        return max(1, min(window, longest))

    @staticmethod
    def bytes_per_config(n_streams: int, window: int, longest: int) -> int:
        return n_streams * 8 * (_Streams.width(window, longest) + 1 + kernel.N_SUMS)

    def _tasks(self, present: np.ndarray) -> np.ndarray:
        return (np.arange(self.n_configs)[:, None] * self.n_streams + present).ravel()

    def take(self, present: np.ndarray) -> _Streams:
        """What is carried for the streams `present` only (their codes, ascending), as
        streams 0, 1, ... of a _Streams of their own."""
        tasks = self._tasks(present)
        sub = object.__new__(_Streams)
        sub.n_configs, sub.n_streams = self.n_configs, present.shape[0]
        sub.rings, sub.seen, sub.sums = self.rings[tasks], self.seen[tasks], self.sums[tasks]
        return sub

    def put(self, present: np.ndarray, sub: _Streams) -> None:
        """Take back what take(present) handed out, as the finish pass left it."""
        tasks = self._tasks(present)
        self.rings[tasks], self.seen[tasks], self.sums[tasks] = sub.rings, sub.seen, sub.sums

    def totals(self) -> np.ndarray:
        """Per-config sums over all streams, shape (configs, N_SUMS)."""
        return self.sums.reshape(self.n_configs, self.n_streams, kernel.N_SUMS).sum(axis=1)


def _finish(values: np.ndarray, space: ActionSpace, cfgs: np.ndarray, layout, pre: _Pre, offset: int,
            streams: _Streams, out: _Outputs) -> None:
    order, ptr = layout
    kernel.finish(values, space.actions, cfgs, order, ptr, *pre.args(), out.full, offset, streams.rings,
                  streams.seen, *out.args(), streams.sums)


def _columns(t: list[Any], space: ActionSpace, pre: _Pre, out: _Outputs, c: int) -> TraceColumns:
    level = out.level[c]
    return TraceColumns(
        t=t,
        cus=out.cus[c],
        cus_raw=pre.f[c, :, 2].copy(),
        delta_cus=out.delta_cus[c],
        cus_mean=out.cus_mean[c],
        confidence=out.conf[c],
        delta_confidence=out.dconf[c],
        raw_action=space.actions[pre.a[c]],
        final_action=out.final[c],
        soft_clamp=out.soft[c],
        human_escalation=level == 2,
        level=level,
        reason=out.reason[c],
        W=out.scores[c, :, 0],
        J=out.scores[c, :, 1],
        H=out.scores[c, :, 2],
        C=out.scores[c, :, 3],
    )


def _direct_pre(values: np.ndarray, space: ActionSpace, cfgs: np.ndarray) -> _Pre:
    """The pre-decisions of the configs in the rows of `cfgs`, each state scored on the fly
    once for all of them (the direct path)."""
    pre = _Pre(cfgs.shape[0], values.shape[0])
    if cfgs.shape[0]:  # the loosest filter of no configs is no filter at all
        kernel.pre_direct(values, space.actions, space.comp_of, space.comp_values, space.score_weights, cfgs, BLOCK,
                          *pre.args())
    return pre


def run(states: StateSet, config: Config) -> TraceColumns:
    """Decide every state under one config (the direct path: no per-state sort of all actions)."""
    space = ActionSpace.of(config)
    cfgs = _config_matrix([config])
    pre = _direct_pre(states.values, space, cfgs)
    codes, n_streams = states.stream_codes()
    out = _Outputs(1, len(states), full=True)
    layout = _stream_layout(codes, n_streams)
    _finish(states.values, space, cfgs, layout, pre, 0, _Streams(cfgs, n_streams, _longest_in(layout)), out)
    return _columns(_trace_times(states), space, pre, out, 0)


class StreamRun:
    """Configs that share an action space decided over a state set piece by piece
    (consecutive slices, or parts of whole streams), each stream's drift window carried
    from piece to piece and its sums kept. Pieces that give each stream's states in input
    order give exactly the columns of run() on all the states, and sums() the bytes of
    direct_sums over all of them; only one piece's per-decision columns exist at a time."""

    def __init__(self, states: StateSet, configs: Sequence[Config]) -> None:
        if len({ActionSpace.of(c).key() for c in configs}) != 1:
            raise ConfigError("configs decided together must share ACTION_GRID and SCORE_WEIGHTS")
        self.states = states
        self.space = ActionSpace.of(configs[0])
        self.cfgs = _config_matrix(configs)
        self.codes, n_streams = states.stream_codes()
        self.streams = _Streams(self.cfgs, n_streams, _longest(self.codes))

    def decide(self, piece: slice | np.ndarray, pre: _Pre | None = None) -> list[TraceColumns]:
        """Each config's columns on the states at `piece` (a slice, or ascending positions).
        `pre`: their pre-decisions, when made elsewhere (pre_decisions of those states'
        values, for these configs)."""
        values = take_rows(self.states.values, piece)
        if pre is None:
            pre = _direct_pre(values, self.space, self.cfgs)
        else:
            _check_pre(pre, self.cfgs.shape[0], values.shape[0], self.space.actions.shape[0])
        out = _Outputs(self.cfgs.shape[0], values.shape[0], full=True)
        # Only the streams of this piece, numbered afresh: the finish pass shares its work
        # out by stream number, so all of them would otherwise fall to one thread when
        # streams come one after the other.
        present, local = np.unique(self.codes[piece], return_inverse=True)
        mine = self.streams.take(present)
        _finish(values, self.space, self.cfgs, _stream_layout(local.ravel(), present.shape[0]), pre, 0, mine, out)
        self.streams.put(present, mine)
        positions = range(len(self.states))[piece] if isinstance(piece, slice) else piece.tolist()
        if isinstance(self.states.t, Nones):  # no times at all: each decision's is its position
            t = list(positions)
        else:
            times = self.states.t
            t = [i if v is None else v for i, v in zip(positions, (times[i] for i in positions), strict=True)]
        return [_columns(t, self.space, pre, out, c) for c in range(self.cfgs.shape[0])]

    def sums(self) -> EngineSums:
        """Each config's sums over every state decided so far."""
        return EngineSums(self.streams.totals())


def _check_pre(pre: _Pre, n_configs: int, n_states: int, n_actions: int) -> None:
    """Pre-decisions made elsewhere index the action grid, the levels and the reasons in the
    finish pass, which does not check its indices: their shapes and ranges are checked here."""
    shapes = (pre.a.shape, pre.level.shape, pre.reason.shape, pre.f.shape)
    if shapes != ((n_configs, n_states),) * 3 + ((n_configs, n_states, kernel.PRE_FLOATS),):
        raise ValueError(f"pre-decisions of shapes {shapes} for {n_configs} config(s) and {n_states} states")
    if n_states and not (0 <= pre.a.min() and pre.a.max() < n_actions and 0 <= pre.level.min()
                         and pre.level.max() <= 2 and 0 <= pre.reason.min() and pre.reason.max() < len(REASONS)):
        raise ValueError("pre-decisions out of range (action, level or reason)")


def pre_decisions(values: np.ndarray, config: Config) -> _Pre:
    """The first pass of the direct path on the state values given, independent per state
    (so it can be made anywhere, a piece at a time): what StreamRun.decide finishes."""
    return _direct_pre(np.ascontiguousarray(values, dtype=np.float64), ActionSpace.of(config),
                       _config_matrix([config]))


def run_slices(states: StateSet, config: Config, rows: int,
               pres: Callable[[list[slice]], Iterator[_Pre]] | None = None) -> Iterator[tuple[slice, TraceColumns]]:
    """Decide every state under one config, `rows` consecutive states at a time: each slice
    of the input and its columns, in input order (StreamRun): the same bytes as those of
    run() on all the states, while only one slice's per-decision columns exist at a time.
    `pres`: given the slices, their pre-decisions in that order (pre_decisions, made
    elsewhere, perhaps ahead); by default each slice's are made here when it comes."""
    if rows < 1:
        raise ValueError(f"rows: expected an integer >= 1, got {rows!r}")
    decided = StreamRun(states, [config])
    n = len(states)
    parts = [slice(start, min(n, start + rows)) for start in range(0, n, rows)]
    made = iter(pres(parts)) if pres is not None else None
    for part in parts:
        yield part, decided.decide(part, None if made is None else next(made))[0]


def direct_sums(states: StateSet, configs: Sequence[Config]) -> EngineSums:
    """Each config's sums over all states through the direct path, without a score table:
    the cheaper way for up to DIRECT_MAX_CONFIGS configs. Configs that share an action
    space share one finish pass over the states. The decisions are those
    of `run`; their floats may differ from a table's in the last bit, so a caller that must
    give the same bytes every time chooses the path by the number of configs, never by
    memory."""
    if not len(configs):
        return EngineSums.empty()
    codes, n_streams = states.stream_codes()
    layout = _stream_layout(codes, n_streams)
    nothing = _Outputs(0, 0, full=False)
    rows: list[np.ndarray | None] = [None] * len(configs)
    for members in _by_space(configs):
        space = ActionSpace.of(configs[members[0]])
        cfgs = _config_matrix([configs[i] for i in members])
        pre = _direct_pre(states.values, space, cfgs)
        streams = _Streams(cfgs, n_streams, _longest_in(layout))
        _finish(states.values, space, cfgs, layout, pre, 0, streams, nothing)
        for i, row in zip(members, streams.totals(), strict=True):
            rows[i] = row
    return EngineSums(np.stack(rows))


def load_kernels(config: Config | None = None) -> None:
    """Load the compiled loops of every path (direct and score table) for the action space
    of `config` (default: the base profile's) now, by deciding one state through each,
    rather than on a first real call: Numba loads them from its cache, or compiles them."""
    if config is None:
        from ..config import load_config

        config = load_config("base")
    one = StateSet(values=np.full((1, 9), 0.5), streams=[0], t=Nones(1), ids=Nones(1))
    direct_sums(one, [config])
    ScoreTable(one, config).evaluate([config] * (DIRECT_MAX_CONFIGS + 1))


def _by_space(configs: Sequence[Config]) -> list[list[int]]:
    """The positions of the configs, grouped by action space (in order of first appearance)."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(ActionSpace.of(config).key(), []).append(i)
    return list(groups.values())


def _available_memory() -> int:
    """Bytes of memory available to this process now (Linux MemAvailable), else 8 GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 8 << 30


@dataclass(frozen=True)
class _Part:
    """The sorted scores of the states [start, start + len) of a ScoreTable."""

    start: int
    values: np.ndarray
    s: np.ndarray  # (n, A) scores sorted descending
    a: np.ndarray  # (n, A) the actions in that order
    j: np.ndarray  # (n, A / G) J per (severity, compassion, intervention) group
    h: np.ndarray  # (n, A / G) H per group
    c: np.ndarray  # (n, G) C per compassion value
    fallback: np.ndarray
    layout: tuple[np.ndarray, np.ndarray]


class ScoreTable:
    """Every action's S for every state, sorted once, with J and H; shared by all configs that
    have the same ACTION_GRID and SCORE_WEIGHTS (docs/engine.md §3: scores never depend
    on thresholds). Memory: about 8 KB per state (10 bytes per action, plus J and H per
    group of 5 actions).

    When the whole table would take more than `memory_bytes` (default: a third of the
    memory available, at most 8 GiB), it is kept in parts of that size that are scored
    again on every call instead: slower, but memory stays bounded however many states
    there are, and the results are the same bytes either way.

    `grouped=False` makes every config scan each state's candidate list instead of the
    per-group summary; both give the same decisions (the tests hold them to each other)."""

    def __init__(self, states: StateSet, config: Config, *, grouped: bool = True,
                 memory_bytes: int | None = None) -> None:
        self.states = states
        self.grouped = grouped
        self.space = ActionSpace.of(config)
        self.codes, self.n_streams = states.stream_codes()
        self.longest = _longest(self.codes)
        n, per_state = len(states), self.space.table_bytes_per_state()
        if memory_bytes is None:
            memory_bytes = min(8 << 30, _available_memory() // 3)
        self.part_states = max(1, min(n, memory_bytes // per_state))
        self._kept = self._score(0, n) if n <= self.part_states else None

    def __len__(self) -> int:
        return len(self.states)

    def _score(self, start: int, stop: int) -> _Part:
        sp = self.space
        values = take_rows(self.states.values, slice(start, stop))
        n, a, g = stop - start, sp.actions.shape[0], sp.comp_values.shape[0]
        part = _Part(start, values, np.empty((n, a)), np.empty((n, a), sp.index_type), np.empty((n, a // g)),
                     np.empty((n, a // g)), np.empty((n, g)), np.empty(n, dtype=np.int64),
                     _stream_layout(self.codes[start:stop], self.n_streams))
        kernel.build_score_table(values, sp.actions, sp.comp_of, sp.comp_values, sp.score_weights, BLOCK,
                                 part.s, part.a, part.j, part.h, part.c, part.fallback)
        return part

    def _parts(self) -> Iterator[_Part]:
        if self._kept is not None:
            yield self._kept
            return
        for start in range(0, len(self), self.part_states):
            yield self._score(start, min(len(self), start + self.part_states))

    def _check(self, configs: Sequence[Config]) -> np.ndarray:
        for cfg in configs:
            if ActionSpace.of(cfg).key() != self.space.key():
                raise ConfigError(f"{cfg.source}: ACTION_GRID and SCORE_WEIGHTS must match the score table's")
        return _config_matrix(configs)

    def _pre(self, part: _Part, cfgs: np.ndarray) -> _Pre:
        pre = _Pre(cfgs.shape[0], part.values.shape[0])
        sp = self.space
        kernel.pre_sweep(part.values, sp.actions, sp.comp_of, part.s, part.a, part.j, part.h, part.c, part.fallback,
                         cfgs, BLOCK, self.grouped, *pre.args())
        return pre

    def chunk_size(self, memory_bytes: int = 128 << 20, window: int = 10) -> int:
        """Configs per kernel call so that the per-decision scratch and the per-stream state
        stay under memory_bytes (window: the largest CUS_MEAN_WINDOW of the configs)."""
        per_config = (min(len(self), self.part_states) * _PRE_BYTES_PER_DECISION
                      + _Streams.bytes_per_config(self.n_streams, window, self.longest))
        return max(1, memory_bytes // max(1, per_config))

    def evaluate(self, configs: Sequence[Config], *, memory_bytes: int = 128 << 20) -> EngineSums:
        """Each config's sums over all states, in the order of `configs` (`result[i]`: config i's)."""
        cfgs = self._check(configs)
        if not cfgs.shape[0]:
            return EngineSums.empty()
        step = self.chunk_size(memory_bytes, int(cfgs[:, kernel.WINDOW].max()))
        nothing = _Outputs(0, 0, full=False)
        totals = []
        for first in range(0, cfgs.shape[0], step):
            chunk = cfgs[first:first + step]
            streams = _Streams(chunk, self.n_streams, self.longest)
            for part in self._parts():
                _finish(part.values, self.space, chunk, part.layout, self._pre(part, chunk), part.start, streams,
                        nothing)
            totals.append(streams.totals())
        return EngineSums(np.concatenate(totals))

    def run(self, config: Config) -> TraceColumns:
        """Full per-decision columns of one config through the sweep path."""
        cfgs = self._check([config])
        pre = _Pre(1, len(self))
        streams = _Streams(cfgs, self.n_streams, self.longest)
        out = _Outputs(1, len(self), full=True)
        for part in self._parts():
            part_pre = self._pre(part, cfgs)
            pre.put(part.start, part_pre)
            _finish(part.values, self.space, cfgs, part.layout, part_pre, part.start, streams, out)
        return _columns(_trace_times(self.states), self.space, pre, out, 0)


def decide(state: Mapping[str, Any], config: Config, history: Sequence[float] | None = None) -> dict[str, Any]:
    """One decision. `history` is the stream's previous pre-clamp CUS values, oldest first
    (the `cus_raw` of its earlier traces); the result is that decision's trace record,
    exactly what the batch path writes for it."""
    from ..io.states import states_from_records

    states = states_from_records([dict(state)])
    space = ActionSpace.of(config)
    cfgs = _config_matrix([config])
    pre = _direct_pre(states.values, space, cfgs)
    # The stream's window as the finish pass would hold it after `history`: value j at
    # j % window, with len(history) decisions seen.
    streams = _Streams(cfgs, 1, len(history or []) + 1)
    past = [float(x) for x in (history or [])]
    window = streams.rings.shape[1]
    for j, value in enumerate(past):
        streams.rings[0, j % window] = value
    streams.seen[0] = len(past)
    out = _Outputs(1, 1, full=True)
    _finish(states.values, space, cfgs, _stream_layout(*states.stream_codes()), pre, 0, streams, out)
    cols = _columns(_trace_times(states), space, pre, out, 0)
    return trace_records(cols, states, config, chaos=False)[0]


def run_records(states: Sequence[Mapping[str, Any]], config: Config, chaos: bool = False) -> list[dict[str, Any]]:
    """Decide in-memory state records; returns the trace records as plain dicts."""
    from ..io.states import states_from_records

    stateset = states_from_records([dict(s) for s in states])
    return trace_records(run(stateset, config), stateset, config, chaos=chaos)


def trace_records(cols: TraceColumns, states: StateSet, config: Config, chaos: bool = False) -> list[dict[str, Any]]:
    """The trace records as plain dicts: exactly what the JSONL writer puts on each line."""
    return _io_trace_records(cols, states, config_id=config.config_id, model=ENGINE_MODEL, chaos=chaos)

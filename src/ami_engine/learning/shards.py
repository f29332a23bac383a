"""Learning's data in shards of whole streams, and the evaluators that score configs on them.

A shard is a StateSet of whole streams: a stream never spans two shards, so its drift
window runs exactly as it does on all the data, and a shard's sums are those of its
streams. The streams are dealt to shards in a seeded order, each shard filled up to a
target number of decisions (a stream larger than the target is a shard on its own; its
score table is then kept or scored in parts like any other).

Sums merge by addition: the totals over a set of shards are the per-shard sums
`ScoreTable(shard, baseline).evaluate(configs)` added in ascending shard index, starting
from zeros. Every evaluator keeps to that order, so any number of workers, and any memory
budget, gives the same bytes.

A shard holds the values of its states and one stream label per state, the labels shared
with the data they came from; times and ids are not kept (the engine's sums use neither).

Which path scores a shard is one rule, the same for every evaluator and every memory
budget (ShardScorer): a call with at most DIRECT_MAX_CONFIGS configs runs each config
directly; more configs go through the shard's score table, built once and kept when the
evaluator has room for it, else built for the call and dropped. The two paths make the
same decisions, their floats may differ in the last bit: choosing by the number of
configs alone keeps the bytes the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, overload

import numpy as np

from ..config import Config, ConfigError
from ..engine import DIRECT_MAX_CONFIGS, ActionSpace, EngineSums, ScoreTable, direct_sums
from ..engine.parts import PartsRun
from ..io.spill import SpilledRows, take_rows
from ..io.stateset import Nones, StateSet, renumber
from ..io.traces import TraceColumns

SHARD_DECISIONS = 5_000  # target decisions per shard
CONFIG_SCRATCH = 128 << 20  # the most ScoreTable.evaluate's per-config scratch may take
TABLE_SHARE = 0.25  # of the memory budget, for the score tables kept between evaluations

# Given each config's decisions on some of a shard's states: their positions in the shard
# (ascending) and the configs' columns on them.
Observer = Callable[[np.ndarray, list[TraceColumns]], None]
# The same, with what else it needs (Reading.args); what it returns is kept (Reading.take).
Reader = Callable[[np.ndarray, list[TraceColumns], Any], Any]


@dataclass(frozen=True)
class Reading:
    """What an evaluator reads off the decisions it makes, besides the sums, for at most
    DIRECT_MAX_CONFIGS configs (the direct path, the same sums): `read(positions, columns,
    args)` makes something small of each part of a shard's decisions, wherever the shard
    is (a module-level function, so that it can be sent), with `args(shard)` made here;
    `take(shard, results)` is given each shard's results here, in ascending shard order."""

    read: Reader
    args: Callable[[int], Any]
    take: Callable[[int, list[Any]], None]


def resident_bytes() -> int:
    """The memory this process holds now (Linux resident set; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def table_bytes(n_states: int, config: Config) -> int:
    """Bytes of a whole score table of n states under the config's action grid (ScoreTable)."""
    return n_states * ActionSpace.of(config).table_bytes_per_state()


class Shards(Sequence[StateSet]):
    """The shards of a state set, each built from it when asked for and not kept here: an
    evaluator that keeps its shards elsewhere (on a cluster's workers) never holds them
    all in this process."""

    def __init__(self, values: np.ndarray, labels: list, codes: np.ndarray, where: list[np.ndarray]) -> None:
        self._values, self._codes, self._where = values, codes, where
        self._labels = np.empty(len(labels), dtype=object)  # the labels themselves, shared, whatever their type
        for code, label in enumerate(labels):
            self._labels[code] = label

    def __len__(self) -> int:
        return len(self._where)

    def size(self, i: int) -> int:
        """The number of states of shard i, without building it."""
        return int(self._where[i].size)

    @overload
    def __getitem__(self, i: int) -> StateSet: ...

    @overload
    def __getitem__(self, i: slice) -> list[StateSet]: ...

    def __getitem__(self, i: int | slice) -> StateSet | list[StateSet]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        index = self._where[i]  # an IndexError past the end
        n = int(index.size)
        return StateSet(values=take_rows(self._values, index),
                        streams=self._labels[self._codes[index]].tolist(),
                        t=Nones(n), ids=Nones(n)).with_codes(renumber(self._codes[index]))

    def recipe(self, i: int) -> ShardRecipe | None:
        """How another process on this machine builds shard i itself, from the file the
        states' values were spilled to (io.spill), without them being sent; None when the
        values are in this process's memory."""
        rows = SpilledRows.of(self._values)
        if rows is None:
            return None
        index = self._where[i]
        codes, n_streams = renumber(self._codes[index])
        first = np.unique(codes, return_index=True)[1]  # each stream's first state, by code
        small = np.int32 if n_streams <= np.iinfo(np.int32).max else np.int64
        return ShardRecipe(rows, index, codes.astype(small), self._labels[self._codes[index[first]]].tolist())


@dataclass(frozen=True)
class ShardRecipe:
    """A shard as positions in a spilled file of states' values, with its stream codes and
    labels: `build()` makes the StateSet Shards makes of it, the same values and streams."""

    rows: SpilledRows
    index: np.ndarray  # of the shard's states in the file, ascending by stream as dealt
    codes: np.ndarray  # per state, numbered by first appearance in the shard
    labels: list[Any]  # per code

    def __len__(self) -> int:
        return int(self.index.size)

    def build(self) -> StateSet:
        n = int(self.index.size)
        labels = np.empty(len(self.labels), dtype=object)
        labels[:] = self.labels
        return StateSet(values=take_rows(self.rows.open(), self.index), streams=labels[self.codes].tolist(),
                        t=Nones(n), ids=Nones(n)).with_codes((self.codes.astype(np.int64), len(self.labels)))


@dataclass(frozen=True)
class Sharding:
    """The shards of a state set, and how they were cut."""

    shards: Shards
    method: str  # "whole streams"
    seed: int
    positions: list[np.ndarray]  # of each shard's states in the state set (int32 where it fits)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([p.size for p in self.positions], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)


def make_shards(states: StateSet, seed: int, target: int = SHARD_DECISIONS,
                positions: np.ndarray | None = None) -> Sharding:
    """Whole streams dealt to shards in a seeded order, each shard filled to about `target`
    decisions; inside a shard the streams follow that order, each in input order.
    `positions`: shard only the states at these positions (input order kept), without
    making a copy of the rest of the state set first. The shards are built from `states`
    when asked for (Shards)."""
    if target < 1:
        raise ValueError(f"target: expected an integer >= 1, got {target!r}")
    all_codes, n_all = states.stream_codes()
    labels = [states.streams[i] for i in first_positions(all_codes, n_all).tolist()]
    # Positions as int32 where they fit: at tens of millions of states every array of one
    # entry per state counts, and none is made here that is not needed.
    small = np.int32 if len(states) <= np.iinfo(np.int32).max else np.int64
    pos = np.arange(len(states), dtype=small) if positions is None else np.asarray(positions, dtype=small)
    codes = all_codes[pos]
    counts = np.bincount(codes, minlength=n_all)
    present = np.flatnonzero(counts)  # the streams there, renumbered 0..k-1 in code order
    n_streams = int(present.size)
    rank = np.zeros(n_all, dtype=codes.dtype)
    rank[present] = np.arange(n_streams)
    np.take(rank, codes, out=codes)
    # Grouped by stream, input order inside (a stable sort; of 16-bit keys, a radix sort).
    keys = codes.astype(np.int16) if n_streams <= np.iinfo(np.int16).max else codes
    del codes
    order = pos[np.argsort(keys, kind="stable")]
    del keys
    ptr = np.zeros(n_streams + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(counts[present])
    dealt = np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D])).permutation(n_streams)
    where: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    size = 0
    for s in dealt:
        pending.append(order[ptr[s]:ptr[s + 1]])
        size += int(ptr[s + 1] - ptr[s])
        if size >= target:
            where.append(np.concatenate(pending))
            pending, size = [], 0
    if pending:
        where.append(np.concatenate(pending))
    return Sharding(Shards(states.values, labels, all_codes, where), "whole streams", seed, where)


def first_positions(codes: np.ndarray, n_streams: int, block: int = 1 << 20) -> np.ndarray:
    """The position of each stream code's first state (codes 0..n_streams-1, each present),
    found block by block: the streams mostly all appear early, and no sort of every code
    is made."""
    first = np.full(n_streams, -1, dtype=np.int64)
    missing = n_streams
    for start in range(0, codes.size, block):
        found, where = np.unique(codes[start:start + block], return_index=True)
        new = first[found] < 0
        first[found[new]] = where[new] + start
        missing -= int(np.count_nonzero(new))
        if not missing:
            break
    if missing:
        raise ValueError(f"stream codes: {missing} of {n_streams} codes have no state")
    return first


class ShardEvaluator(Protocol):
    """Per-config sums over a set of shards (EngineSums): the per-shard sums added in
    ascending shard index from zeros. An evaluator that can also read its decisions
    (`reading`, see Reading) takes it as a keyword."""

    def evaluate(self, configs: Sequence[Config], shards: Sequence[int]) -> EngineSums: ...

    def close(self) -> None: ...


class EvaluatorFactory(Protocol):
    """Makes the evaluator of a list of shards. `keep_first`: only the first that many
    shards are worth keeping a score table for (they are evaluated batch after batch);
    None: any."""

    def __call__(self, shards: Sequence[StateSet], baseline: Config, *, keep_first: int | None = None) \
            -> ShardEvaluator: ...


def shard_order(shards: Sequence[int], n_shards: int) -> list[int]:
    """The shards asked for, in the one merge order (ascending); a ValueError unless they are
    distinct indices of existing shards."""
    order = sorted(int(i) for i in shards)
    if len(set(order)) != len(order) or any(not 0 <= i < n_shards for i in order):
        raise ValueError(f"shards must be distinct indices in [0, {n_shards}), got {list(shards)}")
    return order


def merge(parts: Iterable[EngineSums], n_configs: int) -> EngineSums:
    """Per-shard sums (in ascending shard index) added from zeros: the one merge order."""
    return EngineSums.merge([EngineSums.zeros(n_configs), *parts])


class ShardScorer:
    """One shard's sums for any configs, by the one rule of paths (see the module): at most
    DIRECT_MAX_CONFIGS configs directly, more through the shard's score table. The table is
    built on the first call that needs it, and kept when `keep`, else dropped after it."""

    def __init__(self, shard: StateSet | Callable[[], StateSet], baseline: Config, *, keep: bool,
                 part_bytes: int | None = None, scratch: int = CONFIG_SCRATCH) -> None:
        """`shard`: its states, or a function that builds them for each call (none kept)."""
        self._shard, self.baseline, self.keep = shard, baseline, keep
        self.part_bytes, self.scratch = part_bytes, scratch
        self._space = ActionSpace.of(baseline).key()
        self._table: ScoreTable | None = None

    @property
    def holds_table(self) -> bool:
        return self._table is not None

    def sums(self, configs: Sequence[Config], observe: Observer | None = None) -> EngineSums:
        """`observe(positions, columns)`: given each config's decisions on the shard, part
        by part (positions in the shard; direct path only, the same sums)."""
        configs = list(configs)
        if len(configs) <= DIRECT_MAX_CONFIGS:
            for cfg in configs:
                if ActionSpace.of(cfg).key() != self._space:
                    raise ConfigError(f"{cfg.source}: ACTION_GRID and SCORE_WEIGHTS must match the score table's")
            if observe is None:
                return direct_sums(self.states(), configs)
            decided = PartsRun(self.states(), configs)
            for positions, columns in decided:
                observe(positions, columns)
            return decided.sums()
        if observe is not None:
            raise ValueError(f"decisions are observed on the direct path only (at most {DIRECT_MAX_CONFIGS} configs)")
        table = self._table
        if table is None:
            table = ScoreTable(self.states(), self.baseline, memory_bytes=self.part_bytes)
            if self.keep:
                self._table = table
        return table.evaluate(configs, memory_bytes=self.scratch)

    def states(self) -> StateSet:
        """The shard's states (built now, when given as a function)."""
        return self._shard() if callable(self._shard) else self._shard

    def drop(self) -> None:
        self._table = None


def read_shard(scorer: ShardScorer, configs: Sequence[Config], read: Reader, args: Any) -> tuple[EngineSums, list[Any]]:
    """A shard's sums and what `read` makes of each part of its decisions (Reading)."""
    results: list[Any] = []
    sums = scorer.sums(configs, lambda pos, cols: results.append(read(pos, cols, args)))
    return sums, results


class InProcessEvaluator:
    """Scores shards in this process within `memory_bytes`.

    The first shards whose score tables fit a quarter of the budget (and, given `keep_first`, are
    among the first `keep_first`) keep their tables once built; every other shard that
    needs a table has it built afresh for the call, in parts that fit what is left, and
    dropped. Either way a shard's sums are the same bytes."""

    def __init__(self, shards: Sequence[StateSet], baseline: Config, memory_bytes: int, *,
                 keep_first: int | None = None) -> None:
        if memory_bytes < 1:
            raise ValueError(f"memory_bytes: expected an integer >= 1, got {memory_bytes!r}")
        self.shards = shards
        self.baseline = baseline
        self.memory_bytes = int(memory_bytes)
        scratch = max(1 << 20, min(CONFIG_SCRATCH, self.memory_bytes // 8))
        part_bytes = max(1, self.memory_bytes // 4)
        room = int(self.memory_bytes * TABLE_SHARE)
        self._scorers: list[ShardScorer] = []
        lazy = isinstance(shards, Shards)
        for i in range(len(shards)):
            need = table_bytes(shards.size(i) if lazy else len(shards[i]), baseline)
            keep = need <= room and all(s.keep for s in self._scorers) and (keep_first is None or i < keep_first)
            if keep:
                room -= need
            # A shard is fetched (from Shards: built) for each call that decides it unless its
            # table is kept (evaluated batch after batch): a rung above is evaluated a few
            # times, and building a shard costs far less than deciding it.
            source = shards[i] if keep else partial(shards.__getitem__, i)
            self._scorers.append(ShardScorer(source, baseline, keep=keep, part_bytes=need if keep else part_bytes,
                                             scratch=scratch))

    @property
    def keeps(self) -> int:
        """The number of shards whose score tables are kept once built."""
        return sum(s.keep for s in self._scorers)

    @property
    def kept(self) -> int:
        """The number of score tables held now."""
        return sum(s.holds_table for s in self._scorers)

    def evaluate(self, configs: Sequence[Config], shards: Sequence[int], *,
                 reading: Reading | None = None) -> EngineSums:
        """`reading`: what to read off the decisions besides the sums (the same sums)."""
        configs = list(configs)
        order = shard_order(shards, len(self.shards))
        if reading is None:
            return merge((self._scorers[i].sums(configs) for i in order), len(configs))
        parts = []
        for i in order:
            sums, results = read_shard(self._scorers[i], configs, reading.read, reading.args(i))
            parts.append(sums)
            reading.take(i, results)
        return merge(parts, len(configs))

    def close(self) -> None:
        for scorer in self._scorers:
            scorer.drop()

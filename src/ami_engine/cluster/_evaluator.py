"""Evaluating configs on shards of states held by Dask workers.

Each shard is placed by a task on one worker and kept there, with its score table once a
call needs one (the paths' rule of learning.shards); a call sends the config matrix to the
shards asked for and brings back per-config sums. The totals are
added in ascending shard index from zeros, as the in-process evaluator adds them, so the
result is the same bytes with any number of workers or none.

The table is the result of a task, not data scattered from here: when a worker dies, the
scheduler builds its tables again on the workers left (or on the worker that replaces it)
from the task's own inputs, and the evaluations that were running are run again.

Where the workers share this machine's files (`files_shared`, a local cluster) and the
states' values were spilled to a file (io.spill), a task carries only the shard's
positions in that file and its stream codes (ShardRecipe): the worker reads the values
itself, and neither this process nor the scheduler holds a copy of them. A shard whose
table is not kept is then read afresh for each call, as the in-process evaluator does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import numpy as np

from ..config import Config, ConfigError
from ..engine import ActionSpace, EngineSums
from ..io.stateset import StateSet
from ..learning.shards import Reader, Reading, ShardRecipe, Shards, ShardScorer, read_shard, shard_order
from ._spec import quiet

_BYTES_PER_STATE = 8 << 10  # a ScoreTable's size, about 8 KB per state (engine/_batch.py)


class _Shard:
    """A shard on a worker, scored by the one rule of paths (learning.shards.ShardScorer):
    its score table is built there the first time a call needs one, and kept when `keep`
    (else dropped after the call)."""

    def __init__(self, states: StateSet | ShardRecipe, baseline: Config, keep: bool) -> None:
        if isinstance(states, ShardRecipe):  # read here from the spilled file: now if kept, else per call
            source = states.build() if keep else states.build
            # Kept: the nine values of each state; else the recipe's position and code of each.
            self.values_bytes = len(states) * (9 * 8 if keep else 8)
        else:
            source, self.values_bytes = states, states.values.nbytes
        self.scorer = ShardScorer(source, baseline, keep=keep)
        self.keep = keep
        self.baseline = baseline
        self.n = len(states)

    @property
    def nbytes(self) -> int:
        # The size the shard has once its table is built: enough to keep Dask from moving it.
        return self.n * _BYTES_PER_STATE * self.keep + self.values_bytes


class _Row:
    """A config as the score table reads it: the baseline's action grid and score weights
    (the caller checked that every config has those), and the kernel row sent over."""

    def __init__(self, baseline: Config, row: list[float]) -> None:
        self._baseline = baseline
        self._row = row
        self.source = baseline.source

    def __getitem__(self, name: str) -> Any:
        return self._baseline[name]

    def kernel_row(self) -> list[float]:
        return self._row


def _register_size() -> None:
    """Tell Dask a table is large, so that evaluations go to the worker that holds it
    rather than the table to an idle worker."""
    from dask.sizeof import sizeof

    sizeof.register(_Shard)(lambda shard: shard.nbytes)


def use_cores(*, share: bool) -> None:
    """Set how many threads the engine's compiled loops on this thread use: the worker's
    share of the cores (NUMBA_NUM_THREADS as the worker's environment gives it: a local
    cluster sets it) when `share`, else as many as Numba may start here. Numba did not
    read that environment itself when it was loaded before the worker started
    (_engine_server), and its count is per thread, so each task sets it."""
    import numba

    wanted = os.environ.get("NUMBA_NUM_THREADS", "") if share else ""
    limit = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(min(int(wanted), limit) if wanted.isdigit() and int(wanted) >= 1 else limit)


def _build(states: StateSet | ShardRecipe, baseline: Config, keep: bool) -> _Shard:
    _register_size()
    return _Shard(states, baseline, keep)


def _evaluate(shard: _Shard, matrix: np.ndarray, every_core: bool) -> EngineSums:
    use_cores(share=not every_core)
    return shard.scorer.sums([_Row(shard.baseline, row) for row in matrix.tolist()])


def _evaluate_read(shard: _Shard, matrix: np.ndarray, every_core: bool, read: Reader,
                   args: Any) -> tuple[EngineSums, list[Any]]:
    use_cores(share=not every_core)
    return read_shard(shard.scorer, [_Row(shard.baseline, row) for row in matrix.tolist()], read, args)


class DaskShardEvaluator:
    """Per-config sums over chosen shards of states, computed where the shards are kept.

    `evaluate(configs, shards)` returns the EngineSums of the configs: the sums of
    `ScoreTable(shard, baseline).evaluate(configs)` over the shards asked for, added in
    ascending shard index starting from zeros. Only the first `keep_first` shards (None: all)
    keep their tables between calls. `files_shared`: the workers see this machine's files
    (a local cluster), so that they read spilled shards themselves (see the module).
    `close()` lets the workers drop the tables."""

    UNEVEN = 1.25

    def __init__(self, client: Any, shards: Sequence[StateSet], baseline: Config, *,
                 keep_first: int | None = None, files_shared: bool = False) -> None:
        self._client = client
        self._space = ActionSpace.of(baseline).key()
        workers = sorted(client.scheduler_info().get("workers", {}))
        # Shard i goes to worker i % (workers there are now), and a call's load on each follows.
        self._dealt = [i % len(workers) for i in range(len(shards))] if workers else []
        self._workers = len(workers)
        self._sizes = [shards.size(i) if isinstance(shards, Shards) else len(shards[i]) for i in range(len(shards))]
        token = uuid4().hex
        read_there = bool(files_shared and isinstance(shards, Shards) and len(shards)
                          and shards.recipe(0) is not None)
        with quiet():
            # Spread the shards over the workers there are now; a worker that goes away
            # takes its restriction with it, and its shards are built wherever there is room.
            # Each shard is made (built here, or its recipe) only as it is sent.
            self._tables = [
                client.submit(_build, shards.recipe(i) if read_there else shards[i], baseline,
                              keep_first is None or i < keep_first, key=f"ami-score-table-{token}-{i}",
                              workers=[workers[self._dealt[i]]] if workers else None, allow_other_workers=True)
                for i in range(len(shards))
            ]

    def __len__(self) -> int:
        return len(self._tables)

    def _matrix(self, configs: Sequence[Config]) -> np.ndarray:
        for cfg in configs:
            if ActionSpace.of(cfg).key() != self._space:
                raise ConfigError(f"{cfg.source}: ACTION_GRID and SCORE_WEIGHTS must match the score table's")
        return np.ascontiguousarray([c.kernel_row() for c in configs], dtype=np.float64)

    def _uneven(self, order: list[int]) -> bool:
        """Whether the shards asked for fall unevenly on the workers they were dealt to (one
        has more than UNEVEN times the decisions of another): a call may take few shards,
        or shards of uneven size (at 20,000 decisions the training data are four shards
        of 5,000, 5,000, 5,000 and 1,000; the finalists may be scored on one). Each
        worker's loops then take every core rather than its share, so that a worker done
        early leaves its cores to the threads of one still busy; evenly loaded workers keep
        to their shares, as more busy threads than cores only wait on one another."""
        if self._workers < 2:
            return False
        load = [0] * self._workers
        for i in order:
            load[self._dealt[i]] += self._sizes[i]
        return max(load) > self.UNEVEN * min(load)

    def evaluate(self, configs: Sequence[Config], shards: Sequence[int], *,
                 reading: Reading | None = None) -> EngineSums:
        """`reading`: what the workers read off the decisions besides the sums (the same
        sums); each shard's results come back with its sums."""
        order = shard_order(shards, len(self._tables))
        matrix = self._matrix(configs)
        every_core = self._uneven(order)
        total = EngineSums.zeros(len(configs))
        if not len(configs) or not order:
            return total
        with quiet():
            if reading is None:
                futures = [self._client.submit(_evaluate, self._tables[i], matrix, every_core, pure=False)
                           for i in order]
                return EngineSums.merge([total, *self._client.gather(futures)])
            futures = [self._client.submit(_evaluate_read, self._tables[i], matrix, every_core, reading.read,
                                           reading.args(i), pure=False) for i in order]
            done = self._client.gather(futures)
        for i, (_, results) in zip(order, done, strict=True):
            reading.take(i, results)
        return EngineSums.merge([total, *(sums for sums, _ in done)])

    def close(self) -> None:
        for future in self._tables:
            future.release()
        self._tables = []

    def __enter__(self) -> DaskShardEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

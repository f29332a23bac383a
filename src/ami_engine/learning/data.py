"""The states to learn from: a scenario, a states file or replayed traces, each read once
and recorded (source, SHA-256) so that a suggestion names the data it was learned on."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io.files import STDIO, StreamedFile, read_once
from ..io.stateset import StateSet
from ..scenario import generate
from .settings import LearnError


@dataclass(frozen=True)
class LearnData:
    """The states to learn from, and where they came from (for the suggestion's [meta])."""

    states: StateSet
    source: str  # "scenario", "states" or "traces"
    description: str
    sha256: str
    path: str | None = None
    scenario: dict[str, Any] | None = None
    drop_unknown: bool = False  # unknown keys of the states file were left out on request
    # (t, ids) of given ascending positions, when the states do not keep them (large Parquet
    # traces: a StateSet's t and ids take more memory than its values at millions of rows).
    keys: Callable[[np.ndarray], tuple[list[Any], list[Any]]] | None = field(default=None, repr=False,
                                                                                compare=False)

    def subset(self, positions: np.ndarray, *, keys: bool = True) -> StateSet:
        """The states at these ascending positions with their own t and id, read back from
        the file when the states do not keep them (StateSet.subset's rule for a missing t,
        the position, holds either way); when they do not and `keys` is False, without t
        and ids (StateSet.lean)."""
        if self.keys is not None and not keys:
            return self.states.lean(positions)
        part = self.states.subset(positions)
        if self.keys is None:
            return part
        times, ids = self.keys(np.asarray(positions, dtype=np.int64))
        times = [int(i) if t is None else t for i, t in zip(positions, times, strict=True)]
        return dataclasses.replace(part, t=times, ids=ids)

    def meta(self) -> dict[str, Any]:
        _, n_streams = self.states.stream_codes()
        out: dict[str, Any] = {"source": self.source, "description": self.description, "sha256": self.sha256,
                               "n_records": len(self.states), "n_streams": n_streams}
        if self.path is not None:
            out["path"] = self.path
        if self.scenario is not None:
            out["scenario"] = self.scenario
        if self.drop_unknown:
            out["drop_unknown"] = True
        return out


def data_from_scenario(name: str, n: int, seed: int, streams: int = 8) -> LearnData:
    states = generate(name, n, seed, streams)
    digest = hashlib.sha256(np.ascontiguousarray(states.values).tobytes()).hexdigest()
    return LearnData(states, "scenario", f"scenario {name}, n={n}, seed={seed}, streams={streams}", digest,
                     scenario={"name": name, "n": n, "seed": seed, "streams": streams})


def data_from_states_file(path: str, *, drop_unknown: bool = False) -> LearnData:
    """The states of a states file (`-` = stdin) or Parquet data set; a file is read once,
    and its SHA-256 is that of the bytes the states were read from. With `drop_unknown`,
    keys that are not part of a state are left out (and recorded, so that the data can be
    rebuilt the same way)."""
    from ..io.parquet import DatasetDigest, is_parquet
    from ..io.states import read_states

    if is_parquet(path):
        # Its values kept in a temporary file, as for Parquet traces (data_from_traces_file);
        # its SHA-256 that of the bytes read, file by file (io._pinned).
        digest = DatasetDigest(path)
        states = read_states(path, drop_unknown=drop_unknown, spill=True, digest=digest)
        return LearnData(states, "states", f"states {path}", digest.hexdigest(), path=path,
                         drop_unknown=drop_unknown)
    loaded = read_once(path)
    return LearnData(read_states(loaded, drop_unknown=drop_unknown), "states", f"states file {loaded.name}",
                     loaded.sha256, path=_named_path(path), drop_unknown=drop_unknown)


def data_from_traces_file(path: str) -> LearnData:
    """Replay: the states carried by a traces file (`-` = stdin), stream by stream in file
    order; read once, like a states file (JSONL streamed through its SHA-256)."""
    from ..io.parquet import DatasetDigest, is_parquet
    from ..io.traces import read_trace_states

    keys = None
    if is_parquet(path):
        # t and id are checked as they are read, kept only for the rows that need them.
        # The values go to a temporary file as they are read: learning reads a shard or a
        # part of them at a time (io.spill), never needs them all in memory at once. The
        # SHA-256 is that of the bytes read, file by file (io._pinned).
        read = DatasetDigest(path)
        found, name = read_trace_states(path, keys=False, spill=True, digest=read), str(path)
        digest = read.hexdigest()

        def keys(positions: np.ndarray) -> tuple[list[Any], list[Any]]:
            from ..io.parquet import trace_keys

            again = DatasetDigest(path)
            found_keys = trace_keys(path, positions, digest=again)
            # Read a second time: they must come from the data the states were learned from.
            if again.hexdigest() != digest:
                raise LearnError(f"{path}: changed since it was read for learning (its SHA-256 differs); "
                                 "nothing was written")
            return found_keys
    else:
        # Hashed as it is parsed, in one pass: what is hashed is what is parsed, and the
        # file is never held in memory whole (it may be months of traces).
        streamed = StreamedFile(path)
        found = read_trace_states(streamed)
        name, digest = streamed.name, streamed.sha256
    if found.n_records == 0:
        raise LearnError(f"{path}: no traces in the file")
    if found.missing:
        raise LearnError(
            f"{path}: {found.missing} of {found.n_records} records carry no `state` (first: line "
            f"{found.first_missing}); traces without states give metrics only: use `ami-engine metrics` on this "
            "file, or pass the states with --states")
    return LearnData(found.states, "traces", f"traces file {name} (replayed)", digest,
                     path=_named_path(path), keys=keys)


def _named_path(path: str) -> str | None:
    """The path to record in a suggestion; None for stdin, which cannot be read again."""
    return None if path == STDIO else path


def meta_field(table: Any, key: str, kind: type, where: str) -> Any:
    """`table[key]` when it is of `kind` (an integer is not a bool), else a LearnError naming it."""
    value = table.get(key) if isinstance(table, dict) else None
    if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
        shown = "missing" if value is None else f"got {value!r}"
        raise LearnError(f"meta.{where}.{key}: expected {_KIND_NAMES[kind]}, {shown}")
    return value


_KIND_NAMES = {dict: "a table", str: "a text", int: "an integer >= 0"}

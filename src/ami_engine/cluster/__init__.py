"""Work shared out to a Dask cluster: config evaluation over shards of states for `learn`,
metric sums over many trace files, and the pre-decisions of states, slice by slice, for `run`.

The figures are the same bytes as in one process: sums are added in a fixed order (or
exactly), and decisions depend only on their own stream. Needs the `cluster` extra
(`pip install 'ami-engine[cluster]'`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._evaluator import DaskShardEvaluator
    from ._metrics import metrics_on_cluster
    from ._run import run_on_cluster
from ._spec import (
    INSTALL_HINT,
    ClusterError,
    ClusterSpec,
    cluster_client,
    local_cluster_options,
    require_dask,
    worker_count,
)

# Imported when first asked for: a worker that sums metrics, and `metrics --cluster`
# itself, need not load the engine's compiled kernels.
_LAZY = {"DaskShardEvaluator": "._evaluator", "metrics_on_cluster": "._metrics", "run_on_cluster": "._run"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "INSTALL_HINT",
    "ClusterError",
    "ClusterSpec",
    "DaskShardEvaluator",
    "cluster_client",
    "local_cluster_options",
    "metrics_on_cluster",
    "require_dask",
    "run_on_cluster",
    "worker_count",
]

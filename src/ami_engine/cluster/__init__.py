"""Work shared out to a Dask cluster: config evaluation over shards of states for `learn`,
metric sums over many trace files, and deciding states stream by stream for `run`.

The figures are the same bytes as in one process: sums are added in a fixed order (or
exactly), and decisions depend only on their own stream. Needs the `cluster` extra
(`pip install 'ami-engine[cluster]'`)."""

from ._evaluator import DaskShardEvaluator
from ._metrics import metrics_on_cluster
from ._run import run_on_cluster, stream_parts
from ._spec import (
    INSTALL_HINT,
    ClusterError,
    ClusterSpec,
    cluster_client,
    local_cluster_options,
    require_dask,
    worker_count,
)

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
    "stream_parts",
    "worker_count",
]

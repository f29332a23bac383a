"""Where the work goes: a `--cluster` value, and a Dask client for it.

`local:N` starts a Dask LocalCluster of N worker processes on this machine (one thread
each, no dashboard, quiet logs), closed again when the work is done; `tcp://HOST:PORT`
connects to a Dask scheduler that is already running (its workers must see the same
files as this process, under the same paths).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..io.files import usable_cpus

MAX_LOCAL_WORKERS = 256
INSTALL_HINT = "pip install 'ami-engine[cluster]'"
_ADDRESS = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})$")


class ClusterError(UsageError):
    """A `--cluster` value that is not usable: badly written, no Dask, no scheduler there."""


@dataclass(frozen=True)
class ClusterSpec:
    """`local:N` (workers = N, address None) or `tcp://HOST:PORT` (address, workers None)."""

    workers: int | None = None
    address: str | None = None

    @classmethod
    def parse(cls, text: str) -> ClusterSpec:
        text = str(text).strip()
        if text.startswith("local:"):
            count = text[len("local:"):]
            if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
                raise ClusterError(f"local:N needs a number of workers N in [1, {MAX_LOCAL_WORKERS}]")
            return cls(workers=int(count))
        match = _ADDRESS.match(text)
        if match is None:
            raise ClusterError("must be local:N (N worker processes here) or tcp://HOST:PORT (a Dask scheduler)")
        if not 1 <= int(match["port"]) <= 65535:
            raise ClusterError("the port must be in [1, 65535]")
        return cls(address=text)

    def __str__(self) -> str:
        return f"local:{self.workers}" if self.address is None else self.address


def require_dask() -> None:
    """Raise ClusterError (one line, with the install command) when Dask is not installed."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:  # found, not imported: that takes a while
        raise ClusterError(f"needs Dask, which is not installed: {INSTALL_HINT}")


@contextmanager
def quiet() -> Iterator[None]:
    """Dask's notes that a task carries its data (a shard's states do, by design: a lost
    result is computed again from them) are not for the person at the terminal."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]arge object.*")
        warnings.filterwarnings("ignore", message=".*[Ss]ending large graph.*")
        yield


def local_cluster_options(n_workers: int) -> dict[str, Any]:
    """A LocalCluster of `n_workers` single-threaded processes on 127.0.0.1, no dashboard.
    The scheduler's small HTTP endpoint takes a free port rather than the usual 8787,
    which another cluster on the machine may hold. Each worker's share of the machine's
    cores for the engine's compiled loops (one each when there are as many workers as
    cores) is its NUMBA_NUM_THREADS: deciding `run`'s slices keeps to it, for more busy
    threads than cores only wait on one another; scoring configs on uneven shards uses
    every core Numba was loaded with (_evaluator.use_cores), all of them in workers forked
    from the engine's server (_engine_server), which loads Numba before the share is set."""
    numba_threads = max(1, usable_cpus() // max(1, n_workers))
    return dict(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.CRITICAL, env={"NUMBA_NUM_THREADS": str(numba_threads)})


def _start_method() -> str:
    """How a local cluster starts its worker processes: forked from a server process that
    loaded Dask, and the engine where the work needs it, once (forkserver, _start_server),
    where the system has it; else each one a fresh interpreter (spawn), Dask's default. A
    plain fork of this process, whose threads (Dask's own among them) would be copied
    half-way, is never used."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _start_server(engine: bool) -> None:
    """Start the server process that local workers are forked from (forkserver), where it
    is used and not running yet, so that it loads what they need while this process goes
    on: Dask, and the engine with its compiled loops when `engine` (_engine_server)."""
    if _start_method() != "forkserver":
        return
    import multiprocessing.forkserver

    if getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None) is not None:
        return  # running already: its workers come with what it loaded then
    modules = ["distributed", f"{__package__}._engine_server"] if engine else ["distributed"]
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)
    multiprocessing.forkserver.ensure_running()


class Connection:
    """The client of a cluster, made when first asked for (`connection()`)."""

    def __init__(self, spec: ClusterSpec, *, connect_timeout: float) -> None:
        self.spec, self._timeout = spec, connect_timeout
        self._cluster: Any = None
        self._client: Any = None

    @property
    def started(self) -> bool:
        return self._client is not None

    def __call__(self) -> Any:
        if self._client is None:
            from distributed import Client, LocalCluster

            if self.spec.address is None:
                self._cluster = LocalCluster(**local_cluster_options(self.spec.workers))
                self._client = Client(self._cluster)
            else:
                try:
                    self._client = Client(self.spec.address, timeout=self._timeout)
                except (OSError, TimeoutError) as exc:
                    raise ClusterError(f"no Dask scheduler answered ({exc})") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


@contextmanager
def cluster_client(spec: str | ClusterSpec, *, connect_timeout: float = 10.0, engine: bool = False,
                   lazy: bool = False) -> Iterator[Any]:
    """A dask.distributed Client for `spec`; a local cluster it started is closed on exit.
    `engine`: the work runs the engine (local workers start with it loaded). `lazy`: give
    the Connection instead, which makes the client when first called: a local cluster's
    server process is started at once (_start_server), its scheduler and workers only
    then, so that what this process does first (reading its input) runs meanwhile. A
    scheduler elsewhere is reached at once, so that a wrong address is told before any work."""
    spec = spec if isinstance(spec, ClusterSpec) else ClusterSpec.parse(spec)
    require_dask()
    if spec.address is None:
        _start_server(engine)  # first: it then loads Dask while this process does too
    try:
        import dask
        from distributed import KilledWorker
    except ImportError as exc:  # installed, but broken
        raise ClusterError(f"Dask cannot be imported ({exc}); reinstall it: {INSTALL_HINT}") from None

    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its connection retries and worker restarts are not errors of ours
    connection = None
    try:
        with quiet(), dask.config.set({"distributed.worker.multiprocessing-method": _start_method()}):
            connection = Connection(spec, connect_timeout=connect_timeout)
            if not lazy or spec.address is not None:
                connection()
            yield connection if lazy else connection()
    except ImportError as exc:  # raised on a worker of a scheduler elsewhere
        raise ClusterError(f"a worker cannot import what the task needs; install the same ami-engine on every "
                           f"worker ({exc})") from None
    except KilledWorker as exc:
        raise ClusterError(f"a task was given up after its workers died again and again ({exc})") from None
    finally:
        if connection is not None:
            connection.close()
        logger.setLevel(level)


def worker_count(client: Any) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))

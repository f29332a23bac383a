"""Loaded once by the server process a local cluster forks its workers from (forkserver),
when the work needs the engine: each worker then starts with the engine imported and its
compiled loops loaded, instead of doing both itself, all at once, while the others do
the same on the same cores.

The loops are loaded by deciding one state through each path (direct and score table).
Numba's threads are started then, in this process, so the fork-safe threading layer is
chosen first (TBB where installed, else Numba's own work queue): GNU OpenMP, the usual
choice on Linux, refuses to run in a process forked after it started. Each worker runs
one task at a time, so the work queue's limit (one launching thread per process) holds.

Loading here only saves the workers time: should it fail, this server must still fork
them (an error here would stop it), and the error comes back from a worker's first task.
"""

from __future__ import annotations

import numba

numba.config.THREADING_LAYER = "forksafe"

from ..engine import load_kernels  # noqa: E402  (after the threading layer is chosen)

try:
    load_kernels()
except Exception:  # noqa: BLE001  each worker then loads them on its first task, where an error is reported
    pass

"""Engine speed on this machine (prints figures; not a test).

1. `ami-engine run --scenario balanced --n 100000` end to end (process start-up, engine,
   writing the JSONL), median of 3 runs after one warm-up run (which fills Numba's cache).
2. The batch API: 256 configs x 20,000 states through ScoreTable.evaluate, in decision
   evaluations per second, with the peak memory of the process; then how the time scales
   with the number of states and of configs. Each measurement runs in a fresh process so
   its peak memory (ru_maxrss) is its own.

Usage: python benchmarks/bench_engine.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("ami-engine")

SWEEP = r"""
import json, resource, sys, time
import numpy as np
from ami_engine.config import LEARNED_BOUNDS, load_config
from ami_engine.engine import ScoreTable
from ami_engine.scenario import generate
n_states, n_configs = int(sys.argv[1]), int(sys.argv[2])
base = load_config("base")
rng = np.random.default_rng(0)
names = list(LEARNED_BOUNDS)
lo = np.array([LEARNED_BOUNDS[k][0] for k in names]); hi = np.array([LEARNED_BOUNDS[k][1] for k in names])
configs = [base.replace(**dict(zip(names, row))) for row in rng.uniform(lo, hi, size=(n_configs, len(names)))]
warm = generate("balanced", 64, 9)
ScoreTable(warm, base).evaluate(configs[:2])  # compile / load the kernels
states = generate("balanced", n_states, 1)
t0 = time.perf_counter(); table = ScoreTable(states, base); t1 = time.perf_counter()
table.evaluate(configs); t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"states": n_states, "configs": n_configs, "table_s": t1 - t0, "evaluate_s": t2 - t1,
                  "total_s": t2 - t0, "rate": n_states * n_configs / (t2 - t0), "peak_mb": peak}))
"""


def run_cli(n: int, out: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(EXE), "run", "--scenario", "balanced", "--n", str(n), "--seed", "1", "--out", out],
                   check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sweep(n_states: int, n_configs: int) -> dict:
    res = subprocess.run([sys.executable, "-c", SWEEP, str(n_states), str(n_configs)], check=True,
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    quick = "--quick" in sys.argv
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "traces.jsonl")
        run_cli(1000, out)  # warm-up: fills the kernel cache
        times = [run_cli(100_000, out) for _ in range(1 if quick else 3)]
        size = Path(out).stat().st_size / 1e6
    print(f"ami-engine run --scenario balanced --n 100000: median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}; {size:.0f} MB of JSONL)")

    runs = [sweep(20_000, 256) for _ in range(1 if quick else 3)]
    r = sorted(runs, key=lambda x: x["total_s"])[len(runs) // 2]
    rates = ", ".join(f"{x['rate'] / 1e6:.2f}" for x in runs)
    print(f"sweep 256 configs x 20,000 states (median of {len(runs)}): {r['total_s']:.2f} s (score table "
          f"{r['table_s']:.2f} s, evaluate {r['evaluate_s']:.2f} s) = {r['rate'] / 1e6:.2f} M decisions/s; "
          f"evaluate alone {r['states'] * r['configs'] / r['evaluate_s'] / 1e6:.2f} M/s; peak memory "
          f"{r['peak_mb']:.0f} MB (all runs: {rates} M/s)")
    if quick:
        return
    print("scaling with states (256 configs):")
    for n in (5_000, 10_000, 20_000, 40_000):
        r = sweep(n, 256)
        print(f"  {n:>6} states: {r['total_s']:6.2f} s  {r['rate'] / 1e6:5.2f} M/s  peak {r['peak_mb']:5.0f} MB")
    print("scaling with configs (20,000 states):")
    for c in (32, 64, 128, 256, 512):
        r = sweep(20_000, c)
        print(f"  {c:>6} configs: {r['total_s']:6.2f} s  {r['rate'] / 1e6:5.2f} M/s  peak {r['peak_mb']:5.0f} MB")


if __name__ == "__main__":
    main()

"""Time `metrics_from_traces` on a 1,000,000-line traces file and report its peak memory.

The traces are synthetic but shaped like the engine's (every field written, states
included, floats with full precision), written with the real trace writer. Generation
and each measurement run in fresh Python processes started from this small one, so that
the measured peak resident memory (ru_maxrss, which survives exec) is the measurement's
own; worker processes are reported separately.

    python benchmarks/bench_metrics.py [--n 1000000] [--file traces.jsonl] [--workers N]

Prints figures only; no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SAFE_ACTION = (0.0, 0.5, 0.0, 1.0)

_MEASURE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ami_engine.learning.feedback_metrics import metrics_from_traces
t1 = time.perf_counter()
cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
workers = None if sys.argv[2] == "auto" else int(sys.argv[2])
sums = metrics_from_traces(sys.argv[1], workers=workers)
t2 = time.perf_counter()
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, (me, kids)))
print(json.dumps({
    "import_s": t1 - t0,
    "metrics_s": t2 - t1,
    "cpu_s": cpu,
    "peak_rss_mb": me.ru_maxrss / 1024,
    "peak_rss_worker_mb": kids.ru_maxrss / 1024,
    "metrics": sums.to_dict(),
}))
"""


def write_synthetic_traces(path: str, n: int, seed: int = 0) -> None:
    """Decisions with the engine's shape: levels 0/1/2, clamps at level 1, SAFE_ACTION at 2."""
    import numpy as np

    from ami_engine.io.stateset import StateSet
    from ami_engine.io.traces import REASONS, TraceColumns, write_traces

    rng = np.random.default_rng(seed)
    level = rng.choice(3, size=n, p=(0.45, 0.30, 0.25)).astype(np.int8)
    raw = rng.integers(0, 5, size=(n, 4)) / 4.0
    clamped = (level == 1) & (rng.random(n) < 0.8)
    final = raw.copy()
    final[clamped] = np.clip(raw[clamped] * rng.uniform(0.4, 1.0, size=(int(clamped.sum()), 4)), 0.0, 1.0)
    final[level == 2] = SAFE_ACTION
    delta_cus = rng.normal(0.0, 0.1, n)
    delta_cus[:: 1 + n // 8] = np.nan  # first decision of a stream
    cols = TraceColumns(
        t=list(range(n)),
        cus=rng.random(n),
        cus_raw=rng.random(n),
        delta_cus=delta_cus,
        cus_mean=rng.random(n),
        confidence=rng.random(n),
        delta_confidence=np.where(clamped, rng.normal(0.0, 0.05, n), np.nan),
        raw_action=raw,
        final_action=final,
        soft_clamp=clamped,
        human_escalation=level == 2,
        level=level,
        reason=rng.integers(0, len(REASONS), n).astype(np.int8),
        W=rng.random(n),
        J=rng.random(n),
        H=rng.random(n),
        C=rng.random(n),
    )
    states = StateSet(
        values=rng.random((n, 9)),
        streams=[f"stream-{i * 8 // n}" for i in range(n)],
        t=[None] * n,
        ids=[f"s{i}" for i in range(n)],
    )
    write_traces(path, cols, states, config_id="0123456789abcdef", model="ami-v1", chaos=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--file", help="measure this traces file instead of generating one")
    parser.add_argument("--workers", default="auto", help="worker processes ('auto' = usable CPUs)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (median and best reported)")
    parser.add_argument("--generate", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        write_synthetic_traces(args.generate, args.n)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = os.path.join(tmp, "traces.jsonl")
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "--generate", path, "--n", str(args.n)], check=True)
            print(f"generated {args.n:,} records in {time.perf_counter() - start:.1f} s")
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            lines = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 24), b""))
        print(f"file: {lines:,} lines, {size / 1e6:.0f} MB, {size / max(lines, 1):.0f} bytes per line; "
              f"{len(os.sched_getaffinity(0))} usable CPUs, load average {os.getloadavg()[0]:.2f}")
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, "-c", _MEASURE, path, args.workers], check=True,
                                 capture_output=True, text=True)
            runs.append(json.loads(out.stdout))
            r = runs[-1]
            print(f"metrics_from_traces: {r['metrics_s']:.3f} s wall, {r['cpu_s']:.2f} s CPU "
                  f"(import {r['import_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"workers' peak RSS {r['peak_rss_worker_mb']:.0f} MB")
        in_process = [r["metrics_s"] for r in runs]
        print(f"metrics_from_traces: median {statistics.median(in_process):.3f} s, best {min(in_process):.3f} s")
        print("metrics:", json.dumps(runs[-1]["metrics"]))
        # The command a user runs, end to end: process start-up, imports, workers, output.
        exe = os.path.join(os.path.dirname(sys.executable), "ami-engine")
        walls = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run([exe, "metrics", path, "--json"], check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - start)
        print(f"ami-engine metrics {os.path.basename(path)} --json: median {statistics.median(walls):.3f} s, "
              f"best {min(walls):.3f} s (runs: {', '.join(f'{w:.2f}' for w in walls)})")


if __name__ == "__main__":
    main()

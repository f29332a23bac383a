"""Time `metrics` on the same 1,000,000 traces as JSONL and as Parquet.

The traces are bench_metrics.py's synthetic ones (every field written, states included),
converted to Parquet with `ami-engine convert`. Each measurement runs in a fresh Python
process; the figures are the median of several runs, in process (`metrics_from_traces`)
and end to end (`ami-engine metrics FILE --json`, start-up included). The two forms must
give the same figures to the bit; the script says so, or stops.

    python benchmarks/bench_parquet.py [--n 1000000] [--repeat 5]

Prints figures only; no assertions beyond the equality of the figures.
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

_HERE = os.path.dirname(os.path.abspath(__file__))

_MEASURE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ami_engine.learning.feedback_metrics import metrics_from_traces
t1 = time.perf_counter()
sums = metrics_from_traces(sys.argv[1])
t2 = time.perf_counter()
me = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"import_s": t1 - t0, "metrics_s": t2 - t1, "peak_rss_mb": me.ru_maxrss / 1024,
                  "metrics": sums.to_dict()}))
"""


def _measure(path: str, repeat: int) -> tuple[list[dict], list[float]]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", _MEASURE, path], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout))
    exe = os.path.join(os.path.dirname(sys.executable), "ami-engine")
    walls = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([exe, "metrics", path, "--json"], check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
    return runs, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement (median reported)")
    args = parser.parse_args()
    exe = os.path.join(os.path.dirname(sys.executable), "ami-engine")
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, table = os.path.join(tmp, "traces.jsonl"), os.path.join(tmp, "traces.parquet")
        start = time.perf_counter()
        # In a process of its own, so that the measured processes' peak memory is their own
        # (ru_maxrss survives exec).
        subprocess.run([sys.executable, os.path.join(_HERE, "bench_metrics.py"), "--generate", jsonl, "--n",
                        str(args.n)], check=True)
        print(f"generated {args.n:,} records in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        subprocess.run([exe, "convert", jsonl, table], check=True, stderr=subprocess.DEVNULL)
        print(f"ami-engine convert traces.jsonl traces.parquet: {time.perf_counter() - start:.1f} s; "
              f"{os.path.getsize(jsonl) / 1e6:.0f} MB JSONL -> {os.path.getsize(table) / 1e6:.0f} MB Parquet; "
              f"{len(os.sched_getaffinity(0))} usable CPUs, load average {os.getloadavg()[0]:.2f}")
        figures = {}
        for label, path in (("JSONL", jsonl), ("Parquet", table)):
            runs, walls = _measure(path, args.repeat)
            inside = statistics.median(r["metrics_s"] for r in runs)
            figures[label] = (inside, statistics.median(walls), runs[-1]["metrics"])
            each = ", ".join(f"{r['metrics_s']:.3f}" for r in runs)
            print(f"{label:8s} metrics_from_traces: median {inside:.3f} s (runs {each}), "
                  f"peak RSS {runs[-1]['peak_rss_mb']:.0f} MB; "
                  f"ami-engine metrics end to end: median {statistics.median(walls):.3f} s")
        if figures["JSONL"][2] != figures["Parquet"][2]:
            sys.exit(f"the figures differ:\n{figures['JSONL'][2]}\n{figures['Parquet'][2]}")
        print("figures identical in both forms:", json.dumps(figures["Parquet"][2]))
        print(f"Parquet vs JSONL: {figures['JSONL'][0] / figures['Parquet'][0]:.1f}x faster in process, "
              f"{figures['JSONL'][1] / figures['Parquet'][1]:.1f}x end to end")


if __name__ == "__main__":
    main()

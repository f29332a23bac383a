"""Time and peak memory of the commands as the traces grow: chaos traces with states,
1,000 streams, at 20k, 200k, 2M and 10M decisions.

At each size, every step runs as a command of its own, under `/usr/bin/time -f '%e %M'`
(wall seconds, and the largest resident set of one process), while the resident sets of
the whole process tree (Dask workers included) are summed every 0.1 s for its peak:

    run      ami-engine run --scenario chaos --n N --streams 1000 --out traces.parquet, and
             with --cluster local:2 (the same file, checked)
    convert  ami-engine convert traces.parquet traces.jsonl   (the JSONL form of the same traces)
    metrics  ami-engine metrics traces.parquet --json, on traces.jsonl, and on the Parquet
             with --cluster local:2 (the same figures, checked)
    learn    ami-engine learn --traces traces.parquet --budget 300, in one process and
             with --cluster local:2

and the held-out L reduction of each suggestion, 1 - L(suggestion) / L(baseline) on the
held-out data, read from its [meta] (from the --json summary when no suggestion was
written). The traces of a size are removed before the next size is made.

A size above 10M (e.g. 50M) is a month-like folder of days, `traces/day=D/traces.parquet`,
10M decisions a day, each day's run seeded D (the same 1,000 streams every day, so a
stream's decisions run on from day to day); `run --scenario` makes at most a machine's
memory worth of states at once. At those sizes only the days are made and learned from.

    python benchmarks/bench_scale.py --sizes 20k,200k [--budget 300] [--no-learn] [--workdir DIR] [--json out.json]

Prints a table; no assertions. Needs the cluster extra (pip install 'ami-engine[cluster]')
for the --cluster steps and for psutil.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from typing import Any

SIZES = {"20k": 20_000, "200k": 200_000, "2M": 2_000_000, "10M": 10_000_000, "50M": 50_000_000}
DAY = 10_000_000  # decisions a day, above which a size is made as days
STREAMS = 1000
SEED = 1


def _size(text: str) -> int:
    if text in SIZES:
        return SIZES[text]
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def step(name: str, args: list[str], workdir: str) -> dict[str, Any]:
    """Run one command; its wall time, largest process, peak of the tree, and stdout."""
    timing = os.path.join(workdir, ".time")
    cmd = ["/usr/bin/time", "-f", "%e %M", "-o", timing, sys.executable, "-m", "ami_engine.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    done.set()
    sampler.join()
    with open(timing) as fh:
        last = fh.read().strip().splitlines()[-1].split()
    row = {"step": name, "exit": proc.returncode, "wall_s": float(last[0]), "max_process_mb": int(last[1]) / 1024,
           "tree_peak_mb": peak[0] / 2**20, "stdout": stdout}
    if proc.returncode not in (0, 1):
        print(f"{name}: exit {proc.returncode}: {stderr.strip()[-500:]}", file=sys.stderr)
    return row


def held_out_reduction(suggestion: str, summary: str) -> float | None:
    """1 - L(suggestion)/L(baseline) on the held-out data, from the suggestion's [meta]."""
    meta = None
    if os.path.exists(suggestion):
        with open(suggestion, "rb") as fh:
            meta = tomllib.load(fh).get("meta")
    elif summary.strip():
        meta = json.loads(summary).get("meta")
    if not meta:
        return None
    held = meta["metrics"]["heldout"]
    return 1.0 - held["suggestion"]["L"] / held["baseline"]["L"]


def _same_bytes(a: str, b: str) -> bool:
    if not (os.path.exists(a) and os.path.exists(b)):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def _content(path: str) -> list[str]:
    """A suggestion's lines but the time it was written."""
    with open(path) as fh:
        return [line for line in fh if not line.startswith("created = ")]


def one_size(n: int, budget: int, workdir: str, cluster: str, learn: bool = True,
             only_learn: bool = False) -> list[dict[str, Any]]:
    rows = []
    traces, jsonl, shared = "traces.parquet", "traces.jsonl", "traces-cluster.parquet"
    if n > DAY:
        try:
            for day, start in enumerate(range(0, n, DAY), 1):
                out = os.path.join("traces", f"day={day}", "traces.parquet")
                os.makedirs(os.path.join(workdir, os.path.dirname(out)), exist_ok=True)
                rows.append(step(f"run -> parquet day={day}", ["run", "--scenario", "chaos", "--n",
                                                               str(min(DAY, n - start)), "--seed", str(day),
                                                               "--streams", str(STREAMS), "--chaos", "--out", out],
                                 workdir))
            _learn_steps(rows, "traces", budget, workdir, cluster)
        finally:
            for name in ("traces", "alone", "cluster"):
                shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
        return _finish(rows, n)
    try:
        rows.append(step("run -> parquet", ["run", "--scenario", "chaos", "--n", str(n), "--seed", str(SEED),
                                            "--streams", str(STREAMS), "--chaos", "--out", traces], workdir))
        if only_learn:
            _learn_steps(rows, traces, budget, workdir, cluster)
            return _finish(rows, n)
        rows.append(step(f"run -> parquet --cluster {cluster}",
                         ["run", "--scenario", "chaos", "--n", str(n), "--seed", str(SEED), "--streams",
                          str(STREAMS), "--chaos", "--out", shared, "--cluster", cluster], workdir))
        rows[-1]["same_file"] = _same_bytes(os.path.join(workdir, traces), os.path.join(workdir, shared))
        os.remove(os.path.join(workdir, shared))
        rows.append(step("convert -> jsonl", ["convert", traces, jsonl], workdir))
        rows.append(step("metrics parquet", ["metrics", traces, "--json"], workdir))
        rows.append(step("metrics jsonl", ["metrics", jsonl, "--json"], workdir))
        rows.append(step(f"metrics parquet --cluster {cluster}", ["metrics", traces, "--json", "--cluster", cluster],
                         workdir))
        os.remove(os.path.join(workdir, jsonl))
        if learn:
            _learn_steps(rows, traces, budget, workdir, cluster)
    finally:
        for name in (traces, jsonl, shared, "alone", "cluster"):
            path = os.path.join(workdir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)
    return _finish(rows, n)


def _learn_steps(rows: list[dict[str, Any]], traces: str, budget: int, workdir: str, cluster: str) -> None:
    for label, extra in (("learn", []), (f"learn --cluster {cluster}", ["--cluster", cluster])):
        out = os.path.join(workdir, "cluster" if extra else "alone", "suggestion.toml")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        row = step(label, ["learn", "--traces", traces, "--budget", str(budget), "--seed", str(SEED),
                           "--out", out, "--fresh", "--json", *extra], workdir)
        row["heldout_L_reduction"] = held_out_reduction(out, row["stdout"])
        rows.append(row)
    same = [os.path.join(workdir, d, "suggestion.toml") for d in ("alone", "cluster")]
    if all(os.path.exists(p) for p in same):
        rows[-1]["same_suggestion"] = _content(same[0]) == _content(same[1])


def _finish(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    by_step = {r["step"]: r for r in rows}
    for name, row in by_step.items():
        if name.startswith("metrics") and name != "metrics parquet":
            row["same_figures_as_parquet"] = row["stdout"] == by_step["metrics parquet"]["stdout"]
    for row in rows:
        row["n"] = n
        row.pop("stdout", None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20k,200k", help="comma-separated: 20k, 200k, 2M, 10M, 50M (or any N)")
    parser.add_argument("--budget", type=int, default=300, help="learn --budget")
    parser.add_argument("--cluster", default="local:2", help="the --cluster of the cluster steps")
    parser.add_argument("--no-learn", action="store_true", help="leave out the learn steps")
    parser.add_argument("--only-learn", action="store_true", help="only make the traces and learn from them")
    parser.add_argument("--workdir", default=None, help="where the traces go (default: a temporary folder)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    sizes = [_size(s.strip()) for s in args.sizes.split(",") if s.strip()]
    own = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="bench_scale_") if own else args.workdir
    os.makedirs(workdir, exist_ok=True)
    print(f"{len(os.sched_getaffinity(0))} usable CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"chaos, {STREAMS} streams, seed {SEED}, learn budget {args.budget}")
    all_rows = []
    try:
        for n in sizes:
            start = time.perf_counter()
            rows = one_size(n, args.budget, workdir, args.cluster, learn=not args.no_learn, only_learn=args.only_learn)
            all_rows.extend(rows)
            print(f"\n{n:,} decisions ({time.perf_counter() - start:.0f} s)")
            print(f"  {'step':36s} {'exit':>4s} {'wall s':>8s} {'max proc MB':>12s} {'tree peak MB':>13s}  held-out L")
            for r in rows:
                red = r.get("heldout_L_reduction")
                extra = "" if red is None else f"  -{red * 100:.1f}%"
                if "same_figures_as_parquet" in r:
                    extra += f"  (same figures as Parquet: {r['same_figures_as_parquet']})"
                if "same_file" in r:
                    extra += f"  (same file as in one process: {r['same_file']})"
                if "same_suggestion" in r:
                    extra += f"  (same suggestion as in one process, but its time: {r['same_suggestion']})"
                print(f"  {r['step']:36s} {r['exit']:4d} {r['wall_s']:8.2f} {r['max_process_mb']:12.0f} "
                      f"{r['tree_peak_mb']:13.0f}{extra}")
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            timing = os.path.join(workdir, ".time")
            if os.path.exists(timing):
                os.remove(timing)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump({"cpus": len(os.sched_getaffinity(0)), "streams": STREAMS, "budget": args.budget,
                       "rows": all_rows}, fh, indent=1)


if __name__ == "__main__":
    main()

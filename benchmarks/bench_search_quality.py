"""Search quality for the time: held-out L of `learn` on the README's first command's data
and constraints (chaos, n=20000, seed 1), by search, with the wall time of each run.

    python benchmarks/bench_search_quality.py [--reference-src PATH] [--large N] [--skip-default]

Runs, each as its own process:
- default: `learn --budget 300` (this code: racing, then the local refinement);
- reference (with --reference-src): the same command run by another checkout's code
  (e.g. the code before racing), for the figure to compare with;
- large (with --large N, e.g. 45000): `learn --strategy sobol --budget N --batch-size 1000`,
  a search many times larger, for how close to it the default gets (or --large-heldout-l L:
  that search's held-out L from an earlier run, as it takes a while).
Prints one line per run: held-out L, training L, the gate's status and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = ["--scenario", "chaos", "--n", "20000", "--seed", "1"]


def run(label: str, args: list[str], src: str | None = None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "suggestion.toml"
        cmd = [sys.executable, "-m", "ami_engine.cli", "learn", *DATA, *args, "--out", str(out), "--json"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{label}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    doc = json.loads(proc.stdout)
    metrics = doc["meta"]["metrics"]
    row = {"run": label, "heldout_L": metrics["heldout"]["suggestion"]["L"],
           "train_L": metrics["train"]["suggestion"]["L"], "baseline_heldout_L": metrics["heldout"]["baseline"]["L"],
           "status": doc["status"], "wall_s": round(wall, 1),
           "command": " ".join(["ami-engine", "learn", *DATA, *args])}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-src", help="the src folder of another checkout to compare with")
    parser.add_argument("--large", type=int, default=0, help="budget of a large Sobol search (0: none)")
    parser.add_argument("--large-heldout-l", type=float, help="the held-out L of a large search run before "
                        "(instead of --large)")
    parser.add_argument("--skip-default", action="store_true")
    ns = parser.parse_args()
    rows = []
    if ns.reference_src:
        rows.append(run("reference, budget 300", ["--budget", "300"], ns.reference_src))
    if not ns.skip_default:
        rows.append(run("default, budget 300", ["--budget", "300"]))
    if ns.large:
        rows.append(run(f"sobol, budget {ns.large}", ["--strategy", "sobol", "--budget", str(ns.large),
                                                      "--batch-size", "1000"]))
    large = next((r["heldout_L"] for r in rows if r["run"].startswith("sobol")), ns.large_heldout_l)
    if large is not None:
        for r in rows:
            r["vs_large"] = r["heldout_L"] / large - 1.0
            print(f"{r['run']}: held-out L {r['heldout_L']:.6f} ({100 * r['vs_large']:+.2f}% vs the large search), "
                  f"{r['wall_s']} s")


if __name__ == "__main__":
    main()

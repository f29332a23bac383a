"""Learning quality and speed on this machine (prints figures; not a test).

For each scenario (chaos, balanced):

    ami-engine learn --scenario NAME --n 20000 --seed 1 --budget 300 --out ... --json

wall time (process start-up included), held-out L of `base` and of the suggestion and the
reduction, the gate's verdict (default critical floor), and the critical scenario's
fail-safe rate before and after. Then `benchmarks/bench_metrics.py` (metrics on a
1,000,000-line traces file, generated here). One warm-up `learn` fills Numba's cache first.

Usage: python benchmarks/bench_learning.py [--no-metrics]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("ami-engine")
HERE = Path(__file__).resolve().parent


def learn(tmp: str, scenario: str, n: int, budget: int, name: str | None = None) -> tuple[float, dict, int]:
    out = Path(tmp) / f"{name or scenario}.toml"  # its study beside it: one per run
    cmd = [str(EXE), "learn", "--scenario", scenario, "--n", str(n), "--seed", "1", "--budget", str(budget),
           "--out", str(out), "--json"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode not in (0, 1):
        raise SystemExit(f"learn failed ({res.returncode}): {res.stderr}")
    return wall, json.loads(res.stdout), res.returncode


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        learn(tmp, "balanced", 500, 8, "warm-up")  # kernels compiled / loaded from cache
        for scenario in ("chaos", "balanced"):
            wall, doc, rc = learn(tmp, scenario, 20000, 300)
            meta = doc["meta"]
            held = meta["metrics"]["heldout"]
            b, s = held["baseline"]["L"], held["suggestion"]["L"]
            crit = meta["scenarios"]["critical"]
            print(f"learn --scenario {scenario} --n 20000 --seed 1 --budget 300: {wall:.1f} s, exit {rc}, "
                  f"gate {meta.get('gate', {}).get('verdict', 'n/a')}")
            print(f"  held-out L: base {b:.4f} -> suggestion {s:.4f} ({(b - s) / b * 100:.1f}% lower); "
                  f"train L {meta['metrics']['train']['baseline']['L']:.4f} -> "
                  f"{meta['metrics']['train']['suggestion']['L']:.4f}")
            print(f"  critical scenario fail-safe rate: {crit['baseline']['fail_safe_rate'] * 100:.1f}% -> "
                  f"{crit['suggestion']['fail_safe_rate'] * 100:.1f}%; mean H {crit['baseline']['mean_H']:.4f} -> "
                  f"{crit['suggestion']['mean_H']:.4f}")
            print(f"  needless fail-safes removed: {meta['needless']['count']} of {meta['needless']['baseline_l2']}"
                  f" ({', '.join(meta['needless']['summary'])})")
    if "--no-metrics" not in sys.argv:
        subprocess.run([sys.executable, str(HERE / "bench_metrics.py")], check=True)


if __name__ == "__main__":
    main()

"""Coverage of the gate's certificate, measured (prints figures; not a test).

1. Learn on the README's data (`learn --scenario chaos --n 20000 --seed 1 --budget 300`,
   Python API, gated) and print the suggestion's certificate.
2. Loss bound: draw many independent held-out sets of chaos decisions (fresh seeds: 5,000,
   2,000 and 500 decisions in 2 streams), each
   decided by the baseline and by the suggestion; the truth is the reduction on one large
   independent sample. Print how often the lower bound holds, and how close it sits to the
   point estimate (the bound as a share of the point estimate).
3. Critical bounds: many independent critical sets of 4,000 states (fresh seeds); print
   how often the Clopper-Pearson lower bound of the fail-safe rate and the Chernoff-Hoeffding
   upper bound of the mean H hold, and how often the suggestion keeps the floor on fresh
   critical states (its certificate's promise).

Usage: python benchmarks/bench_certificate.py [--samples N] [--delta D]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ami_engine.config import load_config
from ami_engine.engine import run
from ami_engine.gate import run_gate
from ami_engine.gate.certificate import (
    block_length,
    decision_losses,
    fail_safe_rate_lower,
    loss_reduction_bound,
    mean_upper,
)
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.scenario import generate


def coverage_line(label: str, held: list[bool], delta: float) -> str:
    share = float(np.mean(held))
    se = np.sqrt(delta * (1 - delta) / len(held))
    return f"  {label}: holds in {sum(held)} of {len(held)} samples = {share:.1%} (target >= {1 - delta:.0%}; " \
           f"the count's own standard error {se:.1%})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--delta", type=float, default=0.05)
    args = parser.parse_args()
    delta, samples = args.delta, args.samples
    base = load_config("base")

    start = time.perf_counter()
    result = learn(data_from_scenario("chaos", 20000, 1), base, LearnSettings(budget=300, seed=1), gate_fn=run_gate)
    meta = result.suggestion_toml["meta"]
    cert = meta["certificate"]
    print(f"learn --scenario chaos --n 20000 --seed 1 --budget 300: {result.status} "
          f"({time.perf_counter() - start:.1f} s)")
    print(f"  {cert['promise']}")
    print(f"  (bounds at delta {cert['delta']:.4g} each: Bonferroni over the {cert['bonferroni_finalists']} "
          f"finalists the gate may try) loss reduction {cert['loss_reduction']:.4f}, lower bound "
          f"{cert['loss_reduction_lower']:.4f}; critical fail-safe rate {cert['critical_fail_safe_rate']:.4f}, "
          f"lower bound {cert['critical_fail_safe_rate_lower']:.4f}; mean H {cert['critical_mean_H']:.4f}, "
          f"upper bound {cert['critical_mean_H_upper']:.4f}")
    sugg = result.suggestion
    block = block_length(int(base["CUS_MEAN_WINDOW"]))

    big = generate("chaos", 1_000_000, 999, 400)
    truth = 1 - decision_losses(run(big, sugg), meta_weights(meta)).sum() \
        / decision_losses(run(big, base), meta_weights(meta)).sum()
    print(f"\nloss bound at delta {delta}: truth (1,000,000 fresh chaos decisions) reduction {truth:.4f}")
    for n, streams in ((5000, 2), (2000, 2), (500, 2)):
        held, shares = [], []
        for k in range(samples):
            states = generate("chaos", n, 10_000 + k, streams)
            codes, _ = states.stream_codes()
            ours = decision_losses(run(states, sugg), meta_weights(meta))
            theirs = decision_losses(run(states, base), meta_weights(meta))
            point, lower = loss_reduction_bound(theirs, ours, codes, block, delta)
            held.append(lower <= truth)
            shares.append(lower / point)
        print(coverage_line(f"{n:,} decisions in {streams} streams", held, delta)
              + f"; bound / point estimate: median {np.median(shares):.1%}, min {np.min(shares):.1%}")

    crit_big = run(generate("critical", 1_000_000, 998, 8), sugg)
    rate_truth, h_truth = float(np.mean(crit_big.level == 2)), float(np.mean(crit_big.H))
    floor = meta["critical_floor"]["factor"] * meta["scenarios"]["critical"]["baseline"]["fail_safe_rate"]
    print(f"\ncritical bounds at delta {delta}: truth (1,000,000 fresh critical states) fail-safe rate "
          f"{rate_truth:.4f}, mean H {h_truth:.5f}; the floor {floor:.4f}")
    rate_held, h_held, kept = [], [], []
    for k in range(samples):
        cols = run(generate("critical", 4000, 20_000 + k, 8), sugg)
        n_l2, sum_h = int(np.sum(cols.level == 2)), float(np.sum(cols.H))
        rate_held.append(float(fail_safe_rate_lower(n_l2, 4000, delta)) <= rate_truth)
        h_held.append(float(mean_upper(sum_h, 4000, delta)) >= h_truth)
        kept.append(n_l2 / 4000 >= floor)
    print(coverage_line("Clopper-Pearson lower bound of the fail-safe rate, 4,000 states", rate_held, delta))
    print(coverage_line("Chernoff-Hoeffding upper bound of the mean H, 4,000 states", h_held, delta))
    print(f"  the suggestion keeps the critical floor on {sum(kept)} of {samples} fresh critical sets "
          f"({np.mean(kept):.1%}); on 1,000,000 fresh states its rate {rate_truth:.4f} vs floor {floor:.4f}")


def meta_weights(meta):
    from ami_engine.learning.loss import LossWeights

    return LossWeights(*meta["loss_weights"])


if __name__ == "__main__":
    main()

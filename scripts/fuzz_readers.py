"""Feed every reader thousands of byte-mutated copies of a valid input and count what happens.

    python scripts/fuzz_readers.py [--n 2000] [--seed 0] [--reader NAME ...]

Each reader (states, states.gz, regression, traces, traces.gz, config, config.gz,
suggestion, history) gets `--n` mutations of its valid input (1 to 4 edits each: bit
flips, byte changes, deletions, insertions, tokens such as bad UTF-8, markup, huge
numbers and deep nesting, truncation); config.values and suggestion.values get their
TOML values replaced by values of other types and sizes (tampered metadata). A mutated
input must be read, or refused with one of the errors the command line reports as a
one-line message naming the file. Prints, per reader, how many were read, how many were
refused cleanly and how many crashed (with the first few crashes); exits 1 when anything
crashed.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz_inputs import READER_BY_NAME, READERS, outcome, random_mutations  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="mutations per reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reader", action="append", choices=sorted(READER_BY_NAME), help="only these readers")
    parser.add_argument("--show", type=int, default=5, help="crashes to print per reader")
    args = parser.parse_args()
    readers = [READER_BY_NAME[name] for name in args.reader] if args.reader else list(READERS)
    crashed = 0
    print(f"{'reader':<17} {'mutations':>9} {'read':>6} {'refused':>8} {'crashed':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for reader in readers:
            rng = random.Random(f"{args.seed}-{reader.name}")
            counts: Counter[str] = Counter()
            crashes: list[str] = []
            start = time.perf_counter()
            for _ in range(args.n):
                result = outcome(reader, reader.mutator(reader.valid, random_mutations(rng)), Path(folder))
                if result in ("ok", "error"):
                    counts[result] += 1
                else:
                    counts["crash"] += 1
                    crashes.append(re.sub(r"0x[0-9a-f]+|\d+", "N", result))
            seconds = time.perf_counter() - start
            print(f"{reader.name:<17} {args.n:>9} {counts['ok']:>6} {counts['error']:>8} {counts['crash']:>8} "
                  f"{seconds:>8.1f}")
            for text, count in Counter(crashes).most_common(args.show):
                print(f"    {count} x {text}")
            crashed += counts["crash"]
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())

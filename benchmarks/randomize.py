"""The cost of ``randomize=True``: the shuffled-ESD pass against the default pass.

all-MiniLM-L6-v2 (``rmt.pretrained``: 37 matrices of 384 to 1536 and the 30522x384 token
embedding), analysed in fresh processes with one BLAS/Numba thread, with and without
``randomize=True``; best of ``--repeat`` timed runs each, after a warm-up run that loads
the Numba caches. ``randomize=True`` shuffles every matrix (a seeded Rao–Sandelius shuffle
in compiled code), computes its ESD, fits MP to it and measures two distances: about one
more ESD per layer. Goal: at most 2.2x the default pass.

Run: ``python -m benchmarks.randomize``; writes ``benchmarks/results/randomize.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks._common import machine, publish, run_json

CHILD = """
import json, sys, time
import rmt
path, randomize, repeat = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
rmt.analyze(path, progress=False, randomize=randomize)  # Numba caches, imports
best = float("inf")
for _ in range(repeat):
    start = time.perf_counter()
    df = rmt.analyze(path, progress=False, randomize=randomize)
    best = min(best, time.perf_counter() - start)
traps = int(df["num_traps"].sum()) if "num_traps" in df else None
print(json.dumps({"seconds": best, "rows": len(df), "traps": traps}))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure MiniLM both ways; write ``benchmarks/results/randomize.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from rmt.pretrained import fetch

    path = str(fetch("all-MiniLM-L6-v2"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    info = machine(1)
    plain = run_json([sys.executable, "-c", CHILD, path, "0", str(args.repeat)], env=env)
    rand = run_json([sys.executable, "-c", CHILD, path, "1", str(args.repeat)], env=env)
    ratio = rand["seconds"] / plain["seconds"]
    md = (f"randomize=True — {info['cpu']}, 1 thread, best of {args.repeat}, {info['date']}\n\n"
          "| checkpoint | rows | analyze() | analyze(randomize=True) | ratio | goal | traps |\n"
          "|---|---|---|---|---|---|---|\n"
          f"| all-MiniLM-L6-v2 | {plain['rows']} | {plain['seconds']:.2f} s | "
          f"{rand['seconds']:.2f} s | {ratio:.2f} | ≤ 2.2 | {rand['traps']} |")
    publish("randomize", {"machine": info, "plain": plain, "randomize": rand,
                          "ratio": ratio}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Layers side by side: ``rmt.analyze(n_jobs=2)`` against one core and two BLAS threads.

all-MiniLM-L6-v2 (41 weight matrices, from the package index through ``rmt.pretrained``)
analysed with the default columns, each configuration in a fresh process that warms its
kernels up first and then times one pass:

- ``n_threads=1``: one core (the reference);
- ``n_threads=2``: one layer at a time, two BLAS/Numba threads inside each call;
- ``n_jobs=2``: two layers at a time in two threads of one process (``backend="threads"``);
- ``n_jobs=2, backend="processes"``: the spawned process pool (which runs the work in the
  calling process when it is shorter than a worker's start).

Rounds interleave the configurations (each in every position), the median per
configuration is reported, idle and with one busy process competing for a core. The
LLM-shaped checkpoint's rows per core count are ``benchmarks.analyze_llm``'s.
Run: ``python -m benchmarks.layers_parallel [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np

from benchmarks._common import machine, publish, run_json

CONFIGS = {"1 core (n_threads=1)": "n_threads=1",
           "2 BLAS threads (n_threads=2)": "n_threads=2",
           "n_jobs=2 (threads)": "n_jobs=2",
           "n_jobs=2, backend='processes'": "n_jobs=2, backend='processes'"}
REFERENCE = "1 core (n_threads=1)"

CHILD = """
import json, sys, time
import rmt
path = str(rmt.pretrained.fetch("all-MiniLM-L6-v2"))
rmt.analyze(path, n_threads=1, progress=False)  # kernels compiled or loaded from cache
start = time.perf_counter()
df = rmt.analyze(path, progress=False, {options})
print(json.dumps({{"seconds": time.perf_counter() - start, "layers": len(df),
                  "failed": int((df.status == "failed").sum())}}))
"""


def rounds(n_rounds: int) -> dict[str, list[float]]:
    """Seconds per configuration, the configurations rotated through every position."""
    names = list(CONFIGS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out = run_json([sys.executable, "-c", CHILD.format(options=CONFIGS[name])])
            times[name].append(out["seconds"])
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``benchmarks/results/layers_parallel.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import rmt

    rmt.pretrained.fetch("all-MiniLM-L6-v2")
    info = machine(2)
    result = {"idle": rounds(args.rounds)}
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result["one busy process"] = rounds(args.rounds)
    finally:
        hog.kill()
        hog.wait()
    lines = [f"Layers side by side — all-MiniLM-L6-v2 (41 matrices), {info['cpu']}, "
             f"{info['cores']} cores, median of {args.rounds} interleaved rounds, "
             f"{info['date']}", "",
             "| configuration | idle s | × 1 core | one busy process s | × 1 core |",
             "|---|---|---|---|---|"]
    medians = {load: {k: float(np.median(v)) for k, v in t.items()}
               for load, t in result.items()}
    for name in CONFIGS:
        cells = []
        for load in result:
            m = medians[load]
            cells += [f"{m[name]:.2f}", f"{m[REFERENCE] / m[name]:.2f}×"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Goal: n_jobs=2 ≥ 1.7× one core, idle, on 2 cores."]
    publish("layers_parallel", {"machine": info, "seconds": result, "median": medians},
            "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

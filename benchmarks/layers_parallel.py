"""Layers side by side: ``rmt.analyze(n_jobs=2)`` against one core and two BLAS threads.

all-MiniLM-L6-v2 (41 weight matrices, from the package index through ``rmt.pretrained``)
analysed with the default columns, each configuration in a fresh process that warms its
kernels up first and then times one pass:

- ``n_threads=1``: one core (the reference);
- ``n_threads=2``: one layer at a time, two BLAS/Numba threads inside each call;
- ``n_jobs=2``: two layers at a time in two threads of one process (``backend="threads"``);
- ``n_jobs=2, backend="processes"``: the spawned process pool (which runs the work in the
  calling process when it is shorter than a worker's start);
- the ceiling: two processes, each analysing half the layers (split by a-priori cost),
  both warmed up and started at one agreed instant, timed until the later ends — no GIL
  and no start-up, so what two cores of this machine give this work at best.

Rounds interleave the configurations (each in every position), the median per
configuration is reported, idle and with one busy process competing for a core. The
LLM-shaped checkpoint's rows per core count are ``benchmarks.analyze_llm``'s.
Run: ``python -m benchmarks.layers_parallel [--rounds 5] [--idle-only]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from benchmarks._common import machine, publish, run_json

CONFIGS = {"1 core (n_threads=1)": "n_threads=1",
           "2 BLAS threads (n_threads=2)": "n_threads=2",
           "n_jobs=2 (threads)": "n_jobs=2",
           "n_jobs=2, backend='processes'": "n_jobs=2, backend='processes'"}
CEILING = "ceiling: 2 processes, half the layers each"
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


HALF = """
import json, sys, time
import rmt
from rmt.io import open_checkpoint
from rmt.runner import _cost
path = str(rmt.pretrained.fetch("all-MiniLM-L6-v2"))
part, start_at = int(sys.argv[1]), float(sys.argv[2])
tensors = {n: t for n, t in open_checkpoint(path) if t.ndim >= 2}
load, mine = [0.0, 0.0], []
for name in sorted(tensors, key=lambda n: -_cost(tensors[n])):  # longest first, to the
    k = load.index(min(load))                                   # less loaded half
    load[k] += _cost(tensors[name]) + 0.01
    if k == part:
        mine.append(name)
rmt.analyze(path, n_threads=1, progress=False, layers=mine)  # warm
time.sleep(max(0.0, start_at - time.time()))
rmt.analyze(path, n_threads=1, progress=False, layers=mine)
print(json.dumps({"end": time.time()}))
"""


def ceiling() -> float:
    """Seconds from an agreed start until the later of two half-model processes ends."""
    start_at = time.time() + 15  # after both have imported rmt and warmed up
    procs = [subprocess.Popen([sys.executable, "-c", HALF, str(part), str(start_at)],
                              stdout=subprocess.PIPE, text=True) for part in (0, 1)]
    ends = [json.loads(proc.communicate()[0].strip().splitlines()[-1])["end"]
            for proc in procs]
    if any(proc.returncode for proc in procs):
        raise RuntimeError("a half-model process failed")
    return max(ends) - start_at


def rounds(n_rounds: int) -> dict[str, list[float]]:
    """Seconds per configuration, the configurations rotated through every position."""
    names = [*CONFIGS, CEILING]
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n_rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name == CEILING:
                times[name].append(ceiling())
                continue
            out = run_json([sys.executable, "-c", CHILD.format(options=CONFIGS[name])])
            times[name].append(out["seconds"])
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``benchmarks/results/layers_parallel.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle-only", action="store_true")
    args = parser.parse_args(argv)
    import rmt

    rmt.pretrained.fetch("all-MiniLM-L6-v2")
    info = machine(2)
    result = {"idle": rounds(args.rounds)}
    if not args.idle_only:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            result["one busy process"] = rounds(args.rounds)
        finally:
            hog.kill()
            hog.wait()
    lines = [f"Layers side by side — all-MiniLM-L6-v2 (41 matrices), {info['cpu']}, "
             f"{info['cores']} cores, median of {args.rounds} interleaved rounds, "
             f"{info['date']}", "",
             "| configuration | " + " | ".join(f"{load} s | × 1 core" for load in result)
             + " |", "|---" * (1 + 2 * len(result)) + "|"]
    medians = {load: {k: float(np.median(v)) for k, v in t.items()}
               for load, t in result.items()}
    for name in [*CONFIGS, CEILING]:
        cells = []
        for load in result:
            m = medians[load]
            cells += [f"{m[name]:.2f}", f"{m[REFERENCE] / m[name]:.2f}×"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    idle = medians["idle"]
    lines += ["", f"n_jobs=2 reaches {idle[CEILING] / idle['n_jobs=2 (threads)']:.0%} of the "
              "ceiling, idle (goal: ≥ 1.7× one core on 2 cores)."]
    publish("layers_parallel", {"machine": info, "seconds": result, "median": medians},
            "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

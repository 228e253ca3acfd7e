"""The cost of the opt-in analyses: each against the default pass, on a real model.

all-MiniLM-L6-v2 (``rmt.pretrained``: 37 matrices of 384 to 1536 and the 30522x384 token
embedding), analysed in fresh processes with one BLAS/Numba thread, by default and with
each switch on its own; best of ``--repeat`` timed runs each, after a warm-up run that
loads the Numba caches.

- ``randomize=True``: shuffle every matrix (a seeded Rao–Sandelius shuffle in compiled
  code), its ESD, an MP fit, WeightWatcher's KDE MP fit, two distances — about one more
  ESD per layer. Goal ≤ 2.2× the default pass.
- ``vectors=True``: the ESD comes from one eigendecomposition *with* vectors (``syevd``)
  instead of without, plus every vector's three metrics. Goal ≤ 3×.
- ``fingers="dk"``: the Dragon-King test and a refit where it rejects. No goal stated (a
  few extra power-law scans at most).
- ``farms=True``: up to 100 submatrices of 100 × 200 per layer, one batched eigensolve.
  Goal ≤ 3×.

The per-layer extra cost of ``randomize`` and ``farms`` is fixed by the layer's size (a
second ESD; 100 eigensolves of 100 × 100), so the ratio falls on models with larger
layers: ``--models minilm,mpnet`` measures both.

Run: ``python -m benchmarks.opt_in [--models minilm,mpnet]``; writes
``benchmarks/results/opt_in.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from benchmarks._common import machine, publish, run_json

#: switch name -> (rmt.analyze keyword arguments, goal as a multiple of the default pass)
SWITCHES: dict[str, tuple[dict, float | None]] = {
    "randomize": ({"randomize": True}, 2.2),
    "vectors": ({"vectors": True}, 3.0),
    "fingers": ({"fingers": "dk"}, None),
    "farms": ({"farms": True}, 3.0),
}

MODELS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}

CHILD = """
import json, sys, time
import rmt
path, kwargs, repeat = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
rmt.analyze(path, progress=False, **kwargs)  # Numba caches, imports
best = float("inf")
for _ in range(repeat):
    start = time.perf_counter()
    df = rmt.analyze(path, progress=False, **kwargs)
    best = min(best, time.perf_counter() - start)
extra = {c: int(df[c].sum()) for c in ("num_traps", "num_fingers") if c in df}
print(json.dumps({"seconds": best, "rows": len(df), **extra}))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure MiniLM each way; write ``benchmarks/results/opt_in.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", default="minilm",
                        help="comma-separated: minilm, mpnet (all-mpnet-base-v2, 438 MB)")
    args = parser.parse_args(argv)
    from rmt.pretrained import fetch

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    info = machine(1)
    all_results, blocks = {}, []
    for model in args.models.split(","):
        name = MODELS[model]
        path = str(fetch(name))

        def timed(kwargs: dict, path: str = path) -> dict:
            return run_json([sys.executable, "-c", CHILD, path, json.dumps(kwargs),
                             str(args.repeat)], env=env)

        plain = timed({})
        results, lines = {"default": plain}, []
        for switch, (kwargs, goal) in SWITCHES.items():
            res = timed(kwargs)
            res["ratio"] = res["seconds"] / plain["seconds"]
            res["goal"] = goal
            results[switch] = res
            found = ", ".join(f"{k} {v}" for k, v in res.items() if k.startswith("num_"))
            lines.append(f"| `{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}` | "
                         f"{res['seconds']:.2f} s | {res['ratio']:.2f} | "
                         f"{'≤ ' + format(goal, 'g') if goal else '—'} | {found or '—'} |")
        all_results[model] = results
        blocks += [f"{name} ({plain['rows']} rows), default pass {plain['seconds']:.2f} s:", "",
                   "| switch | time | × default | goal | found |", "|---|---|---|---|---|",
                   *lines, ""]
    md = "\n".join([f"Opt-in analyses — {info['cpu']}, 1 thread, best of {args.repeat}, "
                    f"{info['date']}", "", *blocks]).rstrip()
    results = all_results
    publish("opt_in", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

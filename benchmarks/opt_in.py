"""The cost of the opt-in analyses: each against the default pass, on a real model.

all-MiniLM-L6-v2 (``rmt.pretrained``: 37 matrices of 384 to 1536 and the 30522x384 token
embedding), analysed in one fresh process per model with one BLAS/Numba thread, by default and with
each switch on its own: ``--repeat`` rounds, each timing every configuration once
(interleaved, so that a machine whose speed drifts — a shared host — affects the default
pass and the switches alike), best of the rounds each, after a warm-up run of each that
loads the Numba caches. The table gives the ratio of the bests and the median over rounds
of each round's own ratio (a switch against the default pass of the same round: the
steadier of the two on a host whose speed drifts by minutes).

- ``randomize=True``: shuffle every matrix (a seeded Rao–Sandelius shuffle in compiled
  code), its ESD (solved together with the layer's own: one lockstep QL for both
  tridiagonal matrices), an MP fit, WeightWatcher's KDE MP fit, two distances — less than
  one more ESD per layer. Goal ≤ 2.2× the default pass.
- ``vectors=True``: the ESD comes from one eigendecomposition *with* vectors (``syevd``)
  instead of without, plus every vector's three metrics. Goal ≤ 3×.
- ``fingers="dk"``: the Dragon-King test and a refit where it rejects. No goal stated (a
  few extra power-law scans at most).
- ``farms=True``: up to 100 submatrices of 100 × 200 per layer, one batched eigensolve
  (``rmt.kernels``' small-matrix solver, ~1.8× LAPACK's speed). Goal ≤ 3×.

Each model's table ends with the *floors*: the work a switch adds that no implementation
can avoid, timed alone on the same matrices — for ``randomize`` one more ESD of every
matrix on its own plus the shuffle (the pipeline's joint eigensolve takes less than that
ESD alone), for ``farms`` the batched eigensolves of the windows' Gram matrices — as a
multiple of the default pass.

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
import gc, json, sys, time
import rmt
path, configs, repeat = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
for kwargs in configs.values():  # Numba caches, imports
    rmt.analyze(path, progress=False, **kwargs)
times = {key: [] for key in configs}
found = {}
keys = list(configs)
for r in range(repeat):  # interleaved: every configuration sees the same machine state
    for key in keys[r % len(keys):] + keys[:r % len(keys)]:  # each in every position
        kwargs = configs[key]
        gc.collect()  # the previous run's garbage is not charged to this one
        start = time.perf_counter()
        df = rmt.analyze(path, progress=False, **kwargs)
        times[key].append(time.perf_counter() - start)
        found[key] = {"rows": len(df), **{c: int(df[c].sum()) for c in
                                          ("num_traps", "num_fingers") if c in df}}
# The floors: the work a switch adds that no implementation can avoid, timed alone on
# the same matrices (best of the rounds): randomize = one more ESD of every matrix + the
# shuffle (each on its own); farms = the eigensolves of the windows' Gram matrices
# (rmt.kernels.cpu.eigvalsh on their stacks).
import numpy as np
from rmt.farms import farms_esd
from rmt.io import open_checkpoint
from rmt.kernels import cpu
from rmt.randomized import shuffled
mats = [np.asarray(t.load()) for _, t in open_checkpoint(path)
        if len(t.shape) == 2 and np.dtype(t.dtype).kind == "f" and min(t.shape) > 1]
rng = np.random.default_rng(0)
windows = []
for W in mats:
    f = farms_esd(W)
    X = rng.standard_normal((f.n_windows, min(f.rows, f.cols), max(f.rows, f.cols)))
    windows.append(X @ X.transpose(0, 2, 1))
def floor(work):
    b = float("inf")
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        work()
        b = min(b, time.perf_counter() - start)
    return b
floors = {"esd": floor(lambda: [rmt.esd(W) for W in mats]),
          "shuffle": floor(lambda: [shuffled(W, rng) for W in mats]),
          "farms_eigensolves": floor(lambda: [cpu.eigvalsh(G.copy()) for G in windows])}
# per round, each switch against the default pass of the same round: a host whose speed
# drifts between rounds moves both alike
ratios = {key: sorted(t / d for t, d in zip(times[key], times["default"])) for key in configs}
print(json.dumps({**{key: {"seconds": min(times[key]), "rounds": times[key],
                           "median_round_ratio": float(np.median(ratios[key])), **found[key]}
                     for key in configs}, "floors": floors}))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure MiniLM each way; write ``benchmarks/results/opt_in.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
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
        configs = {"default": {}, **{k: kw for k, (kw, _) in SWITCHES.items()}}
        measured = run_json([sys.executable, "-c", CHILD, path, json.dumps(configs),
                             str(args.repeat)], env=env)
        plain = measured["default"]
        results, lines = {"default": plain}, []
        for switch, (kwargs, goal) in SWITCHES.items():
            res = measured[switch]
            res["ratio"] = res["seconds"] / plain["seconds"]
            res["goal"] = goal
            results[switch] = res
            found = ", ".join(f"{k} {v}" for k, v in res.items() if k.startswith("num_"))
            lines.append(f"| `{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}` | "
                         f"{res['seconds']:.2f} s | {res['ratio']:.2f} | "
                         f"{res['median_round_ratio']:.2f} | "
                         f"{'≤ ' + format(goal, 'g') if goal else '—'} | {found or '—'} |")
        fl = measured["floors"]
        results["floors"] = fl
        rand_floor = 1 + (fl["esd"] + fl["shuffle"]) / plain["seconds"]
        farms_floor = 1 + fl["farms_eigensolves"] / plain["seconds"]
        all_results[model] = results
        blocks += [f"{name} ({plain['rows']} rows), default pass {plain['seconds']:.2f} s:", "",
                   "| switch | time | × default | × default, median round | goal | found |",
                   "|---|---|---|---|---|---|",
                   *lines, "",
                   f"Floors (the added work alone, same matrices): `randomize` = default + "
                   f"one more ESD of every matrix ({fl['esd']:.2f} s) + the shuffle "
                   f"({fl['shuffle']:.2f} s) = **{rand_floor:.2f}×**; `farms` = default + "
                   f"the windows' eigensolves ({fl['farms_eigensolves']:.2f} s) = "
                   f"**{farms_floor:.2f}×**.", ""]
    md = "\n".join([f"Opt-in analyses — {info['cpu']}, 1 thread, best of {args.repeat} "
                    f"interleaved rounds, "
                    f"{info['date']}", "", *blocks]).rstrip()
    results = all_results
    publish("opt_in", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

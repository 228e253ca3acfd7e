"""rmt.analyze against WeightWatcher's default analyze() on real checkpoints, side by side.

WeightWatcher 0.7.7 and torch 2.13.0 (pinned: never an unpinned torch) are installed once
into the benchmark's own virtual environment, ``benchmarks/.ww-env``; rmt runs in the
current one. Each run is a fresh process with the same BLAS/Numba thread count, timed
around the analysis call only (model loading excluded), with its peak RSS. The floor is
NumPy's float64 Gram product + ``eigvalsh`` of every layer WeightWatcher analyses, on
float64 copies made beforehand (the conversion is not timed). Every side is timed best of
``--repeat`` runs in its process (a shared machine is noisy).
Per-layer α agreement is reported for ``candidates="ww"`` (WeightWatcher's own fit) and
for rmt's default (powerlaw's convention, α uncapped).

Models come from the package index (``rmt.pretrained``): all-MiniLM-L6-v2
(``rmt.pretrained``) and, with ``--models minilm,mpnet``, all-mpnet-base-v2.
Run: ``python -m benchmarks.weightwatcher [--threads 1] [--models minilm]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks._common import machine, publish, run_json

ENV = Path(__file__).resolve().parent / ".ww-env"
WW_PACKAGES = ["weightwatcher==0.7.7", "torch==2.13.0"]

WW_CHILD = r"""
import json, os, resource, sys, time, warnings
warnings.simplefilter("ignore")
import logging; logging.disable(logging.WARNING)
import weightwatcher as ww
watcher = ww.WeightWatcher(model=sys.argv[1])
wall = float("inf")
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    details = watcher.analyze()
    wall = min(wall, time.perf_counter() - start)
rows = [{"name": str(r.get("longname", r.get("name"))), "N": int(r["N"]), "M": int(r["M"]),
         "alpha": float(r["alpha"])} for _, r in details.iterrows()]
print(json.dumps({"seconds": wall, "rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024, "rows": rows}))
"""

RMT_CHILD = r"""
import json, resource, sys, time
import numpy as np
import rmt
rmt.analyze({"w": rmt.synthetic.phase_matrix("random-like", 64, 32)}, progress=False)
out = {}
for candidates in ("ww", "powerlaw"):
    best = float("inf")
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter()
        df = rmt.analyze(sys.argv[1], candidates=candidates, n_threads=int(sys.argv[2]),
                         progress=False)
        best = min(best, time.perf_counter() - start)
    out[candidates] = {"seconds": best,
                       "rows": [{"name": n, "N": int(a), "M": int(b), "alpha": float(c),
                                 "status": s} for n, a, b, c, s in
                                zip(df.name, df.N.fillna(0), df.M.fillna(0), df.alpha, df.status)]}
out["rss_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

FLOOR_CHILD = r"""
import json, sys, time
import numpy as np
from rmt.io import open_checkpoint
layers = [t.load(np.float64) for name, t in open_checkpoint(sys.argv[1])
          if t.ndim == 2 and min(t.shape) >= 8 and t.dtype.kind == "f"]
best = float("inf")
for _ in range(int(sys.argv[2])):
    total = 0.0
    for W in layers:
        start = time.perf_counter()
        G = W.T @ W if W.shape[0] >= W.shape[1] else W @ W.T
        np.linalg.eigvalsh(G)
        total += time.perf_counter() - start
    best = min(best, total)
print(json.dumps({"seconds": best}))
"""


def ensure_env() -> Path:
    """The benchmark's own venv with WeightWatcher and the pinned torch."""
    python = ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(ENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import weightwatcher, torch"],
                           capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *WW_PACKAGES],
                       check=True)
    return python


def run(python: str, code: str, *args: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    return run_json([python, "-c", code, *args], env=env)


def _key(name: str) -> str:
    return name.removesuffix(".weight")


def agreement(ww_rows: list[dict], ours: list[dict]) -> dict:
    """Per-layer α agreement on the layers both analysed (matched by name)."""
    mine = {_key(r["name"]): r for r in ours if r["status"] == "success"}
    pairs = [(r["alpha"], mine[_key(r["name"])]["alpha"]) for r in ww_rows
             if _key(r["name"]) in mine and np.isfinite(r["alpha"]) and r["alpha"] > 0]
    a = np.array(pairs, dtype=float).reshape(-1, 2)
    rel = np.abs(a[:, 1] - a[:, 0]) / a[:, 0] if len(a) else np.array([])
    missing = [r["name"] for r in ww_rows if _key(r["name"]) not in mine]
    return {"matched": len(a), "within_2pct": float(np.mean(rel <= 0.02)) if len(a) else 0.0,
            "max_rel_diff": float(rel.max()) if len(a) else float("nan"),
            "ww_layers_missing_in_rmt": missing}


def model_path(name: str) -> Path:
    import rmt.pretrained

    return rmt.pretrained.fetch({"minilm": "all-MiniLM-L6-v2",
                                 "mpnet": "all-mpnet-base-v2"}[name])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``benchmarks/results/weightwatcher.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="minilm")
    parser.add_argument("--repeat", type=int, default=3, help="best of n, for every side")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    python = str(ensure_env())
    info = machine(args.threads)
    info["env_setup_s"] = time.perf_counter() - start
    results, lines = {}, []
    for model in args.models.split(","):
        path = model_path(model)
        reps = str(args.repeat)
        ww = run(python, WW_CHILD, str(path.parent), reps, threads=args.threads)
        ours = run(sys.executable, RMT_CHILD, str(path), str(args.threads), reps,
                   threads=args.threads)
        floor = run(sys.executable, FLOOR_CHILD, str(path), reps, threads=args.threads)
        res = {"ww": ww, "rmt": ours, "floor": floor,
               "agree_ww_candidates": agreement(ww["rows"], ours["ww"]["rows"]),
               "agree_default": agreement(ww["rows"], ours["powerlaw"]["rows"])}
        results[model] = res
        t_ww, t_rmt = ww["seconds"], ours["powerlaw"]["seconds"]
        lines.append(
            f"| {model} | {len(ww['rows'])} / {len(ours['powerlaw']['rows'])} | {t_ww:.2f} | "
            f"{t_rmt:.2f} | {ours['ww']['seconds']:.2f} | {floor['seconds']:.2f} | "
            f"{t_ww / t_rmt:.1f}× | {t_rmt / floor['seconds']:.2f} | {ww['rss_MiB']:.0f} / "
            f"{ours['rss_MiB']:.0f} | {res['agree_ww_candidates']['within_2pct']:.0%} | "
            f"{res['agree_default']['within_2pct']:.0%} |")
    md = "\n".join([
        f"WeightWatcher 0.7.7 vs rmt — {info['cpu']}, {args.threads} thread(s), {info['date']}",
        "", "| model | layers WW / rmt | WW s | rmt s | rmt (ww fit) s | floor s | WW/rmt "
        "| rmt/floor | peak RSS MiB WW / rmt | α within 2% (ww fit) | α within 2% (default) |",
        "|" + "---|" * 11, *lines])
    publish("weightwatcher", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

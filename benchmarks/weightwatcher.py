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
With ``--randomize`` (the default) both sides also run the analyses after the first pass:
WeightWatcher's ``analyze(randomize=True, mp_fit=True, detX=True, vectors=True)`` once (it
takes minutes) against ``rmt.analyze(randomize=True, vectors=True)``, with per-layer
agreement of detX_num, ww_softrank, num_traps and the vector columns
(:func:`randomize_agreement` says why which agree how).
Run: ``python -m benchmarks.weightwatcher [--threads 1] [--models minilm] [--no-randomize]``.
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

VECTOR_COLUMNS = [f"{region}_{how}_{metric}" for region in ("bulk", "tail")
                  for metric in ("vec_entropy", "loc_ratio", "part_ratio")
                  for how in ("mean", "var")]

WW_FULL_CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
import logging; logging.disable(logging.WARNING)
import numpy as np
import weightwatcher as ww
np.random.seed(0)  # WeightWatcher shuffles with NumPy's global generator
watcher = ww.WeightWatcher(model=sys.argv[1])
start = time.perf_counter()
details = watcher.analyze(randomize=True, mp_fit=True, detX=True, vectors=True)
wall = time.perf_counter() - start
cols = ["detX_num", "ww_softrank", "num_traps", "max_rand_eval", "rand_distance", "xmin"]
cols += [c for c in details.columns if c.startswith(("bulk_", "tail_"))]
rows = [{"name": str(r.get("longname", r.get("name"))),
         **{c: (float(r[c]) if c in r and r[c] == r[c] else None) for c in cols}}
        for _, r in details.iterrows()]
print(json.dumps({"seconds": wall, "rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                  / 1024, "rows": rows}))
"""

RMT_FULL_CHILD = r"""
import json, resource, sys, time
import rmt
rmt.analyze({"w": rmt.synthetic.phase_matrix("random-like", 64, 32)}, progress=False,
            randomize=True, vectors=True)
best = float("inf")
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    rmt.analyze(sys.argv[1], randomize=True, vectors=True, n_threads=int(sys.argv[2]),
                progress=False)
    best = min(best, time.perf_counter() - start)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
# agreement run: WeightWatcher's power-law convention (so that the tail/bulk split of the
# vector columns uses its xmin) and its units
df = rmt.analyze(sys.argv[1], randomize=True, vectors=True, candidates="ww", normalize=False,
                 n_threads=int(sys.argv[2]), progress=False)
cols = ["detX_num", "ww_softrank", "num_traps", "num_traps_ww", "rand_lambda_max",
        "rand_distance_ww", "xmin", "status"]
cols += [c for c in df.columns if c.startswith(("bulk_", "tail_"))]
rows = [{"name": r["name"], **{c: (r[c] if isinstance(r[c], str) else float(r[c]))
                               for c in cols}} for _, r in df.iterrows()]
print(json.dumps({"seconds": best, "rss_MiB": rss, "rows": rows}))
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


def randomize_agreement(ww_rows: list[dict], ours: list[dict]) -> dict:
    """Per-layer agreement of the randomize/detX/vectors columns (matched by name).

    detX_num is a deterministic function of the eigenvalues: it should be identical.
    ww_softrank, num_traps and rand_distance depend on the shuffle (WeightWatcher's global
    NumPy generator, five pooled shuffles below 100 eigenvalues, a second shuffle for
    ww_softrank; rmt's one seeded shuffle), so they agree in distribution, not digit for
    digit. The vector columns are deterministic given the tail split (the same xmin with
    ``candidates="ww"``) up to the sign and degeneracy of eigenvectors.
    """
    mine = {_key(r["name"]): r for r in ours if r["status"] == "success"}
    pairs = [(r, mine[_key(r["name"])]) for r in ww_rows if _key(r["name"]) in mine]
    out: dict = {"matched": len(pairs)}
    detx = [(a["detX_num"], b["detX_num"]) for a, b in pairs if a["detX_num"] is not None]
    out["detX_num_identical"] = float(np.mean([x == y for x, y in detx])) if detx else None
    soft = np.array([(a["ww_softrank"], b["ww_softrank"]) for a, b in pairs
                     if a["ww_softrank"] is not None], dtype=float).reshape(-1, 2)
    rel = np.abs(soft[:, 1] - soft[:, 0]) / soft[:, 0] if len(soft) else np.array([np.nan])
    out["ww_softrank_median_rel_diff"] = float(np.median(rel))
    out["ww_softrank_max_rel_diff"] = float(np.max(rel))
    traps = [(a["num_traps"], b["num_traps_ww"], b["num_traps"]) for a, b in pairs
             if a["num_traps"] is not None]
    out["num_traps_total_ww"] = int(sum(t[0] for t in traps))
    out["num_traps_ww_total_rmt"] = int(sum(t[1] for t in traps))
    out["num_traps_tw_total_rmt"] = int(sum(t[2] for t in traps))
    out["num_traps_ww_equal"] = float(np.mean([t[0] == t[1] for t in traps])) if traps else None
    vec = {}
    for col in VECTOR_COLUMNS:
        v = np.array([(a.get(col), b.get(col)) for a, b in pairs
                      if a.get(col) is not None and b.get(col) is not None
                      and np.isfinite(b[col])], dtype=float).reshape(-1, 2)
        if len(v):
            vec[col] = float(np.median(np.abs(v[:, 1] - v[:, 0]) / np.maximum(np.abs(v[:, 0]),
                                                                               1e-300)))
    out["vector_columns_median_rel_diff"] = vec
    return out


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
    parser.add_argument("--randomize", action=argparse.BooleanOptionalAction, default=True,
                        help="also time randomize=True, mp_fit, detX, vectors on both sides "
                        "(WeightWatcher once: minutes per model)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    python = str(ensure_env())
    info = machine(args.threads)
    info["env_setup_s"] = time.perf_counter() - start
    results, lines, full_lines = {}, [], []
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
        if args.randomize:
            ww_full = run(python, WW_FULL_CHILD, str(path.parent), threads=args.threads)
            ours_full = run(sys.executable, RMT_FULL_CHILD, str(path), str(args.threads), reps,
                            threads=args.threads)
            agree = randomize_agreement(ww_full["rows"], ours_full["rows"])
            loc = agree["vector_columns_median_rel_diff"].get("tail_mean_loc_ratio", np.nan)
            res["randomize"] = {"ww": ww_full, "rmt": ours_full, "agreement": agree}
            full_lines.append(
                f"| {model} | {agree['matched']} | {ww_full['seconds']:.1f} | "
                f"{ours_full['seconds']:.2f} | {ww_full['seconds'] / ours_full['seconds']:.0f}× "
                f"| {ww_full['rss_MiB']:.0f} / {ours_full['rss_MiB']:.0f} | "
                f"{agree['detX_num_identical']:.0%} | "
                f"{agree['ww_softrank_median_rel_diff']:.1%} | "
                f"{agree['num_traps_total_ww']} / {agree['num_traps_ww_total_rmt']} / "
                f"{agree['num_traps_tw_total_rmt']} | "
                f"{loc:.1e} |")
    full = ["", "With `randomize=True, mp_fit=True, detX=True, vectors=True` (WeightWatcher, "
            "one run) against `rmt.analyze(randomize=True, vectors=True)` (best of "
            f"{args.repeat}); agreement from a run with `candidates=\"ww\", normalize=False`:",
            "", "| model | layers matched | WW s | rmt s | WW/rmt | peak RSS MiB WW / rmt | "
            "detX_num identical | ww_softrank median rel. diff | traps: WW / rmt num_traps_ww "
            "/ rmt num_traps | tail_mean_loc_ratio median rel. diff |",
            "|" + "---|" * 10, *full_lines] if full_lines else []
    md = "\n".join([
        f"WeightWatcher 0.7.7 vs rmt — {info['cpu']}, {args.threads} thread(s), {info['date']}",
        "", "| model | layers WW / rmt | WW s | rmt s | rmt (ww fit) s | floor s | WW/rmt "
        "| rmt/floor | peak RSS MiB WW / rmt | α within 2% (ww fit) | α within 2% (default) |",
        "|" + "---|" * 11, *lines, *full])
    publish("weightwatcher", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

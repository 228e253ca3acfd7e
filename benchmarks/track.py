"""``rmt.track`` throughput against the number of workers: 200 small checkpoints.

A real training run of the digits network (``tests/digits_training.py``: 64-512-256-10,
SGD, batch 8) saves a float32 checkpoint every epoch for 200 epochs; ``rmt.track`` then
analyses all 200 (600 layers) serially, with ``n_jobs`` = 1, 2, ... worker processes, and
on a Dask ``LocalCluster`` with as many single-threaded worker processes, each in a fresh
process with one BLAS thread per worker. Throughput in checkpoints per second, and the
speed-up over the serial run (the cores bound it). The process pool's time includes
starting its workers (a spawned worker imports rmt and loads its compiled kernels, about
a second; the runner works in the calling process meanwhile); the Dask workers are warmed
first, as a long-lived cluster's are.

Run: ``python -m benchmarks.track [--checkpoints 200]``; writes
``benchmarks/results/track.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from benchmarks._common import machine, publish, run_json

CHILD = """
import json, sys, time
import rmt
pattern, mode, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
rmt.analyze(sorted(__import__("glob").glob(pattern))[0], progress=False)  # caches
t = time.perf_counter()
if mode == "dask":
    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        # a long-lived cluster's workers have rmt imported and its kernels loaded
        client.run(lambda: rmt.analyze(sorted(__import__("glob").glob(pattern))[0],
                                       progress=False) is not None)
        start = time.perf_counter()
        df = rmt.track(pattern, executor=client.get_executor(), progress=False)
        seconds = time.perf_counter() - start
    setup = time.perf_counter() - t - seconds
else:
    df = rmt.track(pattern, n_jobs=workers, progress=False)
    seconds, setup = time.perf_counter() - t, 0.0
print(json.dumps({"seconds": seconds, "cluster_setup_s": setup, "rows": len(df),
                  "checkpoints": int(df.step.nunique()),
                  "failed": int((df.status == "failed").sum())}))
"""


def main(argv: list[str] | None = None) -> int:
    """Train, save the checkpoints, time track each way; write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=200)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.digits_training import init, train

    cores = os.cpu_count() or 1
    info = machine(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    results, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        train(init(0), epochs=args.checkpoints, batch_size=8, lr=0.01, save_every=1,
              out_dir=Path(tmp))
        pattern = str(Path(tmp) / "step-*.safetensors")
        serial = None
        for mode, workers in [("pool", 1), *(("pool", w) for w in range(2, cores + 1)),
                              *(("dask", w) for w in range(1, cores + 1))]:
            r = run_json([sys.executable, "-c", CHILD, pattern, mode, str(workers)], env=env)
            r.update(mode=mode, workers=workers, per_s=r["checkpoints"] / r["seconds"])
            serial = serial or r["seconds"]
            r["speedup"] = serial / r["seconds"]
            results.append(r)
            label = "serial" if (mode, workers) == ("pool", 1) else \
                f"{'n_jobs' if mode == 'pool' else 'Dask LocalCluster'} {workers}"
            lines.append(f"| {label} | {r['seconds']:.2f} s | {r['per_s']:.1f} | "
                         f"{r['speedup']:.2f}× | {r['failed']} |")
    md = "\n".join([f"rmt.track, {args.checkpoints} checkpoints of the digits network "
                    f"(3 layers each) — {info['cpu']}, {cores} cores, {info['date']}", "",
                    "| run | time | checkpoints/s | speed-up | failed rows |",
                    "|---|---|---|---|---|", *lines])
    publish("track", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

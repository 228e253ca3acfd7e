"""Reports: the size of the page and the time to write it against ``rmt.analyze`` alone.

Two models, each in a fresh process with one BLAS/Numba thread, best of ``--repeat``:

- all-MiniLM-L6-v2 (``rmt.pretrained``, 41 rows);
- a 300-layer transformer-shaped model: 50 blocks of q, k, v, o (256 × 256) and up,
  down (1024 × 256, 256 × 1024) under LLaMA's names, seeded Gaussian weights with a
  heavy-tailed part in every second block (so the map and the flags have something to
  show).

``rmt.report(model, "r.html")`` (the analysis with the figure data, then the page)
against ``rmt.analyze(model)``. Goals: a 300-layer report ≤ 20 MB, written in ≤ 1.5× the
time of ``analyze`` alone.

Run: ``python -m benchmarks.report``; writes ``benchmarks/results/report.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmarks._common import machine, publish, run_json

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

CHILD = """
import gc, json, sys, tempfile, time
from pathlib import Path
import numpy as np
import rmt
from rmt.report import report

which, repeat = sys.argv[1], int(sys.argv[2])
if which == "minilm":
    from rmt.pretrained import fetch
    model = str(fetch("all-MiniLM-L6-v2"))
else:
    rng = np.random.default_rng(0)
    model = {}
    for b in range(50):
        for role, shape in (("self_attn.q_proj", (256, 256)), ("self_attn.k_proj", (256, 256)),
                            ("self_attn.v_proj", (256, 256)), ("self_attn.o_proj", (256, 256)),
                            ("mlp.up_proj", (1024, 256)), ("mlp.down_proj", (256, 1024))):
            W = rng.standard_normal(shape).astype(np.float32)
            if b % 2:
                tall = (max(shape), min(shape))
                H = rmt.synthetic.phase_matrix("heavy-tailed", *tall, rng=b)
                W += (H if shape == tall else H.T).astype(np.float32)
            model[f"model.layers.{b}.{role}.weight"] = W
out = Path(tempfile.mkdtemp()) / "r.html"
report(model, out, progress=False)  # imports, Numba caches
rmt.analyze(model, progress=False)
best_a = best_r = float("inf")
for _ in range(repeat):  # interleaved
    gc.collect()
    t = time.perf_counter()
    df = rmt.analyze(model, progress=False)
    best_a = min(best_a, time.perf_counter() - t)
    gc.collect()
    t = time.perf_counter()
    report(model, out, progress=False)
    best_r = min(best_r, time.perf_counter() - t)
print(json.dumps({"rows": len(df), "analyze_s": best_a, "report_s": best_r,
                  "bytes": out.stat().st_size}))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure both models; write ``benchmarks/results/report.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    info = machine(1)
    results, lines = {}, []
    for which, label in (("minilm", "all-MiniLM-L6-v2"),
                         ("synthetic300", "300-layer LLaMA-named model (256-wide)")):
        r = run_json([sys.executable, "-c", CHILD, which, str(args.repeat)], env=ENV)
        r["ratio"] = r["report_s"] / r["analyze_s"]
        results[which] = r
        lines.append(f"| {label} | {r['rows']} | {r['analyze_s']:.2f} s | {r['report_s']:.2f} s "
                     f"| **{r['ratio']:.2f}×** | **{r['bytes'] / 1e6:.2f} MB** |")
    md = "\n".join([f"Reports — {info['cpu']}, 1 thread, best of {args.repeat}, {info['date']}",
                    "", "| model | rows | analyze | report | ratio (goal ≤ 1.5×) | "
                    "page (goal ≤ 20 MB) |", "|---|---|---|---|---|---|", *lines])
    publish("report", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""rmt.analyze on an LLM-shaped bfloat16 checkpoint: peak RSS and time against the floor.

Builds (once, in a temporary directory) a safetensors file with Llama-7B-shaped bf16
weights — a 32000×4096 embedding, three 11008×4096 MLP matrices and four 4096×4096
attention matrices, 0.9 GB — then, each in a fresh process:

- ``rmt.analyze(path)``: wall time and peak RSS (``ru_maxrss`` of the child), on 1 and 2
  threads, and with ``n_jobs=2`` (layers side by side; these are all big enough to run
  alone on both threads);
- the floor on as many threads: for every tensor, NumPy's float64 Gram product and
  ``eigvalsh`` (the bf16 → float64 conversion is not timed).

Goals: peak RSS ≤ 1.5 GiB; analyze wall time ≤ 1.2× the floor on the same cores.
Run: ``python -m benchmarks.analyze_llm [--threads 2]`` (rows for 1 … ``--threads``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np

from benchmarks._common import machine, publish, run_json
from rmt.io import stream_safetensors

SHAPES = {"model.embed_tokens.weight": (32000, 4096),
          **{f"model.layers.0.mlp.{n}.weight": (11008, 4096) for n in ("gate_proj", "up_proj")},
          "model.layers.0.mlp.down_proj.weight": (4096, 11008),
          **{f"model.layers.0.self_attn.{n}.weight": (4096, 4096)
             for n in ("q_proj", "k_proj", "v_proj", "o_proj")}}

CHILD_ANALYZE = """
import json, resource, sys, time
import rmt
start = time.perf_counter()
jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 1
df = rmt.analyze(sys.argv[1], n_threads=int(sys.argv[2]), n_jobs=jobs, progress=False)
wall = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
failed = int((df.status == "failed").sum())
print(json.dumps({"seconds": wall, "rss_MiB": rss, "layers": len(df), "failed": failed,
                  "phases": df.phase.value_counts().to_dict()}))
"""

CHILD_FLOOR = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from rmt.io import open_checkpoint
total = 0.0
with threadpool_limits(int(sys.argv[2])):
    for name, t in open_checkpoint(sys.argv[1]):
        W = t.load(np.float64)
        if W.shape[0] < W.shape[1]:
            W = np.ascontiguousarray(W.T)
        start = time.perf_counter()
        np.linalg.eigvalsh(W.T @ W)
        total += time.perf_counter() - start
        del W
print(json.dumps({"seconds": total}))
"""


def build(path: Path, rng: np.random.Generator) -> None:
    """Write the checkpoint tensor by tensor (header first, then each tensor's bytes)."""

    def chunks(name: str):
        shape = SHAPES[name]
        for start in range(0, shape[0], 2048):
            rows = min(2048, shape[0] - start)
            block = 0.02 * rng.standard_normal((rows, shape[1]), dtype=np.float32)
            yield block.astype(ml_dtypes.bfloat16)

    stream_safetensors(path, {name: (ml_dtypes.bfloat16, shape) for name, shape in SHAPES.items()},
                       chunks)


def child(code: str, path: Path, threads: int, jobs: int = 1) -> dict:
    """Run ``code`` in a fresh Python process; its last stdout line is a JSON result."""
    return run_json([sys.executable, "-c", code, str(path), str(threads), str(jobs)])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``benchmarks/results/analyze_llm.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    info = machine(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "llm.safetensors"
        start = time.perf_counter()
        build(path, np.random.default_rng(0))
        info["build_s"] = time.perf_counter() - start
        size = path.stat().st_size / 2**20
        child("import sys, rmt; rmt.analyze({'w': rmt.synthetic.phase_matrix("
              "'random-like', 64, 32)}, progress=False)", path, args.threads)  # warm caches
        rows = []
        for threads in range(1, args.threads + 1):
            floor = child(CHILD_FLOOR, path, threads)
            # n_jobs splits the thread budget: n_threads is per job, so 1 per job here
            for jobs in (1, 2) if threads == 2 else (1,):
                ours = child(CHILD_ANALYZE, path, threads // jobs, jobs)
                rows.append({"threads": threads, "n_jobs": jobs, "rmt": ours, "floor": floor,
                             "ratio": ours["seconds"] / floor["seconds"]})
    lines = [f"LLM-shaped bf16 checkpoint ({size:.0f} MiB, {len(SHAPES)} tensors: 32000×4096, "
             f"3× 11008×4096, 4× 4096×4096) — {info['cpu']}, {info['date']}", "",
             "| threads | rmt.analyze | wall s | peak RSS MiB | floor s (float64 Gram + "
             "eigvalsh, same threads) | analyze / floor |", "|---|---|---|---|---|---|"]
    for r in rows:
        how = "n_jobs=2" if r["n_jobs"] > 1 else "n_jobs=1"
        lines.append(f"| {r['threads']} | {how} | {r['rmt']['seconds']:.1f} | "
                     f"{r['rmt']['rss_MiB']:.0f} | {r['floor']['seconds']:.1f} | "
                     f"{r['ratio']:.2f} |")
    last = rows[-1]["rmt"]
    lines += ["", f"{last['layers']} layers, {last['failed']} failed; phases {last['phases']}. "
              "Goals: ≤ 1.2× the floor on the same threads, peak RSS ≤ 1.5 GiB."]
    best = next(r for r in rows if r["threads"] == args.threads and r["n_jobs"] == 1)
    publish("analyze_llm", {"machine": info, "file_MiB": size, "rows": rows,
                            "rmt": best["rmt"], "floor": best["floor"], "ratio": best["ratio"]},
            "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

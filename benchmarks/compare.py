"""Comparing checkpoints: ``rmt.compare`` against analysing both, a LoRA module's spectrum
from its factors against the dense product, and ``compare``'s peak memory on LLM shapes.

Each measurement runs in a fresh process with one BLAS/Numba thread:

- **compare vs analyse both**: all-MiniLM-L6-v2 against a real full fine-tune of it
  (``tests/data/make_minilm_lora.py`` writes one to rmt's cache; without it, the base plus
  1% Gaussian noise per entry, which the table says). ``rmt.compare(base, other)`` against
  ``rmt.analyze(base)`` + ``rmt.analyze(other)``, best of 3. Goal ≤ 1.5×. The *floor*
  is what compare adds that no implementation can avoid, timed alone on the same
  matrices: the update's own analysis (one more analysis: by itself 1.5×), the base's
  complete singular basis beyond its ESD (the intruder test takes the largest cosine over
  every base vector) and WeightWatcher's CKA product W_bᵀW_o for tall matrices.
- **LoRA module spectrum**: r = 16, 4096 × 4096, factors in memory (float32):
  ``rmt.layers.low_rank_esd`` (QR of both factors, an r × r SVD) against forming s·B·A
  and ``rmt.esd`` of it; the largest eigenvalue difference relative to λmax. Goal < 1 ms
  and exact.
- **peak memory**: ``rmt.compare`` of two Llama-7B-shaped bf16 checkpoints (the shapes of
  ``benchmarks.analyze_llm``, the second = the first plus a small bf16 update), peak RSS
  (``ru_maxrss``) of the child. Goal ≤ 1.5 GiB.

Run: ``python -m benchmarks.compare [--skip-llm] [--only minilm|lora|llm ...]``; writes
``benchmarks/results/compare.{json,md}`` (a measurement not rerun keeps its last row, with
the machine and date it ran on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import ml_dtypes
import numpy as np

from benchmarks._common import RESULTS, machine, publish, run_json
from rmt.io import stream_safetensors

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}

CHILD_TIMES = """
import json, sys, time
import rmt
base, other, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
rmt.compare(base, other, progress=False)  # imports, Numba caches
best_both = best_compare = float("inf")
for _ in range(repeat):
    t = time.perf_counter()
    rmt.analyze(base, progress=False)
    rmt.analyze(other, progress=False)
    best_both = min(best_both, time.perf_counter() - t)
    t = time.perf_counter()
    df = rmt.compare(base, other, progress=False)
    best_compare = min(best_compare, time.perf_counter() - t)
ok = df[df.status == "success"]
# The floor: what compare adds to analysing both that no implementation can avoid, timed
# alone on the same matrices: the update's own analysis, the base's complete singular
# basis (intruders) over its ESD alone, and WeightWatcher's CKA product for tall matrices.
import numpy as np
from rmt.io import open_checkpoint
from rmt.pairing import pair_names
from rmt.vectors import decompose
def floats(path):
    return {n: np.asarray(t.load()) for n, t in open_checkpoint(path)
            if len(t.shape) == 2 and np.dtype(t.dtype).kind == "f" and min(t.shape) > 1}
wb, wo = floats(base), floats(other)
pairs = [(o, b) for o, b, _ in pair_names(list(wo), list(wb)).pairs
         if wo[o].shape == wb[b].shape]
wb = {o: wb[b] for o, b in pairs}  # by the other's names from here on
names = [o for o, _ in pairs]
deltas = {n: wo[n].astype(np.float64) - wb[n].astype(np.float64) for n in names}
def best_of(work):
    b = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        work()
        b = min(b, time.perf_counter() - t)
    return b
floor = {"delta_analysis_s": best_of(lambda: rmt.analyze(deltas, progress=False)),
         "base_vectors_s": best_of(lambda: [decompose(wb[n]) for n in names])
         - best_of(lambda: [rmt.esd(wb[n]) for n in names]),
         "cka_cross_s": best_of(lambda: [np.linalg.norm(wb[n].astype(np.float64).T
                                                         @ wo[n].astype(np.float64))
                                         for n in names if wb[n].shape[0] > wb[n].shape[1]])}
floor["ratio"] = 1 + sum(floor.values()) / best_both
print(json.dumps({"analyze_both_s": best_both, "compare_s": best_compare, "rows": len(df),
                  "matched": len(ok), "intruders": int(ok.num_intruders.sum()),
                  "median_relative_change": float(ok.relative_change.median()),
                  "floor": floor}))
"""

CHILD_LORA = """
import json, time
import numpy as np
import rmt
from rmt.io.peft import LowRankUpdate
from rmt.io.tensor import LazyTensor
from rmt.layers import low_rank_esd
rng = np.random.default_rng(0)
A = rng.standard_normal((16, 4096)).astype(np.float32)
B = (0.01 * rng.standard_normal((4096, 16))).astype(np.float32)
def lazy(a):
    return LazyTensor("x", a.shape, a.dtype, "<memory>", lambda: a)
update = LowRankUpdate(lazy(A), lazy(B), 2.0, "linear")
low_rank_esd(update, (4096, 4096), "slices")
times = []
for _ in range(200):
    t = time.perf_counter()
    ev, _ = low_rank_esd(update, (4096, 4096), "slices")
    times.append(time.perf_counter() - t)
t = time.perf_counter()
dense = rmt.esd(update.dense(np.float64))
dense_s = time.perf_counter() - t
err = float(np.max(np.abs(ev - dense)) / dense[-1])
print(json.dumps({"factored_ms": 1e3 * float(np.median(times)),
                  "factored_min_ms": 1e3 * float(np.min(times)), "dense_s": dense_s,
                  "max_rel_err": err, "nonzero": int(np.count_nonzero(ev))}))
"""

CHILD_RSS = """
import json, resource, sys, time
import rmt
t = time.perf_counter()
df = rmt.compare(sys.argv[1], sys.argv[2], progress=False)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rows": len(df), "failed": int((df.status == "failed").sum())}))
"""


def _other_minilm(base: Path, tmp: Path) -> tuple[Path, str]:
    from rmt.pretrained import cache_dir

    real = cache_dir() / "minilm-full-finetune" / "model.safetensors"
    if real.is_file():
        return real, "a real full fine-tune (tests/data/make_minilm_lora.py)"
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    weights = load_file(str(base))
    noisy = {k: (v + 0.01 * np.abs(v).mean() * rng.standard_normal(v.shape)).astype(v.dtype)
             if v.dtype.kind == "f" else v for k, v in weights.items()}
    save_file(noisy, str(tmp / "noisy.safetensors"))
    return tmp / "noisy.safetensors", "the base plus 1% Gaussian noise (no fine-tune cached)"


def _llm_pair(tmp: Path) -> tuple[Path, Path]:
    """Two Llama-7B-shaped bf16 checkpoints, written block by block: the second is the
    first plus an update of 1% of its entries' scale."""
    from benchmarks.analyze_llm import SHAPES

    def chunks_for(tuned: bool):
        def chunks(name: str):
            shape = SHAPES[name]
            seed = list(SHAPES).index(name)
            rng, noise = np.random.default_rng(seed), np.random.default_rng(1000 + seed)
            for start in range(0, shape[0], 1024):
                rows = min(1024, shape[0] - start)
                block = 0.02 * rng.standard_normal((rows, shape[1]), dtype=np.float32)
                if tuned:
                    block += 2e-4 * noise.standard_normal((rows, shape[1]), dtype=np.float32)
                yield block.astype(ml_dtypes.bfloat16)
        return chunks

    layout = {name: (ml_dtypes.bfloat16, shape) for name, shape in SHAPES.items()}
    paths = tmp / "base.safetensors", tmp / "tuned.safetensors"
    for path, tuned in zip(paths, (False, True), strict=True):
        stream_safetensors(path, layout, chunks_for(tuned))
    return paths


def _minilm_line(r: dict) -> str:
    return (f"| compare all-MiniLM-L6-v2 with {r['other']} | {r['compare_s']:.2f} s vs "
            f"{r['analyze_both_s']:.2f} s analysing both: **{r['ratio']:.2f}×** | ≤ 1.5× | "
            f"{r['matched']} layers, {r['intruders']} intruder dimensions, median relative "
            f"change {r['median_relative_change']:.3f}; floor **{r['floor']['ratio']:.2f}×** "
            f"(the update's analysis {r['floor']['delta_analysis_s']:.2f} s, the base's "
            f"complete singular basis {r['floor']['base_vectors_s']:.2f} s, the CKA product "
            f"{r['floor']['cka_cross_s']:.2f} s) |")


def _lora_line(r: dict) -> str:
    return (f"| LoRA module spectrum, r = 16, 4096 × 4096 | **{r['factored_ms']:.2f} ms** "
            f"(median of 200; dense product + esd {r['dense_s']:.2f} s) | < 1 ms, exact | "
            f"max error {r['max_rel_err']:.0e}·λmax, {r['nonzero']} nonzero |")


def _llm_line(r: dict) -> str:
    return (f"| compare two Llama-7B-shaped bf16 checkpoints (0.9 GB each) | peak RSS "
            f"**{r['rss_MiB']:.0f} MiB**, {r['seconds']:.0f} s | ≤ 1536 MiB | {r['rows']} rows, "
            f"{r['failed']} failed |")


LINES = {"minilm": _minilm_line, "lora": _lora_line, "llm": _llm_line}


def _previous() -> dict:
    """The last published run's measurements, each with the machine and date it ran on."""
    path = RESULTS / "compare.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    return {key: {"machine": r.get("machine", old.get("machine", {})), **r}
            for key, r in old.get("results", {}).items()}


def main(argv: list[str] | None = None) -> int:
    """Run the measurements asked for; write ``benchmarks/results/compare.{json,md}``.

    A measurement not run this time keeps its row from the last published run, labelled
    with the machine and date it was measured on.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-llm", action="store_true", help="skip the LLM-shaped pair")
    parser.add_argument("--only", choices=sorted(LINES), action="append",
                        help="run only these measurements (repeatable)")
    args = parser.parse_args(argv)
    from rmt.pretrained import fetch

    wanted = set(args.only or LINES) - ({"llm"} if args.skip_llm else set())
    info = machine(1)
    results = _previous()
    with tempfile.TemporaryDirectory() as tmp:
        if "minilm" in wanted:
            base = fetch("all-MiniLM-L6-v2")
            other, what = _other_minilm(base, Path(tmp))
            r = run_json([sys.executable, "-c", CHILD_TIMES, base, other, str(args.repeat)],
                         env=ENV)
            r["ratio"], r["other"] = r["compare_s"] / r["analyze_both_s"], what
            results["minilm"] = {"machine": info, **r}
        if "lora" in wanted:
            results["lora"] = {"machine": info,
                               **run_json([sys.executable, "-c", CHILD_LORA], env=ENV)}
        if "llm" in wanted:
            a, b = _llm_pair(Path(tmp))
            results["llm"] = {"machine": info,
                              **run_json([sys.executable, "-c", CHILD_RSS, a, b], env=ENV)}
    lines = []
    for key, line in LINES.items():
        if key in results:
            r, where = results[key], results[key]["machine"]
            lines.append(line(r) if key in wanted else
                         line(r)[:-2] + f"; measured {where.get('date', '?')} on "
                                        f"{where.get('cpu', '?')} |")
    md = "\n".join([f"Checkpoint comparison — {info['cpu']}, 1 thread, {info['date']}", "",
                    "| measurement | result | goal | notes |", "|---|---|---|---|", *lines])
    publish("compare", {"machine": info, "results": results}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ESD speed, memory and accuracy: rmt.esd against WeightWatcher's SVD path and the floor.

Side by side on the same input, one process, pinned threads:

- ``ww_svd``: WeightWatcher's path, ``scipy.linalg.svd(W.astype(float64),
  compute_uv=False)`` (LAPACK gesdd), eigenvalues ν².
- ``floor``: NumPy's own float64 Gram product and ``eigvalsh`` on a float64 W already
  in memory (``np.linalg.eigvalsh(W.T @ W)``) — the least a dense ESD can cost.
- ``rmt_f64``: ``rmt.esd`` on the float64 W (no copy, syrk + syevd).
- ``rmt_f32in``: ``rmt.esd`` on float32 storage (blocked decode to float64).
- ``rmt_bf16``: ``rmt.esd`` on bfloat16 storage (blocked Numba decode to float64).
- ``rmt_acc32``: ``rmt.esd(..., dtype=float32)`` on float32 storage (float32 accumulation).

Errors are max |λ − λ_ref| / λmax against the float64 SVD of the same stored values.
Run: ``python -m benchmarks.esd [--quick] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import ml_dtypes
import numba
import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

import rmt
from benchmarks._common import BENCHMARKS_DOC, machine, measure, publish

MINILM = [(30522, 384), (1536, 384), (384, 384)]
LLM = [(4096, 4096), (11008, 4096)]


def _svd_esd(W: np.ndarray) -> np.ndarray:
    s = scipy.linalg.svd(W.astype(np.float64), compute_uv=False)
    return np.sort(s**2)


def _floor(W64: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(W64.T @ W64)


def _rel_err(ev: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.sort(ev) - ref).max() / ref.max())


def bench_shape(shape: tuple[int, int], repeat: int, rng: np.random.Generator) -> dict:
    """All methods on one shape; returns times (s), peak traced memory (MiB) and errors."""
    W32 = (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    Wbf = W32.astype(ml_dtypes.bfloat16)
    W64 = W32.astype(np.float64)

    def rmt_esd(W: np.ndarray, dtype: type = np.float64) -> np.ndarray:
        return rmt.esd(W, normalize=False, device="cpu", dtype=dtype, n_threads=THREADS)

    methods = {
        "ww_svd": lambda: _svd_esd(W32),
        "floor": lambda: _floor(W64),
        "rmt_f64": lambda: rmt_esd(W64),
        "rmt_f32in": lambda: rmt_esd(W32),
        "rmt_bf16": lambda: rmt_esd(Wbf),
        "rmt_acc32": lambda: rmt_esd(W32, np.float32),
    }
    ev, seconds, peak = {}, {}, {}
    for key, fn in methods.items():
        ev[key], seconds[key], peak[key] = measure(fn, repeat)
    ref, ref_bf = ev["ww_svd"], _svd_esd(Wbf)
    s = seconds
    return {
        "shape": list(shape),
        "input_MiB": {"float32": W32.nbytes / 2**20, "bfloat16": Wbf.nbytes / 2**20},
        "seconds": seconds,
        "peak_MiB": peak,
        "max_rel_err": {key: _rel_err(ev[key], ref_bf if key == "rmt_bf16" else ref)
                        for key in methods if key != "ww_svd"},
        "ratios": {
            "svd_over_rmt_f64": s["ww_svd"] / s["rmt_f64"],
            "svd_over_rmt_bf16": s["ww_svd"] / s["rmt_bf16"],
            "rmt_f64_over_floor": s["rmt_f64"] / s["floor"],
            "rmt_f32in_over_floor": s["rmt_f32in"] / s["floor"],
            "rmt_bf16_over_floor": s["rmt_bf16"] / s["floor"],
        },
    }


def bench_streaming(shape: tuple[int, int], rng: np.random.Generator) -> dict:
    """A bf16 embedding memory-mapped from disk: rmt's peak vs the float64 copy WW makes.

    WeightWatcher's first step, ``W.astype(float64)``, is measured on its own (its SVD
    workspace comes on top); rmt's peak is the whole ``rmt.esd`` call.
    """
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.bf16"
        mm = np.memmap(path, dtype=ml_dtypes.bfloat16, mode="w+", shape=shape)
        for start in range(0, shape[0], 4096):
            stop = min(start + 4096, shape[0])
            mm[start:stop] = 0.02 * rng.standard_normal((stop - start, shape[1]), np.float32)
        mm.flush()
        del mm
        W = np.memmap(path, dtype=ml_dtypes.bfloat16, mode="r", shape=shape)
        _, t_rmt, peak_rmt = measure(
            lambda: rmt.esd(W, device="cpu", n_threads=THREADS), 1)
        _, _, peak_copy = measure(lambda: W.astype(np.float64), 1)
    return {"shape": list(shape), "file_MiB": shape[0] * shape[1] * 2 / 2**20,
            "gram_MiB": shape[1] ** 2 * 8 / 2**20, "rmt_seconds": t_rmt,
            "rmt_peak_MiB": peak_rmt, "ww_float64_copy_MiB": peak_copy}


def table(rows: list[dict], info: dict) -> str:
    """Markdown table of the results."""
    head = ("| shape | WW SVD s | floor s | rmt f64 s | rmt bf16 s | SVD/rmt | rmt/floor "
            "| bf16/floor | peak MiB SVD / floor / rmt f64 / rmt bf16 "
            "| max err rmt f64 / bf16 / acc32 |")
    lines = [f"ESD benchmark — {info['cpu']}, {info['threads']} thread(s), numpy "
             f"{info['numpy']}, scipy {info['scipy']}, {', '.join(info['blas'])}, {info['date']}",
             "", head, "|" + "---|" * 10]
    for r in rows:
        s, p, e, q = r["seconds"], r["peak_MiB"], r["max_rel_err"], r["ratios"]
        lines.append(
            f"| {r['shape'][0]}×{r['shape'][1]} | {s['ww_svd']:.3f} | {s['floor']:.3f} "
            f"| {s['rmt_f64']:.3f} | {s['rmt_bf16']:.3f} | {q['svd_over_rmt_f64']:.2f}× "
            f"| {q['rmt_f64_over_floor']:.2f} | {q['rmt_bf16_over_floor']:.2f} "
            f"| {p['ww_svd']:.0f} / {p['floor']:.0f} / {p['rmt_f64']:.0f} / {p['rmt_bf16']:.0f} "
            f"| {e['rmt_f64']:.1e} / {e['rmt_bf16']:.1e} / {e['rmt_acc32']:.1e} |"
        )
    return "\n".join(lines)


THREADS = 1


def main(argv: list[str] | None = None) -> int:
    """Run the ESD benchmark and write ``benchmarks/results/esd.{json,md}``."""
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="MiniLM shapes only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="best of n (small shapes)")
    args = parser.parse_args(argv)
    THREADS = args.threads
    shapes = MINILM + ([] if args.quick else LLM)
    rng = np.random.default_rng(0)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(args.threads):
        info = machine(args.threads)
        compile_start = time.perf_counter()
        warm = np.ones((8, 4), dtype=ml_dtypes.bfloat16)
        rmt.esd(warm, device="cpu", block_rows=3)
        warm.flags.writeable = False  # read-only memmaps are a separate Numba specialisation
        rmt.esd(warm, device="cpu", block_rows=3)
        info["numba_compile_or_cache_load_s"] = time.perf_counter() - compile_start
        rows = []
        for shape in shapes:
            repeat = args.repeat if shape[0] * shape[1] <= 2**24 else 1
            rows.append(bench_shape(shape, repeat, rng))
            print(table(rows[-1:], info).splitlines()[-1], file=sys.stderr, flush=True)
    md = table(rows, info)
    payload = {"machine": info, "results": rows}
    if not args.quick:
        with threadpool_limits(args.threads):
            stream = bench_streaming((32000, 4096), rng)
        payload["streaming"] = stream
        md += (f"\n\nStreaming a {stream['shape'][0]}×{stream['shape'][1]} bf16 memmap "
               f"({stream['file_MiB']:.0f} MiB on disk): rmt.esd peak "
               f"{stream['rmt_peak_MiB']:.0f} MiB (Gram matrix {stream['gram_MiB']:.0f} MiB) in "
               f"{stream['rmt_seconds']:.1f} s; WeightWatcher's float64 copy alone "
               f"{stream['ww_float64_copy_MiB']:.0f} MiB.")
    publish("esd" if not args.quick else "esd-quick", payload, md,
            doc=None if args.quick else BENCHMARKS_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

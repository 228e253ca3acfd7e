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

import ml_dtypes
import numba
import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

import rmt
from benchmarks._common import machine, measure, write

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
    Wbf64 = Wbf.astype(np.float64)
    ref, t_svd, m_svd = measure(lambda: _svd_esd(W32), repeat)
    ref_bf = _svd_esd(Wbf)
    ev_floor, t_floor, m_floor = measure(lambda: _floor(W64), repeat)
    del Wbf64
    ev64, t64, m64 = measure(lambda: rmt.esd(W64, normalize=False, device="cpu", n_threads=THREADS), repeat)
    ev32in, t32in, m32in = measure(lambda: rmt.esd(W32, normalize=False, device="cpu", n_threads=THREADS), repeat)
    evbf, tbf, mbf = measure(lambda: rmt.esd(Wbf, normalize=False, device="cpu", n_threads=THREADS), repeat)
    evacc, tacc, macc = measure(
        lambda: rmt.esd(W32, normalize=False, device="cpu", dtype=np.float32, n_threads=THREADS), repeat)
    row = {
        "shape": list(shape),
        "input_MiB": {"float32": W32.nbytes / 2**20, "bfloat16": Wbf.nbytes / 2**20},
        "seconds": {"ww_svd": t_svd, "floor": t_floor, "rmt_f64": t64, "rmt_f32in": t32in,
                    "rmt_bf16": tbf, "rmt_acc32": tacc},
        "peak_MiB": {"ww_svd": m_svd, "floor": m_floor, "rmt_f64": m64, "rmt_f32in": m32in,
                     "rmt_bf16": mbf, "rmt_acc32": macc},
        "max_rel_err": {"floor": _rel_err(ev_floor, ref), "rmt_f64": _rel_err(ev64, ref),
                        "rmt_f32in": _rel_err(ev32in, ref), "rmt_bf16": _rel_err(evbf, ref_bf),
                        "rmt_acc32": _rel_err(evacc, ref)},
    }
    s = row["seconds"]
    row["ratios"] = {
        "svd_over_rmt_f64": s["ww_svd"] / s["rmt_f64"],
        "svd_over_rmt_bf16": s["ww_svd"] / s["rmt_bf16"],
        "rmt_f64_over_floor": s["rmt_f64"] / s["floor"],
        "rmt_f32in_over_floor": s["rmt_f32in"] / s["floor"],
        "rmt_bf16_over_floor": s["rmt_bf16"] / s["floor"],
    }
    return row


def table(rows: list[dict], info: dict) -> str:
    """Markdown table of the results."""
    head = ("| shape | WW SVD s | floor s | rmt f64 s | rmt bf16 s | SVD/rmt | rmt/floor "
            "| bf16/floor | peak MiB SVD / floor / rmt f64 / rmt bf16 | max err rmt f64 / bf16 / acc32 |")
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
        compile_start = __import__("time").perf_counter()
        rmt.esd(np.ones((8, 4), dtype=ml_dtypes.bfloat16), device="cpu", block_rows=3)
        info["numba_compile_or_cache_load_s"] = __import__("time").perf_counter() - compile_start
        rows = []
        for shape in shapes:
            repeat = args.repeat if shape[0] * shape[1] <= 2**24 else 1
            rows.append(bench_shape(shape, repeat, rng))
            print(table(rows[-1:], info).splitlines()[-1], file=sys.stderr, flush=True)
    md = table(rows, info)
    print(md)
    write("esd" if not args.quick else "esd-quick", {"machine": info, "results": rows}, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

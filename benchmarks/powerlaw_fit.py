"""Power-law fit speed and agreement: rmt.fit_powerlaw against the powerlaw package.

Side by side on the same data in one process: ``powerlaw.Fit(x, parameter_ranges=
{'alpha': [1, None]}, verbose=False)`` (the answer rmt must reproduce) and
``rmt.fit_powerlaw(x)`` on 1 and 2 threads. Data: ESD-shaped samples — 90% drawn from a
Marchenko–Pastur bulk (Q = 2, σ² = 1, by inverting its closed-form CDF) and 10% from a
power-law tail with α = 3.5 above λ₊ — plus the real ESDs of heavy-tailed random
matrices at n = 1000 and 4000; and the KS scan's worst cases, a pure power law (Pareto,
α = 2.5: every point in every tail and the minimum flat) and a lognormal. powerlaw runs up
to n = 16000 and on the pure power law at 50000; rmt alone at 50000 and 200000.
Run: ``python -m benchmarks.powerlaw_fit [--quick]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import rmt
from benchmarks._common import BENCHMARKS_DOC, machine, publish
from rmt import mp


def esd_shaped(n: int, rng: np.random.Generator) -> np.ndarray:
    """n values: an MP(Q=2) bulk (90%) and a power-law tail α = 3.5 above λ₊ (10%)."""
    lo, hi = mp.edges(2.0)
    grid = np.linspace(lo, hi, 20001)
    bulk = np.interp(rng.random(n - n // 10), mp.cdf(grid, 2.0), grid)
    tail = hi * (1.0 - rng.random(n // 10)) ** (-1.0 / 2.5)
    return np.concatenate([bulk, tail])


def pareto(n: int, rng: np.random.Generator, alpha: float = 2.5) -> np.ndarray:
    """n values of a pure power law with exponent ``alpha`` above 1."""
    return (1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0))


def real_esd(m: int, rng: np.random.Generator) -> np.ndarray:
    """ESD of a 2m×m Gaussian matrix with 1 + Lomax(1.5) column variances."""
    W = rng.standard_normal((2 * m, m)) * np.sqrt(1.0 + rng.pareto(1.5, size=m))
    return np.linalg.eigvalsh(W.T @ W / (2 * m))


def timed(fn, repeat: int = 1):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def bench(name: str, x: np.ndarray, with_powerlaw: bool) -> dict:
    """rmt on 1 and 2 threads (best of 3) and, optionally, powerlaw once."""
    row: dict = {"data": name, "n": int(x.size)}
    _, row["rmt_1thread_s"] = timed(lambda: rmt.fit_powerlaw(x, device="cpu", n_threads=1), 3)
    fit2, row["rmt_2threads_s"] = timed(lambda: rmt.fit_powerlaw(x, device="cpu", n_threads=2), 3)
    row.update(alpha=fit2.alpha, xmin=fit2.xmin, D=fit2.D, n_tail=fit2.n_tail)
    if with_powerlaw:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, row["powerlaw_s"] = timed(
                lambda: __import__("powerlaw").Fit(x, parameter_ranges={"alpha": [1, None]},
                                                   verbose=False))
        row["speedup_2threads"] = row["powerlaw_s"] / row["rmt_2threads_s"]
        row["speedup_1thread"] = row["powerlaw_s"] / row["rmt_1thread_s"]
        row["abs_dalpha"] = abs(fit2.alpha - ref.alpha)
        row["abs_dD"] = abs(fit2.D - ref.D)
        row["same_xmin"] = bool(fit2.xmin == ref.xmin)
    return row


def table(rows: list[dict], info: dict) -> str:
    """Markdown table of the results."""
    lines = [f"Power-law fit benchmark — {info['cpu']}, {info['cores']} cores, numba "
             f"{info['numba']}, first call (compile or cache load) "
             f"{info['first_call_s']:.2f} s, {info['date']}", "",
             "| data | n | powerlaw s | rmt 1 thr s | rmt 2 thr s | speedup (2 thr) | same xmin "
             "| abs Δα | abs ΔD | α |", "|" + "---|" * 10]
    for r in rows:
        pl = r.get("powerlaw_s")
        lines.append(
            f"| {r['data']} | {r['n']} | {pl:.2f} | " if pl is not None else
            f"| {r['data']} | {r['n']} | — | ")
        lines[-1] += (f"{r['rmt_1thread_s'] * 1e3:.1f} ms | {r['rmt_2threads_s'] * 1e3:.1f} ms | "
                      + (f"{r['speedup_2threads']:.0f}× | {r['same_xmin']} | {r['abs_dalpha']:.1e} "
                         f"| {r['abs_dD']:.1e} |" if pl is not None else "— | — | — | — |")
                      + f" {r['alpha']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write ``benchmarks/results/powerlaw_fit.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n <= 4000 only")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    rmt.fit_powerlaw(esd_shaped(200, rng), device="cpu")
    info = machine(2)
    info["first_call_s"] = time.perf_counter() - start
    rows = [bench("real ESD", real_esd(1000, rng), True),
            bench("real ESD", real_esd(4000, rng), True)]
    sizes = (1000, 4000) if args.quick else (1000, 4000, 16000)
    for n in sizes:
        rows.append(bench("ESD-shaped", esd_shaped(n, rng), True))
    if not args.quick:
        rows.append(bench("ESD-shaped", esd_shaped(50000, rng), False))
        rows.append(bench("ESD-shaped", esd_shaped(200000, rng), False))
    worst = (1000, 8000) if args.quick else (8000, 16000, 50000, 200000)
    for n in worst:
        rows.append(bench("pure power law α=2.5", pareto(n, rng), n <= 50000))
    for n in worst:
        rows.append(bench("lognormal", rng.lognormal(0.0, 1.0, n), n <= 16000))
    md = table(rows, info)
    name = "powerlaw_fit" + ("-quick" if args.quick else "")
    publish(name, {"machine": info, "results": rows}, md,
            doc=None if args.quick else BENCHMARKS_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The KS-optimal xmin scan behind :func:`rmt.fit_powerlaw` (Clauset–Shalizi–Newman).

Sort once; α̂ for every candidate xmin from suffix sums of ln x (O(n) total); the KS
distance of each candidate from a compiled branch and bound with exact pruning
(``rmt.kernels.cpu.ks_distances``) or its GPU twin. Conventions follow powerlaw 2.0
(docs/science.md §4) or WeightWatcher's ``WWFit`` (``candidates="ww"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rmt._device import Device, kernels, resolve_device


@dataclass(frozen=True)
class Scan:
    """Every candidate of one scan (arrays of equal length C) and the choice made."""

    xmins: np.ndarray
    alphas: np.ndarray
    D: np.ndarray
    n_tail: np.ndarray
    valid: np.ndarray
    best: int  # index of the chosen candidate, -1 if none
    any_valid: bool


def alpha_closed_form(log_shifted: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Continuous MLE α̂ = 1 + n_i / Σ_{j≥i} ln(x_j/x_i) for tails starting at ``first``.

    ``log_shifted`` is ln x − ln max(x) (ascending, ≤ 0): shifting by the largest value
    keeps Σ ln(x_j/x_i) = S_i − n_i·ℓ_i free of cancellation for the short upper tails,
    where the terms are close to 0.
    """
    suffix = np.cumsum(log_shifted[::-1])[::-1]
    n_i = log_shifted.size - first
    spread = suffix[first] - n_i * log_shifted[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 + n_i / spread


def alpha_bounded(n_i: np.ndarray, spread: np.ndarray, log_range: np.ndarray) -> np.ndarray:
    """MLE of α for a power law bounded to [xmin, xmax], by safeguarded Newton.

    With t = α − 1, m = spread/n (mean of ln(x/xmin)) and r = ln(xmax/xmin) the score
    equation is g(t) = 1/t − r/(e^{tr} − 1) = m; g decreases from r (t → −∞) through
    r/2 (t = 0) to 0, so for 0 < m < r there is exactly one root (α < 1 included).
    O(1) work per candidate per iteration; converges to ~1e-14 relative.
    """
    m = spread / n_i
    r = log_range

    def g_and_slope(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tr = t * r
        small = np.abs(tr) < 1e-4
        safe = np.where(small, 1.0, tr)
        em1 = np.expm1(safe)
        g = np.where(small, r / 2 - r * tr / 12, 1.0 / np.where(small, 1.0, t) - r / em1)
        ex = np.exp(np.minimum(safe, 700.0))
        slope = np.where(small, -r * r / 12, -1.0 / np.where(small, 1.0, t) ** 2
                         + r * r * ex / em1**2)
        return g, slope

    hi = 1.0 / m  # g(1/m) < m because r/(e^{tr}−1) > 0
    lo = -(2.0 / np.maximum(r - m, 1e-300)) - 1.0 / r
    t = np.where(m < r / 2, 0.5 * hi, 0.5 * lo)
    for _ in range(200):
        g, slope = g_and_slope(t)
        f = g - m
        lo = np.where(f > 0, t, lo)
        hi = np.where(f <= 0, t, hi)
        newton = t - f / slope
        inside = (newton > lo) & (newton < hi) & np.isfinite(newton)
        t_new = np.where(inside, newton, 0.5 * (lo + hi))
        if np.all(np.abs(t_new - t) <= 1e-15 * np.maximum(1.0, np.abs(t))):
            t = t_new
            break
        t = t_new
    return 1.0 + t


def validity(alphas: np.ndarray, alpha_range: tuple[float | None, float | None],
             closed_form_fast_path: bool) -> np.ndarray:
    """powerlaw's per-candidate validity for ``parameter_ranges={'alpha': alpha_range}``.

    A candidate is valid when α lies strictly inside the range and not within 0.01 of a
    bound (powerlaw's noise flag), except that a closed-form α̂ in (1.5, 3] skips the
    0.01 check (powerlaw fits those without its optimiser).
    """
    lo, hi = alpha_range
    with np.errstate(invalid="ignore"):
        inside = np.isfinite(alphas)
        near = np.zeros_like(inside)
        if lo is not None:
            inside &= alphas > lo
            near |= alphas - 0.01 < lo
        if hi is not None:
            inside &= alphas < hi
            near |= alphas + 0.01 > hi
        fast = (alphas > 1.5) & (alphas <= 3.0) if closed_form_fast_path else False
    return inside & (fast | ~near)


def scan(
    data: np.ndarray,
    *,
    xmax: float | None,
    alpha_range: tuple[float | None, float | None],
    min_tail: int | None,
    candidates: Literal["powerlaw", "ww"],
    device: Device,
    fixed_xmin: float | None = None,
    prune: bool = True,
    keep: float = 1.0,
) -> Scan:
    """Fit α at every candidate xmin of sorted positive ``data`` and pick the least D.

    Parameters
    ----------
    data : numpy.ndarray of float64
        Ascending, positive, already cut at ``xmax``.
    xmax : float or None
        Upper bound of the power law (bounded MLE and CDF) or None.
    alpha_range : (float or None, float or None)
        powerlaw's ``parameter_ranges['alpha']``.
    min_tail : int or None
        Candidates with fewer tail points are not eligible.
    candidates : {"powerlaw", "ww"}
        Candidate set and KS convention.
    device : {"auto", "cpu", "gpu"}
        Where the KS kernel runs.
    fixed_xmin : float, optional
        Evaluate this xmin only.
    prune : bool, default True
        Exact pruning of the KS scan (the minimum and every D at or below ``keep`` × the
        minimum are exact; others are lower bounds above that). False: every candidate's
        D is exact.
    keep : float, default 1.0
        How far above the minimum D stays exact under ``prune`` (≥ 1).

    Returns
    -------
    Scan
    """
    n = data.size
    log_x = np.log(data)
    log_shifted = log_x - log_x[-1]
    if candidates == "ww":
        pts_log, pts_rank = log_x, np.arange(n, dtype=np.float64)
        first = np.arange(n - 1)
        starts = first
    else:
        uniq_first = np.flatnonzero(np.r_[True, data[1:] != data[:-1]])
        pts_log, pts_rank = log_x[uniq_first], uniq_first.astype(np.float64)
        first = uniq_first[:-2]  # powerlaw drops the two largest distinct values
        starts = np.arange(first.size)
    log_xmins = log_x[first]
    if fixed_xmin is not None:
        i = int(np.searchsorted(data, fixed_xmin, side="left"))
        first = np.array([i])
        starts = np.array([int(np.searchsorted(pts_rank, i, side="left"))])
        log_xmins = np.array([np.log(fixed_xmin)])
    n_tail = (n - first).astype(np.float64)
    spread = np.array([np.sum(log_x[i:] - lx) for i, lx in zip(first, log_xmins, strict=True)]
                      ) if fixed_xmin is not None else None
    if xmax is not None and candidates != "ww":
        if spread is None:
            suffix = np.cumsum(log_shifted[::-1])[::-1]
            spread = suffix[first] - n_tail * log_shifted[first]
        log_range = np.log(xmax) - log_xmins
        alphas = alpha_bounded(n_tail, spread, log_range)
        with np.errstate(over="ignore"):
            inv_norms = 1.0 / -np.expm1((1.0 - alphas) * log_range)
    else:
        if spread is None:
            alphas = alpha_closed_form(log_shifted, first)
        else:
            with np.errstate(divide="ignore"):
                alphas = 1.0 + n_tail / spread
        inv_norms = np.ones_like(alphas)
    if candidates == "ww":
        valid = np.isfinite(alphas) & (alphas > 1.0)
    else:
        valid = validity(alphas, alpha_range, closed_form_fast_path=True)
    if min_tail is not None:
        valid &= n_tail >= min_tail
    any_valid = bool(valid.any())
    active = valid if any_valid else np.isfinite(alphas)
    if not any_valid and candidates != "ww" and fixed_xmin is None:
        # powerlaw then takes the least D over all candidates, each refitted by its
        # bounded optimiser, which ends on the violated bound of alpha_range.
        lo, hi = alpha_range
        alphas = np.clip(alphas, -np.inf if lo is None else lo, np.inf if hi is None else hi)
        if xmax is not None:
            with np.errstate(over="ignore", divide="ignore"):
                inv_norms = 1.0 / -np.expm1((1.0 - alphas) * (np.log(xmax) - log_xmins))
    if candidates == "ww" or fixed_xmin is not None:
        active = np.isfinite(alphas)
    K = kernels(resolve_device(device))
    D = K.ks_distances(pts_log, pts_rank, starts, log_xmins, pts_rank[starts], n_tail,
                       alphas, inv_norms, active, prune=prune and fixed_xmin is None,
                       keep=keep)
    if candidates == "ww":
        D = np.where(alphas > 1.0, D, 1.0)  # WWFit keeps D = 1 where α ≤ 1
        best = int(np.argmin(D)) if D.size else -1
    else:
        pool = np.where(valid if any_valid else active, D, np.inf)
        best = int(np.argmin(pool)) if np.isfinite(pool).any() else -1
    if fixed_xmin is not None:
        best = 0
    xmins = data[first] if fixed_xmin is None else np.array([fixed_xmin])
    return Scan(xmins=xmins, alphas=alphas, D=D, n_tail=n_tail, valid=valid, best=best,
                any_valid=any_valid)

"""WeightWatcher 0.7.7's Marchenko–Pastur fit, for comparison with :func:`rmt.fit_mp`.

WeightWatcher fits σ by least squares between the MP density and a kernel density
estimate of the ESD: the eigenvalues are rescaled to mean 1, smoothed by a linear
(triangular) kernel of bandwidth 0.1 on 1000 points of [0, λmax + 0.5], points where the
estimate is below 0.01 are dropped, σ is scanned over 195 grid points of
[0.05, 2)·σ₀ (σ₀ = √λmax / (1 + 1/√Q)), then polished by Nelder–Mead
(``scipy.optimize.brute``'s default finish). A σ whose bulk edge λ₊ lies left of the
estimate's mode, beyond the grid, or whose λ₋ lies right of the mode costs 1000 per point.
Its spikes are the eigenvalues above λ₊ + √(Q^{-1/2} λ₊^{2/3} M^{-2/3}) — the square root
of a Tracy–Widom-like width rather than a quantile, so it has no stated false-positive rate
(``rmt.fit_mp`` uses the Tracy–Widom quantile at ``fpr``; docs/science.md §10). For Q = 1
it fits the quarter-circle law 1/(πσ²)·√(4 − ν²) to the singular values as WeightWatcher
does (σ enters only as a scale factor there).

WeightWatcher re-builds the kernel density for every σ with scikit-learn; here it is built
once, exactly, from prefix sums of the sorted eigenvalues (O(n log n)), and every σ of the
grid is scored at once. The result equals WeightWatcher's to float64 rounding (tested
against its code run with scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rmt._device import kernels

__all__ = ["WWMPFit", "fit_mp_ww", "linear_kde"]

#: WeightWatcher's constants: kernel bandwidth, density floor, grid points, penalty.
BANDWIDTH = 0.1
DENSITY_FLOOR = 0.01
GRID_POINTS = 1000
PENALTY = 1000.0


@dataclass(frozen=True)
class WWMPFit:
    """WeightWatcher's MP fit of one ESD, in its rescaled units (mean eigenvalue 1).

    Attributes
    ----------
    sigma : float
        Fitted σ (WeightWatcher's ``sigma_mp``).
    bulk_max, bulk_min : float
        λ± = σ²(1 ± 1/√Q)² (rescaled units; its ``bulk_max``, ``bulk_min``).
    cut : float
        Spike threshold bulk_max + √(Q^{-1/2}·bulk_max^{2/3}·M^{-2/3}).
    n_spikes : int
        Rescaled eigenvalues above ``cut`` (its ``num_spikes``, or ``num_traps`` on a
        shuffled ESD).
    mp_softrank : float
        bulk_max / λmax (rescaled).
    w_scale : float
        The rescaling factor of W, √n/√Σλ (its ``W_scale``).
    """

    sigma: float
    bulk_max: float
    bulk_min: float
    cut: float
    n_spikes: int
    mp_softrank: float
    w_scale: float


def linear_kde(samples: np.ndarray, x: np.ndarray, bandwidth: float) -> np.ndarray:
    """Kernel density estimate with the linear kernel max(0, 1 − |t|/h)/h, exactly.

    Parameters
    ----------
    samples : numpy.ndarray
        The data (any order).
    x : numpy.ndarray
        Where to evaluate.
    bandwidth : float
        h.

    Returns
    -------
    numpy.ndarray
        (1/(n h)) Σᵢ max(0, 1 − |x − sᵢ|/h), as scikit-learn's
        ``KernelDensity(kernel="linear")`` gives; float64, absolute error ~ n·eps/h.
    """
    s = np.sort(np.asarray(samples, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    lo = np.searchsorted(s, x - bandwidth, side="right")
    mid = np.searchsorted(s, x, side="right")
    hi = np.searchsorted(s, x + bandwidth, side="left")
    # Σ over s in (x−h, x] of (h − x + s), and over s in (x, x+h) of (h + x − s)
    left = (mid - lo) * (bandwidth - x) + (prefix[mid] - prefix[lo])
    right = (hi - mid) * (bandwidth + x) - (prefix[hi] - prefix[mid])
    return np.maximum(left + right, 0.0) / (s.size * bandwidth * bandwidth)


def _residuals(sigmas: np.ndarray, xde: np.ndarray, yde: np.ndarray, Q: float) -> np.ndarray:
    """Σ of squared residuals for each σ (WeightWatcher's resid_mp with allresid=False).

    A σ whose edges fail WeightWatcher's checks costs 1000² per point. WeightWatcher's
    ``marchenko_pastur_fun`` is its formula with ``nan_to_num``: 0 wherever the square
    root is of a negative number, which is exactly outside the support (compiled:
    ``rmt.kernels.cpu.mp_ww_residuals``).
    """
    return kernels("cpu").mp_ww_residuals(sigmas, xde, yde, Q, PENALTY)


def fit_mp_ww(ev: np.ndarray, N: int, M: int) -> WWMPFit:
    """WeightWatcher 0.7.7's ``mp_fit`` of an ESD (its definition, for comparison).

    Parameters
    ----------
    ev : numpy.ndarray
        The ESD, every eigenvalue (zeros included, as WeightWatcher passes them), in any
        units: it is rescaled to mean 1 first.
    N, M : int
        The matrix shape, N ≥ M (Q = N/M).

    Returns
    -------
    WWMPFit

    Raises
    ------
    ValueError
        Fewer than 2 eigenvalues, or none positive.
    """
    ev = np.asarray(ev, dtype=np.float64)
    if ev.size < 2 or not np.any(ev > 0):
        raise ValueError(f"fit_mp_ww needs >= 2 eigenvalues with a positive sum, got {ev.size}")
    Q = N / M
    w_scale = float(np.sqrt(ev.size) / np.sqrt(np.sum(ev)))
    scaled = w_scale * w_scale * ev
    lam_max = float(scaled.max())
    to_fit = np.sqrt(scaled) if Q == 1 else scaled
    xde = np.linspace(0, to_fit.max() + 0.5, GRID_POINTS)
    yde = linear_kde(to_fit, xde, BANDWIDTH)
    good = yde > DENSITY_FLOOR  # WeightWatcher's dropped points add zero residual
    xde, yde = xde[good], yde[good]
    sigma0 = np.sqrt(lam_max / (1 + 1 / np.sqrt(Q)) ** 2)
    grid = np.mgrid[slice(0.05 * sigma0, 2.0 * sigma0, 0.01 * sigma0)]
    scores = _residuals(grid, xde, yde, Q)
    start = grid[int(np.argmin(scores))]
    # WeightWatcher polishes with scipy.optimize.fmin; the compiled twin of its iteration
    # gives the same σ bit for bit (rmt.kernels.cpu.mp_ww_fmin)
    sigma = kernels("cpu").mp_ww_fmin(float(start), xde, yde, Q, PENALTY)
    bulk_max = (sigma * (1 + 1 / np.sqrt(Q))) ** 2
    bulk_min = (sigma * (1 - 1 / np.sqrt(Q))) ** 2
    cut = bulk_max + np.sqrt(1 / np.sqrt(Q) * bulk_max ** (2 / 3) * M ** (-2 / 3))
    return WWMPFit(sigma=sigma, bulk_max=float(bulk_max), bulk_min=float(bulk_min),
                   cut=float(cut), n_spikes=int(np.sum(scaled > cut)),
                   mp_softrank=float(bulk_max / lam_max), w_scale=w_scale)

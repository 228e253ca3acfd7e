"""Marchenko–Pastur law, MP fit with Tracy–Widom spike detection, BBP spike strengths.

Convention (docs/science.md §1): eigenvalues λ of X = WᵀW/N for W N×M, Q = N/M ≥ 1, entries
of variance σ². The MP law then lives on [λ₋, λ₊], λ± = σ²(1 ± 1/√Q)², with mean σ².

References
----------
V. A. Marchenko and L. A. Pastur, Math. USSR-Sb. 1(4), 457–483 (1967).
I. M. Johnstone, Ann. Statist. 29(2), 295–327 (2001).
F. Benaych-Georges and R. R. Nadakuditi, J. Multivar. Anal. 111, 120–135 (2012).
C. H. Martin and M. W. Mahoney, JMLR 22(165), 2021.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt.errors import DataError
from rmt.tracywidom import johnstone, tw1_ppf

__all__ = ["MPFit", "bbp_inverse", "bbp_location", "cdf", "edges", "fit_mp", "pdf",
           "spike_threshold", "tw_z"]


def _check_q(Q: float) -> float:
    Q = float(Q)
    if not Q >= 1.0:
        raise ValueError(f"Q = N/M must be >= 1 (orient W so that N >= M), got {Q}")
    return Q


def edges(Q: float, sigma2: float = 1.0) -> tuple[float, float]:
    """Bulk edges (λ₋, λ₊) = σ²(1 ∓ 1/√Q)² of the MP law.

    Parameters
    ----------
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma2 : float, default 1.0
        Entry variance σ² (bulk scale).

    Returns
    -------
    tuple of float
        (λ₋, λ₊).
    """
    Q = _check_q(Q)
    r = 1.0 / np.sqrt(Q)
    return float(sigma2 * (1.0 - r) ** 2), float(sigma2 * (1.0 + r) ** 2)


def pdf(x: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """MP density Q/(2πσ²x)·√((λ₊ − x)(x − λ₋)) on [λ₋, λ₊], 0 elsewhere.

    At Q = 1 it diverges like x^(−1/2) at 0 (integrable).

    Parameters
    ----------
    x : array_like
        Points (eigenvalues of X = WᵀW/N).
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma2 : float, default 1.0
        Entry variance σ² (bulk scale).

    Returns
    -------
    numpy.ndarray
        Density at ``x`` (float64).
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = edges(Q, sigma2)
    inside = (x > lo) & (x < hi) & (x > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        val = Q / (2 * np.pi * sigma2 * x) * np.sqrt((hi - x) * (x - lo))
    return np.where(inside, val, 0.0)


def cdf(x: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """MP cumulative distribution function, closed form.

    With y = 1/Q, m = 1 + y, r = 2√y and x/σ² = m + r·sin θ,
    F = [mθ + r cos θ − 2(1−y)·arctan((m·tan(θ/2) + r)/(1−y)) − I(−π/2)]/(2πy),
    the antiderivative of √((λ₊−t)(t−λ₋))/(2πyt) (the arctan term vanishes at y = 1).

    Parameters
    ----------
    x : array_like
        Points.
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma2 : float, default 1.0
        Entry variance σ² (bulk scale).

    Returns
    -------
    numpy.ndarray
        F(x) in [0, 1] (float64, exact to round-off).
    """
    Q = _check_q(Q)
    x = np.asarray(x, dtype=np.float64) / sigma2
    y = 1.0 / Q
    m, r = 1.0 + y, 2.0 * np.sqrt(y)
    theta = np.arcsin(np.clip((x - m) / r, -1.0, 1.0))

    def antiderivative(t: np.ndarray) -> np.ndarray:
        if y == 1.0:
            return m * t + r * np.cos(t)
        return m * t + r * np.cos(t) - 2.0 * (1.0 - y) * np.arctan(
            (m * np.tan(t / 2.0) + r) / (1.0 - y))

    F = (antiderivative(theta) - antiderivative(np.array(-np.pi / 2))) / (2.0 * np.pi * y)
    return np.clip(F, 0.0, 1.0)


def spike_threshold(sigma2: float, N: int, M: int, fpr: float = 0.01) -> float:
    """Largest eigenvalue a pure-noise X = WᵀW/N exceeds with probability ``fpr``.

    σ²(μ + q·s)/N with Johnstone's μ, s for (N, M) and q the TW₁ quantile at 1 − fpr.

    Parameters
    ----------
    sigma2 : float
        Entry variance of the bulk.
    N, M : int
        Shape of the oriented W (N ≥ M).
    fpr : float, default 0.01
        False-positive rate for a pure-noise matrix.

    Returns
    -------
    float
        The threshold, in units of X = WᵀW/N.
    """
    mu, s = johnstone(N, M)
    return sigma2 * (mu + tw1_ppf(1.0 - fpr) * s) / N


def tw_z(lam: float, sigma2: float, N: int, M: int) -> float:
    """Tracy–Widom z-score (λ·N/σ² − μ)/s of an eigenvalue of X = WᵀW/N.

    Parameters
    ----------
    lam : float
        Eigenvalue of X = WᵀW/N.
    sigma2 : float
        Entry variance of the bulk.
    N, M : int
        Shape of the oriented W.

    Returns
    -------
    float
    """
    mu, s = johnstone(N, M)
    return float((lam * N / sigma2 - mu) / s)


def bbp_location(theta: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """Outlier location of an additive spike W = σG + θσ√N·u vᵀ: σ²(1+θ²)(1/Q+θ²)/θ².

    Valid above the BBP threshold θ_c = Q^(−1/4); below it the outlier sticks to λ₊.

    Parameters
    ----------
    theta : array_like
        Spike strengths θ.
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma2 : float, default 1.0
        Entry variance σ² (bulk scale).

    Returns
    -------
    numpy.ndarray
        Outlier eigenvalues (λ₊ for θ ≤ θ_c).
    """
    theta = np.asarray(theta, dtype=np.float64)
    Q = _check_q(Q)
    t2 = theta**2
    lam = sigma2 * (1.0 + t2) * (1.0 / Q + t2) / t2
    return np.where(theta > Q**-0.25, lam, edges(Q, sigma2)[1])


def bbp_inverse(lam: Any, Q: float, sigma2: float = 1.0) -> np.ndarray:
    """Spike strength θ̂ whose BBP location is λ (θ_c = Q^(−1/4) for λ ≤ λ₊).

    Solves u² + (1 + 1/Q − λ/σ²)u + 1/Q = 0 for u = θ² (larger root).

    Parameters
    ----------
    lam : array_like
        Outlier eigenvalues.
    Q : float
        Aspect ratio N/M ≥ 1.
    sigma2 : float, default 1.0
        Entry variance σ² (bulk scale).

    Returns
    -------
    numpy.ndarray
        θ̂ (θ_c for eigenvalues at or inside the bulk).
    """
    Q = _check_q(Q)
    lam = np.asarray(lam, dtype=np.float64) / sigma2
    b = lam - 1.0 - 1.0 / Q
    disc = b * b - 4.0 / Q
    u = np.where(disc > 0, (b + np.sqrt(np.maximum(disc, 0.0))) / 2.0, 1.0 / np.sqrt(Q))
    return np.sqrt(np.maximum(u, 1.0 / np.sqrt(Q)))


@dataclass(frozen=True, eq=False)
class MPFit:
    """Marchenko–Pastur fit of an ESD with Tracy–Widom spikes.

    Attributes
    ----------
    sigma2 : float
        Entry variance σ² of the bulk (units of the input eigenvalues × N/N: with
        ``normalized=False`` input it is reported in those units, i.e. N·σ²).
    lambda_minus, lambda_plus : float
        Bulk edges σ²(1 ∓ 1/√Q)².
    Q : float
        N/M.
    N, M : int
        Matrix shape (N ≥ M).
    n_spikes : int
        Eigenvalues above the TW threshold at false-positive rate ``fpr``.
    spikes : numpy.ndarray
        Those eigenvalues, descending.
    theta : numpy.ndarray
        BBP-inverted spike strengths θ̂ (additive model), one per spike.
    theta_c : float
        BBP threshold Q^(−1/4).
    tw_z : float
        TW z-score of λmax against the fitted bulk.
    threshold : float
        The spike threshold σ²(μ + q·s)/N.
    D : float
        Two-sided KS distance of the non-spike eigenvalues to MP(σ², Q).
    mp_softrank : float
        λ₊/λmax (Martin & Mahoney's MP soft rank).
    fpr : float
        False-positive rate of the spike test.
    iterations : int
        Trimmed-trace iterations until the spike set stopped changing.
    warning : str
        Empty, or what to be careful about.
    evals : numpy.ndarray
        The fitted eigenvalues, ascending, in the input's units.
    """

    sigma2: float
    lambda_minus: float
    lambda_plus: float
    Q: float
    N: int
    M: int
    n_spikes: int
    spikes: np.ndarray
    theta: np.ndarray
    theta_c: float
    tw_z: float
    threshold: float
    D: float
    mp_softrank: float
    fpr: float
    iterations: int
    warning: str
    evals: np.ndarray = field(repr=False)

    @property
    def num_spikes(self) -> int:
        """Alias of ``n_spikes`` (WeightWatcher's column name)."""
        return self.n_spikes

    def to_dict(self) -> dict[str, Any]:
        """Scalar fields as a dict.

        Returns
        -------
        dict
        """
        return {k: getattr(self, k) for k in (
            "sigma2", "lambda_minus", "lambda_plus", "Q", "N", "M", "n_spikes", "theta_c",
            "tw_z", "threshold", "D", "mp_softrank", "fpr", "iterations", "warning")}

    def plot(self, ax: Any = None, bins: int = 100, **kwargs: Any) -> Any:
        """Histogram of the ESD with the fitted MP density, edges and spikes marked.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; default a new figure.
        bins : int, default 100
            Histogram bins.
        **kwargs
            Passed to the histogram.

        Returns
        -------
        matplotlib.axes.Axes
        """
        from rmt.plot import plot_mp_fit

        return plot_mp_fit(self, ax=ax, bins=bins, **kwargs)


def _ks_to_mp(bulk: np.ndarray, Q: float, sigma2: float) -> float:
    n = bulk.size
    if n == 0:
        return float("nan")
    F = cdf(bulk, Q, sigma2)
    i = np.arange(n)
    return float(max(np.max(F - i / n), np.max((i + 1) / n - F)))


def fit_mp(
    ev: Any,
    *,
    N: int,
    M: int | None = None,
    fpr: float = 0.01,
    normalized: bool = True,
    max_iter: int = 100,
) -> MPFit:
    """Fit the Marchenko–Pastur law to an ESD and find spikes by Tracy–Widom.

    σ² by iterative trimmed trace: start from the mean eigenvalue; mark as spikes the
    eigenvalues above σ²(μ + q·s)/N (Johnstone's centering and scaling, q the TW₁
    quantile at 1 − ``fpr``); set σ² to the mean of the rest; repeat until the spike set
    stops changing. The relative SD of σ² is ≈ √(2/(NM)).

    Parameters
    ----------
    ev : array_like
        Eigenvalues of X = WᵀW/N (``rmt.esd(W)``), or of WᵀW with ``normalized=False``.
    N : int
        Rows of the oriented W (N ≥ M).
    M : int, optional
        Columns; default ``len(ev)``.
    fpr : float, default 0.01
        False-positive rate of the spike test for a pure-noise matrix.
    normalized : bool, default True
        Whether ``ev`` carries the 1/N. With ``False`` (WeightWatcher's eigenvalues) the
        eigenvalues are divided by N for the fit and σ², λ±, spikes and the threshold are
        reported back in the input's units. Nothing is guessed from the data.
    max_iter : int, default 100
        Iteration cap of the trimmed-trace loop.

    Returns
    -------
    MPFit

    Raises
    ------
    rmt.errors.DataError
        Empty input or NaN/Inf.
    """
    ev = np.sort(np.asarray(ev, dtype=np.float64).ravel())
    if ev.size == 0:
        raise DataError("fit_mp got no eigenvalues")
    if not np.all(np.isfinite(ev)):
        raise DataError("fit_mp got NaN/Inf eigenvalues")
    M = ev.size if M is None else int(M)
    N = int(N)
    if N < M or M < 1 or N < 2:
        raise ValueError(f"need N >= M >= 1 and N >= 2 (orient W so that N >= M), got N={N}, M={M}")
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    unit = 1.0 if normalized else float(N)
    lam = ev / unit
    Q = N / M
    warnings: list[str] = []
    # lam is sorted, so "the mean of the eigenvalues below the threshold" is a prefix sum:
    # each iteration is a binary search, O(log M), instead of a pass over the ESD.
    prefix = np.concatenate([[0.0], np.cumsum(lam)])
    mu_tw, s_tw = johnstone(N, M)
    q = tw1_ppf(1.0 - fpr)
    sigma2 = float(prefix[-1] / lam.size)
    n_bulk = lam.size  # the starting set: no spikes
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        if sigma2 <= 0:
            break
        below = int(np.searchsorted(lam, sigma2 * (mu_tw + q * s_tw) / N, side="right"))
        if below == 0:
            break
        sigma2 = float(prefix[below] / below)
        if below == n_bulk:
            break
        n_bulk = below
    else:
        warnings.append(f"trimmed-trace loop did not settle in {max_iter} iterations")
    if sigma2 <= 0:
        warnings.append("sigma2 <= 0 (collapsed spectrum); MP fit is meaningless")
        sigma2 = float(np.finfo(np.float64).tiny)
    threshold = spike_threshold(sigma2, N, M, fpr)
    spikes_mask = lam > threshold
    if spikes_mask.all():
        warnings.append("every eigenvalue lies above the TW threshold")
    spikes = lam[spikes_mask][::-1]
    lo, hi = edges(Q, sigma2)
    lam_max = float(lam[-1])
    return MPFit(
        sigma2=sigma2 * unit,
        lambda_minus=lo * unit,
        lambda_plus=hi * unit,
        Q=Q,
        N=N,
        M=M,
        n_spikes=int(spikes.size),
        spikes=spikes * unit,
        theta=bbp_inverse(spikes, Q, sigma2),
        theta_c=float(Q**-0.25),
        tw_z=tw_z(lam_max, sigma2, N, M),
        threshold=threshold * unit,
        D=_ks_to_mp(lam[~spikes_mask], Q, sigma2),
        mp_softrank=hi / lam_max if lam_max > 0 else float("nan"),
        fpr=fpr,
        iterations=iterations,
        warning="; ".join(warnings),
        evals=ev,
    )

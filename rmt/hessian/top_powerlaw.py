"""The power law of a Hessian's top eigenvalues: λ_k ∝ k^(−s) (Tang et al., ICML 2025).

Xie, Tang et al. (2022) and Tang et al. (ICML 2025) report that the top eigenvalues of a
well-trained network's Hessian, ordered by rank, fall on a line in log-log axes,
λ_k = λ_1 k^(−s), and that the slope magnitude s tracks sharpness and generalisation;
the fit's Kolmogorov–Smirnov distance says whether the law holds (it does not at
initialisation). Two estimates of s, both reported:

- **by maximum likelihood** (the default ``s``): if the ranks follow k^(−s), the top
  eigenvalues are a sample from the density p(λ) ∝ λ^(−α) above the smallest of them,
  with α = 1 + 1/s. ``rmt.fit_powerlaw`` (the CSN estimator, equal to the ``powerlaw``
  package) gives α̂, its standard error and the KS distance D; s = 1/(α̂ − 1), its
  standard error by the delta method. ``xmin="all"`` fits all k eigenvalues (the papers'
  setting); ``xmin="ks"`` lets CSN choose the tail inside them.
- **by least squares** on the rank plot (``s_lsq``), log λ_k = log λ_1 − s log k over
  k = 1..K — the papers' own fit, given for comparison. It weighs the many small-rank
  points near the cut-off like the few large ones and its residuals are correlated, so
  its error bar is not meaningful; the MLE has the stated one.

References
----------
Z. Xie, Q.-Y. Tang, Y. Cai, M. Sun and P. Li, "On the power-law Hessian spectrums in
deep learning", arXiv:2201.13011 (2022).
Q.-Y. Tang, Y. Gu, Y. Cai, M. Sun, P. Li, X. Zhou and Z. Xie, "Investigating the
overlooked Hessian structure: from CNNs to LLMs", ICML 2025.
A. Clauset, C. R. Shalizi and M. E. J. Newman, SIAM Review 51(4), 661–703 (2009).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rmt.heavytail import PowerLawFit, fit_powerlaw

__all__ = ["TopPowerLaw", "top_powerlaw"]


@dataclass(frozen=True)
class TopPowerLaw:
    """The rank power law λ_k ≈ λ_1 k^(−s) of the top eigenvalues.

    Attributes
    ----------
    s : float
        Slope magnitude from the maximum-likelihood α: 1/(α − 1).
    s_sigma : float
        Its standard error, σ_α/(α − 1)².
    alpha : float
        Exponent of the density p(λ) ∝ λ^(−α) of the top eigenvalues (α = 1 + 1/s).
    D : float
        KS distance between the fitted eigenvalues and the law (the papers' d_KS).
    s_lsq : float
        Least-squares slope magnitude of log λ_k on log k (the papers' fit).
    lambda1_lsq : float
        Its intercept, the fitted λ_1.
    r2_lsq : float
        R² of that regression on the log-log axes.
    eigenvalues : numpy.ndarray
        The positive top eigenvalues used, descending (float64).
    n_dropped : int
        Top eigenvalues that were not positive (not part of any power law) and left out.
    fit : PowerLawFit
        The power-law fit itself (xmin, n_tail, warning, ...).
    """

    s: float
    s_sigma: float
    alpha: float
    D: float
    s_lsq: float
    lambda1_lsq: float
    r2_lsq: float
    eigenvalues: np.ndarray
    n_dropped: int
    fit: PowerLawFit


def top_powerlaw(source: Any, k: int | None = None, *, xmin: Literal["all", "ks"] = "all",
                 tol: float = 1e-8, rng: Any = None) -> TopPowerLaw:
    """Fit λ_k ∝ k^(−s) to the top eigenvalues of an operator or of given eigenvalues.

    Parameters
    ----------
    source : LinearOperator, 2-D array or 1-D array_like
        A symmetric operator or matrix (its top ``k`` eigenvalues come from
        :func:`rmt.hessian.extreme_eigs`), or eigenvalues (the largest ``k`` are used).
    k : int, optional
        How many top eigenvalues; required for an operator, default all given values.
    xmin : {"all", "ks"}, default "all"
        Fit all k (the papers' setting) or let the KS scan choose the tail among them.
    tol : float, default 1e-8
        Relative accuracy of the eigenvalues of an operator.
    rng : None, int or numpy.random.Generator
        Starting vector of the eigensolver.

    Returns
    -------
    TopPowerLaw

    Raises
    ------
    ValueError
        No ``k`` for an operator, a bad ``k`` or ``xmin``, or fewer than 3 positive top
        eigenvalues.
    """
    from rmt.hessian.extreme import extreme_eigs

    if xmin not in ("all", "ks"):
        raise ValueError(f"xmin must be 'all' or 'ks', got {xmin!r}")
    if hasattr(source, "matvec") or np.ndim(source) == 2:  # an operator or a dense matrix
        if k is None:
            raise ValueError("k (how many top eigenvalues) is required for an operator")
        values = np.asarray(extreme_eigs(source, k=int(k), which="LA", tol=tol, rng=rng))
    else:
        values = np.asarray(source, dtype=np.float64).ravel()
        if not np.all(np.isfinite(values)):
            raise ValueError("eigenvalues must be finite")
    if k is not None and not 1 <= int(k) <= values.size:
        raise ValueError(f"k must be in [1, {values.size}], got {k!r}")
    top = np.sort(values)[::-1][: values.size if k is None else int(k)]
    positive = top[top > 0]
    if positive.size < 3:
        raise ValueError(f"{positive.size} of the top {top.size} eigenvalues are positive: "
                         "a power law needs at least 3")
    fit = fit_powerlaw(positive, xmin=float(positive[-1]) if xmin == "all" else None)
    alpha = float(fit.alpha)
    s = 1.0 / (alpha - 1.0)
    ranks = np.log(np.arange(1, positive.size + 1))
    logs = np.log(positive)
    slope, intercept = np.polyfit(ranks, logs, 1)
    residual = logs - (slope * ranks + intercept)
    r2 = 1.0 - float(residual @ residual) / float(((logs - logs.mean()) ** 2).sum())
    return TopPowerLaw(s=s, s_sigma=float(fit.sigma) / (alpha - 1.0) ** 2, alpha=alpha,
                       D=float(fit.D), s_lsq=float(-slope), lambda1_lsq=float(np.exp(intercept)),
                       r2_lsq=r2, eigenvalues=positive, n_dropped=int(top.size - positive.size),
                       fit=fit)

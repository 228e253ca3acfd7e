"""Stochastic trace estimation of a symmetric operator: XTrace and Hutch++."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from rmt.hessian.operators import CountingOperator
from rmt.hessian.sketch import sketch

__all__ = ["trace"]


def _columnwise(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """diag(AᵀB): the column-by-column inner products."""
    return np.einsum("ij,ij->j", A, B)


def _xtrace(op: CountingOperator, budget: int, rng: np.random.Generator) -> float:
    n, m = op.shape[0], budget // 2
    omega = rng.standard_normal((n, m))
    omega *= np.sqrt(n) / np.linalg.norm(omega, axis=0)  # uniform on the √n-sphere
    sk = sketch(op.matmat, omega)
    Q, R, S, Z = sk.Q, sk.R, sk.S, sk.Z
    W = Q.T @ omega
    # the Hutchinson terms use ω_i projected off Q_(i), rescaled to the complement's
    # dimension n − m + 1 (the "improved" normalisation: exact on rank ≤ m − 1 parts)
    dSW = _columnwise(S, W)
    residual = n - np.sum(W * W, axis=0) + dSW**2
    scale = np.sqrt((n - m + 1) / np.maximum(residual, np.finfo(np.float64).tiny))
    omega, W, R, Y = omega * scale, W * scale, R * scale, sk.Y * scale
    dSW = dSW * scale
    H = Q.T @ Z
    HW, T = H @ W, Z.T @ omega
    dSHS = _columnwise(S, H @ S)
    estimates = (np.trace(H) - dSHS + _columnwise(omega, Y) - _columnwise(W, R)
                 - _columnwise(T, W) + _columnwise(W, HW) + dSW * _columnwise(S, R - HW)
                 + dSW**2 * dSHS + _columnwise(T - H.T @ W, S) * dSW)
    return float(np.mean(estimates))


def _hutchpp(op: CountingOperator, budget: int, rng: np.random.Generator) -> float:
    n = op.shape[0]
    m = budget // 3
    probes = budget - 2 * m
    S = rng.choice([-1.0, 1.0], size=(n, m))
    G = rng.choice([-1.0, 1.0], size=(n, probes))
    Q, _ = np.linalg.qr(op.matmat(S))
    t_top = np.trace(Q.T @ op.matmat(Q))
    G_perp = G - Q @ (Q.T @ G)
    t_rest = np.trace(G_perp.T @ op.matmat(G_perp)) / probes
    return float(t_top + t_rest)


def trace(op: Any, n_matvecs: int = 100, *, method: Literal["xtrace", "hutch++"] = "xtrace",
          rng: Any = None) -> float:
    """Stochastic estimate of the trace from exactly ``n_matvecs`` products.

    ``"xtrace"`` (Epperly, Tropp & Webber): m = b/2 probes sketch the range, and each
    probe's estimate is the exact trace on the *other* probes' sketch plus its own
    Hutchinson term off it, averaged over the m probes — every product serves both the
    low-rank part and the correction (:mod:`rmt.hessian.sketch`). ``"hutch++"`` (Meyer
    et al.): ⌊b/3⌋ products sketch, as many more give the sketch's trace, the rest are
    Rademacher probes off it. Both have variance falling as 1/b² on matrices with decaying
    spectra, against Hutchinson's 1/b; XTrace's constant is the smaller.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    n_matvecs : int, default 100
        Products to spend: even and at least 2 for XTrace (it spends them in pairs), at
        least 3 for Hutch++; at or above n the trace is computed exactly from n products.
    method : {"xtrace", "hutch++"}, default "xtrace"
        The estimator.
    rng : int or numpy.random.Generator, optional
        Seed of the probes.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        An unknown method, or a budget the method cannot spend exactly (odd or below 2
        for XTrace, below 3 for Hutch++), below n.

    References
    ----------
    E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: making the most of every sample
    in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45 (2024).
    R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++: optimal stochastic
    trace estimation", SOSA 2021.
    """
    if method not in ("xtrace", "hutch++"):
        raise ValueError(f"method must be 'xtrace' or 'hutch++', got {method!r}")
    op = CountingOperator(op)
    n = op.shape[0]
    if n_matvecs >= n:  # cheaper to be exact
        eye = np.eye(n)
        return float(sum(np.asarray(op.matvec(eye[:, j])).ravel()[j] for j in range(n)))
    budget = int(n_matvecs)
    if method == "hutch++" and budget < 3:
        raise ValueError(f"Hutch++ needs at least 3 products (a sketch, its image and a "
                         f"probe), got n_matvecs={n_matvecs}")
    if method == "xtrace" and (budget < 2 or budget % 2):
        raise ValueError(f"XTrace spends products in pairs (Ω and Q): n_matvecs must be even "
                         f"and at least 2, got {n_matvecs} (or use method='hutch++')")
    rng = np.random.default_rng(rng)
    return _xtrace(op, budget, rng) if method == "xtrace" else _hutchpp(op, budget, rng)

"""Slow, obviously-correct reference implementations for the tests.

Everything here upcasts to float64 and uses LAPACK through ``numpy.linalg``; none of
it shares code with :mod:`rmt`.
"""

from __future__ import annotations

import numpy as np


def matrices(W: np.ndarray, conv: str = "slices") -> list[np.ndarray]:
    """The float64 matrices a weight is read as (before orientation)."""
    W = np.asarray(W).astype(np.float64)
    if W.ndim == 2:
        return [W]
    if conv == "flatten":
        return [W.reshape(W.shape[0], -1)]
    k = int(np.prod(W.shape[2:]))
    flat = W.reshape(W.shape[0], W.shape[1], k)
    return [flat[:, :, i] for i in range(k)]


def esd_svd(W: np.ndarray, normalize: bool = True, conv: str = "slices") -> np.ndarray:
    """ESD from float64 singular values: ν²/N per oriented matrix, pooled, ascending."""
    out = []
    for A in matrices(W, conv):
        s = np.linalg.svd(A, compute_uv=False)
        n = max(A.shape)
        out.append(s**2 / n if normalize else s**2)
    return np.sort(np.concatenate(out))


def eig_tolerance(N: int, M: int, lam_max: float, eps: float = np.finfo(np.float64).eps) -> float:
    """Expected absolute eigenvalue error of a Gram + symmetric-eigensolver ESD.

    Backward stability of syrk (error ∝ √N·eps per entry, random rounding) and of the
    eigensolver (∝ M·eps·‖G‖) gives |Δλ| ≲ c·(√N + M)·eps·λmax; c = 4 covers the
    reference's own SVD error as well.
    """
    return 4.0 * (np.sqrt(N) + M) * eps * lam_max


def entropy(ev: np.ndarray, rank: int) -> float:
    """Matrix entropy −Σ p ln p / ln R straight from the definition."""
    p = ev[ev > 0] / ev[ev > 0].sum()
    return float(-(p * np.log(p)).sum() / np.log(rank))

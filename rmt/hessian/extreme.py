"""Extreme eigenvalues, the index and the trace of a symmetric operator."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from rmt.hessian.operators import CountingOperator, as_operator, to_dense

__all__ = ["extreme_eigs", "index", "trace"]


def extreme_eigs(op: Any, k: int = 1, which: Literal["LA", "SA"] = "LA", *, tol: float = 1e-8,
                 rng: Any = None, maxiter: int | None = None) -> np.ndarray:
    """The ``k`` largest (``"LA"``) or smallest (``"SA"``) eigenvalues, ascending.

    Implicitly restarted Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh``), started
    from a seeded random vector; each returned eigenvalue has a residual below
    ``tol``·‖A‖, so it agrees with a dense ``eigvalsh`` to about that tolerance. Small
    operators (n ≤ 2k + 1) are diagonalised densely.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    k : int, default 1
        How many.
    which : {"LA", "SA"}
        Largest or smallest algebraic.
    tol : float, default 1e-8
        Relative accuracy.
    rng : None, int or numpy.random.Generator
        Starting vector.
    maxiter : int, optional
        Restart limit (ARPACK default: 10·n).

    Returns
    -------
    numpy.ndarray of float64, shape (k,)
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    op = as_operator(op)
    n = op.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got {k}")
    if n <= 2 * k + 1:
        ev = scipy.linalg.eigvalsh(to_dense(op))
        return ev[-k:] if which == "LA" else ev[:k]
    v0 = np.random.default_rng(rng).standard_normal(n)
    lop = spla.LinearOperator(op.shape, matvec=lambda x: np.asarray(op.matvec(x)).ravel(),
                              dtype=np.float64)
    ev = spla.eigsh(lop, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter,
                    return_eigenvectors=False)
    return np.sort(ev)


def index(op: Any, method: Literal["exact", "slq"] = "exact", *, zero_tol: float | None = None,
          **slq_options: Any) -> float:
    """Fraction of negative eigenvalues of a symmetric operator (the Morse index / n).

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    method : {"exact", "slq"}
        ``"exact"``: build the matrix (n matvecs) and count eigenvalues below
        −``zero_tol`` (default n·eps·‖A‖, so round-off around exact zeros — the flat
        directions of an over-parametrised model — does not count as negative).
        ``"slq"``: :meth:`SpectralDensity.negative_fraction` of :func:`rmt.hessian.slq`
        (keyword options passed on).

    Returns
    -------
    float
    """
    op = as_operator(op)
    if method == "slq":
        from rmt.hessian.slq import slq

        return slq(op, **slq_options).negative_fraction()
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'slq', got {method!r}")
    A = to_dense(op)
    ev = scipy.linalg.eigvalsh((A + A.T) / 2)
    tol = zero_tol if zero_tol is not None else A.shape[0] * np.finfo(float).eps * np.abs(ev).max()
    return float(np.mean(ev < -tol))


def trace(op: Any, n_matvecs: int = 99, *, rng: Any = None) -> float:
    """Hutch++ estimate of the trace from ``n_matvecs`` products.

    A third of the budget finds the dominant subspace (sketch A·S, QR), whose trace is
    exact; the rest estimates the remainder with Rademacher probes projected off it.
    Variance falls as 1/m² instead of Hutchinson's 1/m for matrices with decaying spectra.

    References
    ----------
    R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++: optimal stochastic
    trace estimation", SOSA 2021.
    """
    op = CountingOperator(op)
    n = op.shape[0]
    if n_matvecs >= n:  # cheaper to be exact
        eye = np.eye(n)
        return float(sum(np.asarray(op.matvec(eye[:, j])).ravel()[j] for j in range(n)))
    rng = np.random.default_rng(rng)
    m = max(3, int(n_matvecs)) // 3
    S = rng.choice([-1.0, 1.0], size=(n, m))
    G = rng.choice([-1.0, 1.0], size=(n, m))
    Q, _ = np.linalg.qr(op.matmat(S))
    t_top = np.trace(Q.T @ op.matmat(Q))
    G_perp = G - Q @ (Q.T @ G)
    t_rest = np.trace(G_perp.T @ op.matmat(G_perp)) / m
    return float(t_top + t_rest)

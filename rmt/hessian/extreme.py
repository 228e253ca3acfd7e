"""Extreme eigenvalues and the index (share of negative eigenvalues) of a symmetric operator."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from rmt import config
from rmt.hessian.operators import as_operator, to_dense

__all__ = ["extreme_eigs", "index", "negative_fraction"]


def extreme_eigs(op: Any, k: int = 1, which: Literal["LA", "SA"] = "LA", *, tol: float = 1e-8,
                 rng: Any = None, maxiter: int | None = None,
                 return_vectors: bool = False) -> Any:
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
    return_vectors : bool, default False
        Also return the unit eigenvectors (as PyHessian and hessian-eigenthings do).

    Returns
    -------
    numpy.ndarray of float64, shape (k,)
        The eigenvalues, ascending; with ``return_vectors``, the pair ``(eigenvalues,
        vectors)``, ``vectors[:, i]`` the unit eigenvector of ``eigenvalues[i]`` (n × k,
        float64; each residual ‖Av − λv‖ ≤ ~``tol``·‖A‖, sign arbitrary).
    """
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' or 'SA', got {which!r}")
    op = as_operator(op)
    n = op.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, n - 1] = [1, {n - 1}], got {k}")
    if n <= 2 * k + 1:
        A = to_dense(op)
        ev, V = scipy.linalg.eigh((A + A.T) / 2)
        part = slice(n - k, n) if which == "LA" else slice(0, k)
        return (ev[part], V[:, part]) if return_vectors else ev[part]
    v0 = np.random.default_rng(rng).standard_normal(n)
    lop = spla.LinearOperator(op.shape, matvec=lambda x: np.asarray(op.matvec(x)).ravel(),
                              dtype=np.float64)
    if not return_vectors:
        ev = spla.eigsh(lop, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter,
                        return_eigenvectors=False)
        return np.sort(ev)
    ev, V = spla.eigsh(lop, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter)
    order = np.argsort(ev)
    return ev[order], V[:, order]


def index(op: Any, method: Literal["exact", "slq"] = "exact", *, zero_tol: float | None = None,
          **slq_options: Any) -> float:
    """Fraction of negative eigenvalues of a symmetric operator (the Morse index / n).

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    method : {"exact", "slq"}
        ``"exact"``: build the matrix (n matvecs) and count eigenvalues below
        −``zero_tol`` (default :func:`negative_fraction`'s n·eps·‖A‖, so round-off
        around exact zeros — the flat directions of an over-parametrised model — does
        not count as negative).
        ``"slq"``: :meth:`SpectralDensity.negative_fraction` of :func:`rmt.hessian.slq`
        (keyword options passed on).
    zero_tol : float, optional
        Absolute tolerance of the exact count.
    **slq_options
        Passed to :func:`rmt.hessian.slq` with ``method="slq"``.

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
    return negative_fraction(scipy.linalg.eigvalsh((A + A.T) / 2), zero_tol=zero_tol)


def negative_fraction(ev: Any, *, zero_tol: float | None = None,
                      rel_tol: float | None = None) -> float:
    """Share of eigenvalues below −tol: the index of a spectrum computed in float64.

    Parameters
    ----------
    ev : array_like
        Eigenvalues (any order).
    zero_tol : float, optional
        Absolute tolerance.
    rel_tol : float, optional
        Relative tolerance: tol = ``rel_tol``·max|λ| (for Hessians at points an optimiser
        found, whose residual gradient leaves noise on the flat directions; the energy
        experiment uses :data:`rmt.config.INDEX_REL_TOL`).
        With neither: tol = ``rmt.config.INDEX_EPS_FACTOR``·n·eps·max|λ|, the round-off
        of a dense symmetric eigensolve.

    Returns
    -------
    float
        Fraction in [0, 1].
    """
    ev = np.asarray(ev, dtype=np.float64).ravel()
    if ev.size == 0:
        raise ValueError("negative_fraction got no eigenvalues")
    if zero_tol is not None and rel_tol is not None:
        raise ValueError("give zero_tol or rel_tol, not both")
    scale = float(np.abs(ev).max())
    if zero_tol is not None:
        tol = float(zero_tol)
    elif rel_tol is not None:
        tol = float(rel_tol) * scale
    else:
        tol = config.INDEX_EPS_FACTOR * ev.size * float(np.finfo(np.float64).eps) * scale
    return float(np.mean(ev < -tol))

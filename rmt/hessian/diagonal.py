"""The diagonal of a symmetric operator from products: XDiag, Hutchinson, or exact.

For a curvature matrix the diagonal is what diagonal preconditioners (Adam-type,
AdaHessian, Sophia) and saliency-based pruning (OBD) read. ``"xdiag"`` (Epperly, Tropp &
Webber 2024) is exact on the part of A its sketch captures and corrects the rest with a
Hutchinson term from the same probes; ``"hutchinson"`` is diag ≈ mean of z ⊙ Az over
Rademacher z (Bekas, Kokiopoulou & Saad 2007); ``"exact"`` spends n products on the unit
vectors. For a torch model, :mod:`rmt.hessian.torch_diagonal` gives the Gauss–Newton
and Fisher diagonals exactly by per-example back-propagation, where that is cheap.

References
----------
E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: making the most of every sample in
stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45 (2024).
C. Bekas, E. Kokiopoulou and Y. Saad, "An estimator for the diagonal of a matrix", Appl.
Numer. Math. 57 (2007).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from rmt.hessian.operators import CountingOperator
from rmt.hessian.sketch import sketch

__all__ = ["diagonal"]


def _rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """diag(ABᵀ): the row-by-row inner products."""
    return np.einsum("ij,ij->i", A, B)


def _xdiag(op: CountingOperator, budget: int, rng: np.random.Generator) -> np.ndarray:
    n, m = op.shape[0], budget // 2
    omega = rng.choice([-1.0, 1.0], size=(n, m))
    sk = sketch(op.matmat, omega)
    Q, S, Z, Y = sk.Q, sk.S, sk.Z, sk.Y
    T = Z.T @ omega
    QS = Q @ S
    low_rank = _rows(Q, Z) - _rows(QS, Z @ S) / m  # mean_i diag(Q_(i) Q_(i)ᵀ A)
    # mean_i ω_i ⊙ (I − Q_(i)Q_(i)ᵀ) A ω_i, with Q_(i)Q_(i)ᵀ = QQᵀ − Q s_i s_iᵀ Qᵀ
    correction = _rows(omega, Y) - _rows(omega, Q @ T) + _rows(omega, QS * np.sum(S * T, 0))
    return low_rank + correction / m


def diagonal(op: Any, n_matvecs: int | None = None, *,
             method: Literal["xdiag", "hutchinson", "exact"] = "xdiag",
             rng: Any = None) -> np.ndarray:
    """Estimate of diag(A) from exactly ``n_matvecs`` products.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    n_matvecs : int, optional
        Products to spend: even and at least 2 for XDiag (it spends them in pairs), at
        least 1 for Hutchinson; at or above n (and for ``"exact"``, or None) the diagonal
        is computed exactly from n products.
    method : {"xdiag", "hutchinson", "exact"}, default "xdiag"
        The estimator.
    rng : int or numpy.random.Generator, optional
        Seed of the Rademacher probes.

    Returns
    -------
    numpy.ndarray
        n, float64.

    Raises
    ------
    ValueError
        An unknown method, or a budget below n that the method cannot spend exactly.
    """
    if method not in ("xdiag", "hutchinson", "exact"):
        raise ValueError(f"method must be 'xdiag', 'hutchinson' or 'exact', got {method!r}")
    op = CountingOperator(op)
    n = op.shape[0]
    if method == "exact" or n_matvecs is None or n_matvecs >= n:
        eye = np.eye(n)
        return np.array([np.asarray(op.matvec(eye[:, j])).ravel()[j] for j in range(n)])
    budget = int(n_matvecs)
    if method == "xdiag" and (budget < 2 or budget % 2):
        raise ValueError(f"XDiag spends products in pairs (Ω and Q): n_matvecs must be even "
                         f"and at least 2, got {n_matvecs} (or use method='hutchinson')")
    if budget < 1:
        raise ValueError(f"n_matvecs must be at least 1, got {n_matvecs}")
    rng = np.random.default_rng(rng)
    if method == "xdiag":
        return _xdiag(op, budget, rng)
    probes = rng.choice([-1.0, 1.0], size=(n, budget))
    return _rows(probes, np.asarray(op.matmat(probes))) / budget

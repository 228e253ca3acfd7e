"""The Lanczos tridiagonalisation of a symmetric operator.

``orthogonalize="full"`` re-orthogonalises every new vector against all previous ones
(classical Gram–Schmidt, twice): without it, finite-precision Lanczos loses orthogonality
as soon as a Ritz value converges, and the converged extreme eigenvalues reappear as
"ghost" copies (docs/science.md §7: 6 copies of the top eigenvalue after 100 steps).
``"partial"`` is Simon's partial re-orthogonalisation: the loss of orthogonality is
estimated by the ω-recurrence in O(j) per step and the vector is re-orthogonalised only
when an estimate exceeds √eps (then also the next vector). ``"none"`` is the bare
three-term recurrence.

Vectors live in the array namespace of the operator's output: a CuPy operator keeps the
Lanczos basis on the GPU; only α and β come back to the host.

References
----------
C. Lanczos, J. Res. Nat. Bur. Standards 45, 255–282 (1950).
H. D. Simon, "The Lanczos algorithm with partial reorthogonalization", Math. Comp. 42
(165), 115–142 (1984).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rmt._device import array_namespace
from rmt.hessian.operators import as_operator

__all__ = ["LanczosResult", "lanczos"]

Orthogonalize = Literal["full", "partial", "none"]
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class LanczosResult:
    """Tridiagonal T = tridiag(beta, alpha, beta) of a Lanczos run.

    Attributes
    ----------
    alpha : numpy.ndarray, shape (k,)
        Diagonal.
    beta : numpy.ndarray, shape (k − 1,)
        Off-diagonal (0 where the recurrence broke down and restarted).
    basis : array or None, shape (k, n)
        The Lanczos vectors (rows), when requested.
    n_matvecs : int
        Operator applications used.
    n_reorthogonalized : int
        Steps that re-orthogonalised against the whole basis.
    beta_last : float
        ‖r_k‖, the norm of the residual left after the last step (the β that step k + 1
        would use; 0 when the Krylov space is invariant). With it T's moments fix the
        starting vector's spectral measure up to degree 2k, which the Gauss–Radau bounds
        of :meth:`rmt.hessian.SpectralDensity.index_bounds` use; it costs no product.
    """

    alpha: np.ndarray
    beta: np.ndarray
    basis: Any
    n_matvecs: int
    n_reorthogonalized: int
    beta_last: float = 0.0

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the squared first components of T's eigenvectors
        (the Gauss quadrature weights of the starting vector).

        Returns
        -------
        theta : numpy.ndarray
            Ritz values, ascending.
        weights : numpy.ndarray
            Quadrature weights (sum 1 for a unit starting vector).
        """
        from rmt.hessian.quadrature import gauss_rule

        return gauss_rule(self.alpha, self.beta)


def _orthogonalized(w: Any, basis: Any) -> Any:
    """``w`` with its components along the rows of ``basis`` removed: classical
    Gram–Schmidt twice ("twice is enough")."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _negligible(b: float, scale: float, n: int) -> bool:
    """An invariant subspace: β at rounding level *relative to the operator's norm*
    (``scale``, the running max ‖A q_j‖; an absolute test would call every step of a tiny
    operator a breakdown)."""
    return b <= scale * n * EPS * 10


def lanczos(
    op: Any,
    lanczos_degree: int,
    *,
    v0: Any = None,
    orthogonalize: Orthogonalize = "full",
    rng: Any = None,
    return_basis: bool = False,
) -> LanczosResult:
    """Run ``lanczos_degree`` steps of Lanczos on a symmetric operator.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric n×n operator.
    lanczos_degree : int
        Steps k (matrix-vector products); T is k×k, ``len(beta) == k − 1``.
    v0 : array, optional
        Starting vector (normalised here); default a Rademacher vector from ``rng``.
    orthogonalize : {"full", "partial", "none"}, default "full"
        Re-orthogonalisation scheme (module docstring).
    rng : None, int or numpy.random.Generator
        For the default start and for restarts after a breakdown.
    return_basis : bool, default False
        Keep and return the Lanczos vectors (needed anyway for full/partial).

    Returns
    -------
    LanczosResult
    """
    if orthogonalize not in ("full", "partial", "none"):
        raise ValueError("orthogonalize must be 'full', 'partial' or 'none', got "
                         f"{orthogonalize!r}")
    op = as_operator(op)
    n = op.shape[0]
    k = int(lanczos_degree)
    if not 1 <= k <= n:
        raise ValueError(f"lanczos_degree must be in [1, n={n}], got {lanczos_degree}")
    rng = np.random.default_rng(rng)
    if v0 is None:
        v0 = rng.choice([-1.0, 1.0], size=n)
    xp = array_namespace(v0)
    q = xp.asarray(v0, dtype=xp.float64).ravel()
    norm0 = float(xp.linalg.norm(q))
    if norm0 == 0 or not np.isfinite(norm0):
        raise ValueError("v0 must be a finite, non-zero vector")
    q = q / norm0
    keep = return_basis or orthogonalize != "none"
    Q: Any = xp.empty((k, n), dtype=xp.float64) if keep else None  # the basis, when kept
    alpha = np.empty(k)
    beta = np.zeros(max(k - 1, 0))
    q_prev = xp.zeros_like(q)
    b_prev = 0.0
    n_reorth = 0
    omega_prev = np.zeros(0)
    omega = np.ones(1)
    force_next = False
    b_last = 0.0
    anorm = 0.0
    scale = 0.0  # running estimate of ||A|| (max ||A q_j||): breakdown is relative to it
    for j in range(k):
        if keep:
            Q[j] = q
        w = xp.asarray(op.matvec(q), dtype=xp.float64).ravel()
        scale = max(scale, float(xp.linalg.norm(w)))
        w = w - b_prev * q_prev
        a = float(w @ q)
        alpha[j] = a
        w = w - a * q
        if j == k - 1:
            if orthogonalize == "full":
                w = _orthogonalized(w, Q[: j + 1])
            b_last = float(xp.linalg.norm(w))
            if _negligible(b_last, scale, n) or k == n:
                b_last = 0.0  # invariant (always so after n steps)
            break
        do_full = orthogonalize == "full"
        if orthogonalize == "partial" and j > 0:
            b_est = max(float(xp.linalg.norm(w)), EPS)
            anorm = max(anorm, abs(a) + b_est + b_prev)
            # ω-recurrence (Simon 1984): estimated q_{j+1}·q_i for i <= j
            omega_next = np.empty(j + 2)
            for i in range(j):
                b_i = beta[i]
                b_im1 = beta[i - 1] if i > 0 else 0.0
                term = (b_i * omega[i + 1] + (alpha[i] - a) * omega[i]
                        + b_im1 * (omega[i - 1] if i > 0 else 0.0)
                        - b_prev * (omega_prev[i] if i < omega_prev.size else 0.0))
                omega_next[i] = (term + np.copysign(EPS * anorm, term)) / b_est
            omega_next[j] = EPS * n * anorm / b_est
            omega_next[j + 1] = 1.0
            if force_next or np.max(np.abs(omega_next[: j + 1])) > np.sqrt(EPS):
                do_full = True
                force_next = not force_next
                omega_next[: j + 1] = EPS
            omega_prev, omega = omega, omega_next
        elif orthogonalize == "partial":
            omega_prev, omega = omega, np.array([EPS * n, 1.0])
        if do_full:
            w = _orthogonalized(w, Q[: j + 1])
            n_reorth += 1
        b = float(xp.linalg.norm(w))
        if _negligible(b, scale, n):
            # invariant subspace found: restart with a random vector orthogonal to the basis
            w = xp.asarray(rng.standard_normal(n))
            if keep:
                w = _orthogonalized(w, Q[: j + 1])
            b_next = 0.0
            w = w / xp.linalg.norm(w)
        else:
            b_next = b
            w = w / b
        beta[j] = b_next
        q_prev, q, b_prev = q, w, b_next
    basis_out = Q if return_basis else None
    return LanczosResult(alpha=alpha, beta=beta, basis=basis_out, n_matvecs=k,
                         n_reorthogonalized=n_reorth, beta_last=b_last)

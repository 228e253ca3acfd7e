"""The exchangeable sketch shared by XTrace and XDiag (Epperly, Tropp & Webber 2024).

Both estimators sketch the range of A with m probes Ω (Y = AΩ = QR) and, for each probe
ω_i, use the basis of the *other* m − 1 probes' images, Q_(i), so that ω_i is independent
of the low-rank part it corrects: estimate_i = low-rank part on Q_(i) + a Hutchinson term
of ω_i on the rest; the m estimates are averaged. Removing one column from an
orthonormal Q is a rank-one downdate: Q_(i)Q_(i)ᵀ = QQᵀ − q̃_i q̃_iᵀ with q̃_i = Q s_i and s_i
the i-th column of R⁻ᵀ normalised, so all m leave-one-out estimates cost one QR and two
blocks of m products (AΩ, AQ) in all.

Precision: float64 throughout; the downdate divides by R's columns, so an ill-conditioned
sketch (an operator of rank < m) loses accuracy in the correction terms — the estimates
stay unbiased, their variance is what suffers.

References
----------
E. N. Epperly, J. A. Tropp and R. J. Webber, "XTrace: making the most of every sample in
stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45 (2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

__all__ = ["Sketch", "sketch"]


@dataclass(frozen=True)
class Sketch:
    """A probe block and the quantities both estimators read from it.

    Attributes
    ----------
    omega : numpy.ndarray
        n × m probes Ω.
    Y : numpy.ndarray
        AΩ.
    Q, R : numpy.ndarray
        Y = QR (economic).
    Z : numpy.ndarray
        AQ.
    S : numpy.ndarray
        m × m, column i the unit vector s_i with Q s_i the direction that leaving probe i
        out removes from range(Q).
    """

    omega: np.ndarray
    Y: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    Z: np.ndarray
    S: np.ndarray


def sketch(matmat: object, omega: np.ndarray) -> Sketch:
    """Sketch a symmetric operator with the probes Ω (2m products).

    Parameters
    ----------
    matmat : callable
        X ↦ AX for an n × m block.
    omega : numpy.ndarray
        n × m probes.

    Returns
    -------
    Sketch
    """
    Y = np.asarray(matmat(omega), dtype=np.float64)  # type: ignore[operator]
    Q, R = np.linalg.qr(Y)
    Z = np.asarray(matmat(Q), dtype=np.float64)  # type: ignore[operator]
    # columns of R⁻ᵀ by a triangular solve; a rank-deficient sketch (an operator of rank
    # below m) has no inverse, and the pseudo-inverse's columns stand in
    diag = np.abs(np.diag(R))
    if diag.size and diag.min() > R.shape[0] * np.finfo(np.float64).eps * diag.max():
        inv_t = scipy.linalg.solve_triangular(R, np.eye(R.shape[0]), trans="T")
    else:
        inv_t = np.linalg.pinv(R).T
    norms = np.linalg.norm(inv_t, axis=0)
    S = inv_t / np.where(norms > 0, norms, 1.0)
    return Sketch(omega=omega, Y=Y, Q=Q, R=R, Z=Z, S=S)

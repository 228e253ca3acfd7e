"""Gauss and Gauss–Radau rules of a Lanczos tridiagonal, and the bounds they give on a CDF.

k Lanczos steps from a unit vector v, with the residual norm β_k of the last step, fix the
first 2k + 1 moments of v's spectral measure μ_v = Σ_i (u_iᵀv)² δ(λ_i). Every measure with
those moments has the same Gauss–Radau rule through a point ξ (T extended by one row so
that ξ is an eigenvalue, Golub & Meurant 2010, §6.2), and by the Chebyshev–Markov–Stieltjes
inequalities its mass below ξ lies between the rule's weight strictly below ξ and that
weight plus the weight of the node at ξ. So ``radau_bounds`` brackets μ_v((−∞, ξ)) for
*every* measure the quadrature cannot tell from μ_v: the width of the bracket is the mass
whose side of ξ no polynomial of degree 2k can decide (on a trained network's Hessian,
the cluster of near-zero eigenvalues within about λ_max/k² of ξ).

References
----------
G. H. Golub and G. Meurant, Matrices, Moments and Quadrature with Applications, Princeton
University Press (2010), §6.2 (Gauss–Radau) and §7.1 (bounds).
N. I. Akhiezer, The Classical Moment Problem, Oliver & Boyd (1965), ch. 3 (the
Chebyshev–Markov–Stieltjes inequalities).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

__all__ = ["gauss_rule", "radau_bounds"]


def gauss_rule(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (ascending) and weights of the Gauss rule of tridiag(beta, alpha, beta).

    Parameters
    ----------
    alpha : numpy.ndarray, shape (k,)
        Diagonal.
    beta : numpy.ndarray, shape (k − 1,)
        Off-diagonal.

    Returns
    -------
    nodes, weights : numpy.ndarray
        Ritz values and the squared first components of T's eigenvectors (float64; the
        weights sum to 1 to round-off).
    """
    if alpha.size == 1:
        return alpha.astype(np.float64), np.ones(1)
    nodes, S = scipy.linalg.eigh_tridiagonal(alpha, beta)
    return nodes, S[0] ** 2


def _first_block(alpha: np.ndarray, beta: np.ndarray, beta_last: float
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """T's leading block up to the first zero β (a breakdown: that block's Gauss rule is
    the starting vector's measure exactly, so the residual is 0)."""
    zero = np.flatnonzero(beta == 0.0)
    if zero.size:
        j = int(zero[0]) + 1
        return alpha[:j], beta[: j - 1], 0.0
    return alpha, beta, float(beta_last)


def _split_at(nodes: np.ndarray, weights: np.ndarray, xi: float) -> tuple[float, float]:
    """Weight of the nodes below ξ, and that plus the nodes at ξ — "at" meaning within the
    eigensolve's rounding of ξ (a node of an eigenvalue exactly at ξ comes out ±k·eps·‖T‖
    from it, on either side)."""
    tol = 4 * nodes.size * np.finfo(np.float64).eps * max(float(np.abs(nodes).max()), abs(xi))
    return (float(weights[nodes < xi - tol].sum()),
            min(float(weights[nodes <= xi + tol].sum()), 1.0))


def radau_bounds(alpha: np.ndarray, beta: np.ndarray, beta_last: float, xi: float
                 ) -> tuple[float, float]:
    """Bounds on the starting vector's spectral mass below ``xi``, μ_v((−∞, ξ)).

    Parameters
    ----------
    alpha : numpy.ndarray, shape (k,)
        Lanczos diagonal.
    beta : numpy.ndarray, shape (k − 1,)
        Lanczos off-diagonal (a 0 marks a breakdown; the block before it is exact).
    beta_last : float
        Residual norm after step k (0: the Krylov space is invariant, the Gauss rule exact).
    xi : float
        The point.

    Returns
    -------
    lower, upper : float
        Σ of the Gauss–Radau weights at nodes below ξ, and that plus the weight of the node
        at ξ (after a breakdown, Gauss nodes within 4k·eps·max|node| of ξ count as at ξ:
        an eigenvalue exactly at ξ may come out on either side of it). Every measure with
        the same first 2k + 1 moments has its mass below ξ in [lower, upper] (module
        docstring); computed in float64 (a (k+1)-point symmetric tridiagonal eigensolve),
        so to about k·eps.
    """
    a, b, b_last = _first_block(np.asarray(alpha, np.float64), np.asarray(beta, np.float64),
                                beta_last)
    if b_last == 0.0:  # the measure itself: a finite point set
        return _split_at(*gauss_rule(a, b), xi)
    k = a.size
    # α̃ with ξ an eigenvalue of [[T, β_k e_k], [β_k e_kᵀ, α̃]]: (T − ξI)δ = β_k² e_k,
    # α̃ = ξ + δ_k (Golub & Meurant, §6.2)
    banded = np.zeros((3, k))
    banded[0, 1:], banded[1], banded[2, :-1] = b, a - xi, b
    rhs = np.zeros(k)
    rhs[-1] = b_last**2
    try:
        delta = scipy.linalg.solve_banded((1, 1), banded, rhs)
    except np.linalg.LinAlgError:  # ξ is a Gauss node: the Radau rule is the Gauss rule
        return _split_at(*gauss_rule(a, b), xi)
    nodes, weights = gauss_rule(np.append(a, xi + delta[-1]), np.append(b, b_last))
    at = int(np.argmin(np.abs(nodes - xi)))
    lower = float(weights[:at].sum())
    return lower, min(lower + float(weights[at]), 1.0)

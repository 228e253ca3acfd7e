"""Stochastic trace estimation of a symmetric operator (Hutch++)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rmt.hessian.operators import CountingOperator

__all__ = ["trace"]


def trace(op: Any, n_matvecs: int = 99, *, rng: Any = None) -> float:
    """Hutch++ estimate of the trace from ``n_matvecs`` products.

    A third of the budget (⌊b/3⌋ products) sketches the dominant subspace (A·S, QR) and
    as many more give its trace exactly; the remaining b − 2⌊b/3⌋ products estimate the
    rest with Rademacher probes projected off it — exactly ``n_matvecs`` products in all.
    Variance falls as 1/m² instead of Hutchinson's 1/m for matrices with decaying spectra.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric operator.
    n_matvecs : int, default 99
        Products to spend, at least 3 (Hutch++ needs a sketch, its image and one probe);
        at or above n the trace is computed exactly from n products.
    rng : int or numpy.random.Generator, optional
        Seed of the Rademacher probes.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        ``n_matvecs`` below 3 (and below n).

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
    budget = int(n_matvecs)
    if budget < 3:
        raise ValueError(f"Hutch++ needs at least 3 products (a sketch, its image and a "
                         f"probe), got n_matvecs={n_matvecs}")
    rng = np.random.default_rng(rng)
    m = budget // 3
    probes = budget - 2 * m
    S = rng.choice([-1.0, 1.0], size=(n, m))
    G = rng.choice([-1.0, 1.0], size=(n, probes))
    Q, _ = np.linalg.qr(op.matmat(S))
    t_top = np.trace(Q.T @ op.matmat(Q))
    G_perp = G - Q @ (Q.T @ G)
    t_rest = np.trace(G_perp.T @ op.matmat(G_perp)) / probes
    return float(t_top + t_rest)

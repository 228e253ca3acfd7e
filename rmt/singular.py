"""Singular-value columns WeightWatcher 0.7.7 reports: sv_max, sv_min, matrix_rank and
weak_rank_loss, read off the ESD (no second decomposition).

Singular values are those of W itself, s = √(N·λ) for λ of X = WᵀW/N (√λ with
``normalize=False``), pooled over conv slices. ``weak_rank_loss`` counts eigenvalues of WᵀW
(WeightWatcher's units, whatever ``normalize``) below ``tolerance`` = 1e-6, its default.
``sv_min`` is the smallest singular value over all slices; WeightWatcher reports the
largest of the per-slice minima there (the same number for a plain matrix).

Precision: from float64 Gram eigenvalues, a singular value s carries an absolute error of
about √(M·eps)·sv_max (≈ 1e-7·sv_max at M = 500), so an ``sv_min`` below that is round-off;
the tests check sv_min to 1e-6·sv_max against LAPACK's SVD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute

__all__ = ["SINGULAR", "WEAK_RANK_TOLERANCE", "SingularValues", "singular_values"]

#: WeightWatcher's default ``tolerance`` for weak_rank_loss, on eigenvalues of WᵀW.
WEAK_RANK_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SingularValues:
    """Singular-value summaries of one layer.

    Attributes
    ----------
    sv_max, sv_min : float
        Largest and smallest singular value of W (over all slices).
    matrix_rank : int
        Singular values above NumPy's ``matrix_rank`` cut (n_evals − rank_loss).
    weak_rank_loss : int
        Eigenvalues of WᵀW below the tolerance.
    """

    sv_max: float
    sv_min: float
    matrix_rank: int
    weak_rank_loss: int


def singular_values(ev: Any, N: int, *, normalized: bool = True, rank_loss: int = 0,
                    tolerance: float = WEAK_RANK_TOLERANCE) -> SingularValues:
    """Singular-value summaries from an ESD.

    Parameters
    ----------
    ev : array_like
        Eigenvalues of X = WᵀW/N (of WᵀW with ``normalized=False``).
    N : int
        Rows of the oriented matrix.
    normalized : bool, default True
        Whether ``ev`` carries the 1/N.
    rank_loss : int, default 0
        Numerically zero singular values (``rmt.esd_metrics``).
    tolerance : float, default 1e-6
        weak_rank_loss threshold on eigenvalues of WᵀW.

    Returns
    -------
    SingularValues
    """
    lam = np.maximum(np.asarray(ev, dtype=np.float64), 0.0) * (float(N) if normalized else 1.0)
    s = np.sqrt(lam)
    return SingularValues(sv_max=float(s.max()), sv_min=float(s.min()),
                          matrix_rank=int(lam.size - rank_loss),
                          weak_rank_loss=int(np.count_nonzero(lam < tolerance)))


def _singular(layer: LayerResult, W: Any) -> SingularValues:
    return singular_values(layer.evals, layer.shape.N, normalized=layer.options.normalize,
                           rank_loss=layer.results["metrics"].rank_loss)


#: Registered by rmt.analyses, after the metrics it reads.
SINGULAR = Analysis("singular", _singular, (
    Column("sv_max", "largest singular value of W", "singular value", "rmt.singular",
           attribute("sv_max")),
    Column("sv_min", "smallest singular value of W (over all slices)", "singular value",
           "rmt.singular", attribute("sv_min")),
    Column("matrix_rank", "singular values above NumPy's matrix_rank cut (num_evals - "
           "rank_loss)", "count", "rmt.singular", attribute("matrix_rank")),
    Column("weak_rank_loss", "eigenvalues of W^T W below 1e-6 (WeightWatcher's tolerance, in "
           "its units)", "count", "rmt.singular", attribute("weak_rank_loss")),
))

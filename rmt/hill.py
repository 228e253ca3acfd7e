"""The Hill estimator of the ESD's tail exponent at a fixed xmin (``alpha_hill``).

AlphaPruning (Lu et al., NeurIPS 2024), TempBalance (Zhou et al., NeurIPS 2023), FARMS
(Hu et al., ICML 2025) and AlphaDecay all compute ``PL_Alpha_Hill`` the same way: with the
eigenvalues ascending and i = ⌊n/2⌋, xmin = λᵢ and α = 1 + k / (Σ_{j≥i} ln λⱼ − k·ln λᵢ),
k = n − i (the continuous power-law MLE of Clauset et al. 2009, Eq. 3.1, with xmin fixed at
the median instead of chosen by KS). ``xmin="peak"`` puts xmin at the left edge of the
modal bin of a 100-bin histogram of log10 λ (their ``xmin_peak``, without the mixed
log/linear search bounds of WeightWatcher's version). float64 throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute
from rmt.errors import DataError

__all__ = ["HILL", "HillFit", "alpha_hill"]


@dataclass(frozen=True)
class HillFit:
    """A Hill estimate of the tail exponent.

    Attributes
    ----------
    alpha : float
        1 + k / Σ ln(λ/xmin) over the k eigenvalues ≥ xmin.
    xmin : float
        The tail's lower end (an eigenvalue).
    n_tail : int
        Eigenvalues in the tail (k).
    D : float
        KS distance of the tail to the fitted power law (the papers' ``final_D``).
    """

    alpha: float
    xmin: float
    n_tail: int
    D: float


def alpha_hill(ev: Any, xmin: Literal["median", "peak"] | float = "median", *,
               bins: int = 100) -> HillFit:
    """Hill estimator of the power-law exponent with xmin fixed in advance.

    Parameters
    ----------
    ev : array_like
        Eigenvalues (any order); values ≤ 0 are dropped (filter numerical zeros first).
    xmin : {"median", "peak"} or float, default "median"
        ``"median"``: the ⌊n/2⌋-th eigenvalue, ascending (``PL_Alpha_Hill``); ``"peak"``:
        the smallest eigenvalue at or above the left edge of the modal bin of the log10
        histogram; a number: the smallest eigenvalue at or above it.
    bins : int, default 100
        Histogram bins for ``"peak"``.

    Returns
    -------
    HillFit

    Raises
    ------
    rmt.errors.DataError
        Fewer than two positive eigenvalues, or a tail of fewer than two distinct values.
    """
    x = np.sort(np.asarray(ev, dtype=np.float64).ravel())
    x = x[x > 0]
    n = x.size
    if n < 2:
        raise DataError(f"alpha_hill needs >= 2 positive eigenvalues, got {n}")
    if isinstance(xmin, str):
        if xmin == "median":
            i = n // 2
        elif xmin == "peak":
            counts, edges = np.histogram(np.log10(x), bins=bins)
            i = int(np.searchsorted(x, 10.0 ** edges[int(np.argmax(counts))], side="left"))
        else:
            raise ValueError(f"xmin must be 'median', 'peak' or a number, got {xmin!r}")
    else:
        i = int(np.searchsorted(x, float(xmin), side="left"))
    i = min(i, n - 2)
    logs = np.log(x[i:])
    k = logs.size
    spread = float(np.sum(logs) - k * logs[0])
    if not spread > 0:
        raise DataError("alpha_hill: the tail holds a single distinct value")
    alpha = 1.0 + k / spread
    D = float(np.max(np.abs(1.0 - np.exp((1.0 - alpha) * (logs - logs[0])) - np.arange(k) / k)))
    return HillFit(alpha=float(alpha), xmin=float(x[i]), n_tail=int(k), D=D)


def _hill(layer: LayerResult, W: Any) -> HillFit:
    return alpha_hill(layer.nonzero)


#: Registered by rmt.analyses, after the analyses it reads.
HILL = Analysis("hill", _hill, (
    Column("alpha_hill", "Hill estimate of the tail exponent with xmin at the median "
           "eigenvalue (PL_Alpha_Hill of AlphaPruning/TempBalance/FARMS)", "",
           "rmt.hill.alpha_hill", attribute("alpha")),
), failure="no Hill fit")

"""The ERG / detX condition: how many top eigenvalues it takes for their product to fall
below 1 once the ESD is rescaled to mean 1 (docs/science.md §9).

Definition as WeightWatcher 0.7.7 computes it (``detX=True``; its ``detX_constraint`` on
``rescale_eigenvalues``): rescale λ → λ·n/Σλ; over the top sets of 1, 2, …, n − 1
eigenvalues, ``detX_num`` is the size of the first whose product is < 1 (n when none is), and
``detX_val`` the smallest eigenvalue of that set in the ESD's own units. Martin & Mahoney's
SETOL reading: for an ideal layer the ERG (exact renormalisation group) condition
det X̃ = 1 on the tail holds at the power-law xmin, so ``ERG_gap`` = detX_num −
num_pl_spikes is ≈ 0 there. Computed as a cumulative sum of logarithms (float64), which
cannot overflow or underflow where WeightWatcher's running product can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute

__all__ = ["ERG", "ERGResult", "detx"]


@dataclass(frozen=True)
class ERGResult:
    """The detX condition of one ESD.

    Attributes
    ----------
    detX_num : int
        Eigenvalues in the smallest top set whose rescaled product is < 1.
    detX_idx : int
        Index (ascending order) of that set's smallest eigenvalue.
    detX_val : float
        That eigenvalue, in the ESD's units.
    detX_val_rescaled : float
        The same, rescaled to a mean-1 ESD (WeightWatcher's ``detX_val_unrescaled``).
    """

    detX_num: int
    detX_idx: int
    detX_val: float
    detX_val_rescaled: float


def detx(ev: Any) -> ERGResult:
    """The detX condition of an ESD, as WeightWatcher 0.7.7 defines it.

    Parameters
    ----------
    ev : array_like
        Eigenvalues (any order, any scale; round-off negatives count as 0).

    Returns
    -------
    ERGResult

    Raises
    ------
    ValueError
        Fewer than two eigenvalues, or all zero.
    """
    lam = np.sort(np.maximum(np.asarray(ev, dtype=np.float64).ravel(), 0.0))
    n = lam.size
    if n < 2 or not lam[-1] > 0:
        raise ValueError(f"detx needs >= 2 eigenvalues, not all zero; got {n}")
    scale = n / float(lam.sum())
    with np.errstate(divide="ignore"):
        logs = np.log(lam * scale)
    # tail[j] = log of the product of the top j+1 eigenvalues. WeightWatcher scans the top
    # sets of 1 .. n-1 eigenvalues (idx = n-1 .. 1) and stops at the first product below 1.
    tail = np.cumsum(logs[::-1])
    below = np.flatnonzero(tail[:-1] < 0)
    # when no product falls below 1, WeightWatcher reports n and the index its loop ended on
    idx = int(n - 1 - below[0]) if below.size else 1
    num = n - idx if below.size else n
    return ERGResult(detX_num=int(num), detX_idx=idx, detX_val=float(lam[idx]),
                     detX_val_rescaled=float(lam[idx] * scale))


def _erg(layer: LayerResult, W: Any) -> ERGResult:
    return detx(layer.evals)


def _gap(result: ERGResult, layer: LayerResult) -> float:
    fit = layer.results.get("powerlaw")
    return float(result.detX_num - fit.n_tail) if fit is not None else float("nan")


#: Registered by rmt.analyses, after the analyses it reads.
ERG = Analysis("erg", _erg, (
    Column("detX_num", "top eigenvalues whose product, in an ESD rescaled to mean 1, first "
           "falls below 1 (WeightWatcher's detX_num)", "count", "rmt.erg.detx",
           attribute("detX_num")),
    Column("detX_val", "the smallest of those eigenvalues", "eigenvalue", "rmt.erg.detx",
           attribute("detX_val")),
    Column("detX_val_unrescaled", "detX_val in the ESD rescaled to mean 1 (WeightWatcher's "
           "name for it, which says the opposite)", "", "rmt.erg.detx",
           attribute("detX_val_rescaled")),
    Column("ERG_gap", "detX_num - num_pl_spikes (about 0 when the ERG condition holds at the "
           "power-law xmin)", "count", "rmt.erg.detx, rmt.fit_powerlaw", _gap),
))

"""Outlier eigenvalues at the top of a power-law tail ("fingers"), tested and removed.

A few eigenvalues far above the rest of the tail — WeightWatcher's "fingers" — pull the
power-law fit: the KS scan may pick an xmin that isolates them, or α moves to fit them.
``rmt.analyze(fingers=...)`` finds them, reports ``num_fingers`` and the α before removal
(``raw_alpha``), and fits the tail without them (the ``alpha`` column and every analysis
that reads the power-law fit then use that fit).

``method="dk"`` is a significance test (Pisarenko & Sornette, "Robust statistical tests
of Dragon-Kings beyond power law distributions", Eur. Phys. J. ST 205, 2012). Sort the m
tail points descending, x₁ ≥ … ≥ x_m. For a Pareto tail the normalised log-spacings
Dₖ = k·(ln xₖ − ln xₖ₊₁), k = 1 … m−1, are independent exponentials of one rate α − 1
(Rényi's representation), so for the top r points

    T_r = mean(D₁ … D_r) / mean(D_{r+1} … D_{m−1})  ~  F(2r, 2(m−1−r))

whatever α is. Shifting the top r points up inflates D₁ … D_r and so T_r. Every r from 1
to ``max_fingers`` is tested at ``significance / R`` (Bonferroni over the R block sizes
tried, so on a clean tail the chance of reporting any finger is ≤ ``significance``), and
``num_fingers`` is the most significant block size (the r of the smallest p_r) when it is
rejected. Testing blocks rather than one point at a time keeps two outliers close to each
other from masking one another (their own spacing is ordinary; the one below them is not),
and a block larger than the outliers dilutes their spacing with ordinary ones, so its
p-value is larger.

``method="clip_xmax"`` is WeightWatcher 0.7.7's ``fit_clipped_powerlaw``, kept for
comparison: drop the top idx = 2, 3, … 9 eigenvalues in turn and refit; stop at the first
fit whose α is more than ``finger_thresh`` (1.0) below the raw α (reporting idx − 1
fingers, its count, one less than it removed) or once α ≤ 2. It has no significance level
and stops at 9. With ``candidates="ww"`` the fits are WeightWatcher's own, so the result is
its ``num_fingers``/``raw_alpha``/``alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.stats

from rmt.columns import Analysis, Column, LayerResult, attribute
from rmt.errors import DataError
from rmt.heavytail import PowerLawFit, fit_powerlaw

__all__ = ["FINGERS", "FingerMethod", "Fingers", "dk_pvalues", "find_fingers"]

FingerMethod = Literal["dk", "clip_xmax"]

#: Spacings the DK test keeps below the tested block (its denominator's degrees of freedom).
MIN_REST = 5


@dataclass(frozen=True)
class Fingers:
    """The outliers found at the top of a power-law tail and the fit without them.

    Attributes
    ----------
    method : {"dk", "clip_xmax"}
        The rule used.
    n_fingers : int
        Outliers reported (for ``"clip_xmax"``, WeightWatcher's count: one less than the
        eigenvalues it removed).
    n_removed : int
        Top eigenvalues left out of ``fit``.
    raw_fit : rmt.PowerLawFit
        The fit of every eigenvalue.
    fit : rmt.PowerLawFit
        The fit without the removed ones (``raw_fit`` when none).
    p_value : float
        ``"dk"``: Bonferroni-adjusted p-value of the most significant block, min(1, R·min
        p_r); NaN when the tail is too short to test, and for ``"clip_xmax"``.
    p_values : numpy.ndarray
        ``"dk"``: unadjusted p-value of each block size r = 1 … R.
    """

    method: FingerMethod
    n_fingers: int
    n_removed: int
    raw_fit: PowerLawFit
    fit: PowerLawFit
    p_value: float
    p_values: np.ndarray = field(repr=False)

    @property
    def raw_alpha(self) -> float:
        """α before removing the fingers."""
        return float(self.raw_fit.alpha)


def dk_pvalues(tail: np.ndarray, max_block: int) -> np.ndarray:
    """p-values of the DK test that the top r points of a Pareto tail are outliers.

    Parameters
    ----------
    tail : numpy.ndarray
        The tail (values ≥ xmin), any order, positive.
    max_block : int
        Largest block size r tested (fewer when the tail is short: ``MIN_REST`` spacings
        stay below the block).

    Returns
    -------
    numpy.ndarray
        p_r for r = 1 … R: the F(2r, 2(m−1−r)) survival function of T_r (float64; exact
        under an exact Pareto tail above its smallest point).
    """
    x = np.sort(np.asarray(tail, dtype=np.float64))[::-1]
    m = x.size
    R = min(int(max_block), m - 1 - MIN_REST)
    if R < 1:
        return np.array([])
    logs = np.log(x)
    spacings = np.arange(1, m) * (logs[:-1] - logs[1:])
    top = np.cumsum(spacings)[:R]
    total = float(np.sum(spacings))
    r = np.arange(1, R + 1)
    rest = (total - top) / (m - 1 - r)
    with np.errstate(divide="ignore", invalid="ignore"):
        T = (top / r) / rest
    T = np.where(rest > 0, T, np.inf)
    return np.asarray(scipy.stats.f.sf(T, 2 * r, 2 * (m - 1 - r)), dtype=np.float64)


def _refit(fit: PowerLawFit, drop: int, device: Any) -> PowerLawFit:
    """The same fit (convention, α range, minimum tail, xmax) without the top ``drop``."""
    return fit_powerlaw(fit.data[:fit.data.size - drop], xmax=fit.xmax,
                        alpha_range=fit.alpha_range, min_tail=fit.min_tail,
                        candidates=fit.candidates, device=device)


def find_fingers(fit: PowerLawFit, *, method: FingerMethod = "dk", significance: float = 0.01,
                 max_fingers: int = 10, finger_thresh: float = 1.0, min_alpha: float = 2.0,
                 device: Any = "cpu") -> Fingers:
    """Test the top of a power-law fit's tail for outliers and refit without them.

    Parameters
    ----------
    fit : rmt.PowerLawFit
        The fit of all the data (:func:`rmt.fit_powerlaw`).
    method : {"dk", "clip_xmax"}, default "dk"
        The DK significance test, or WeightWatcher 0.7.7's clipping rule (module docstring).
    significance : float, default 0.01
        ``"dk"``: family-wise false-positive rate over the block sizes tried.
    max_fingers : int, default 10
        ``"dk"``: largest block tested; ``"clip_xmax"``: WeightWatcher's ``max_fingers``
        (it removes at most ``max_fingers − 1``).
    finger_thresh : float, default 1.0
        ``"clip_xmax"``: the drop in α that ends its search.
    min_alpha : float, default 2.0
        ``"clip_xmax"``: it stops once a clipped fit's α is at or below this.
    device : {"auto", "cpu", "gpu"}
        Where the refits run.

    Returns
    -------
    Fingers

    Raises
    ------
    ValueError
        Unknown method, significance outside (0, 1) or ``max_fingers < 1``.
    rmt.errors.DataError
        The fit has no α.
    """
    if method not in ("dk", "clip_xmax"):
        raise ValueError(f"method must be 'dk' or 'clip_xmax', got {method!r}")
    if not 0 < significance < 1 or int(max_fingers) < 1:
        raise ValueError(f"need 0 < significance < 1 and max_fingers >= 1, got {significance}, "
                         f"{max_fingers}")
    if not np.isfinite(fit.alpha):
        raise DataError("no power-law fit to test for fingers")
    if method == "clip_xmax":
        return _clip_xmax(fit, int(max_fingers), finger_thresh, min_alpha, device)
    p = dk_pvalues(fit.tail, int(max_fingers))
    if p.size == 0:
        return Fingers("dk", 0, 0, fit, fit, float("nan"), p)
    best = int(np.argmin(p))
    n = best + 1 if p[best] <= significance / p.size else 0
    refit = _refit(fit, n, device) if n else fit
    return Fingers("dk", n, n, fit, refit, float(min(1.0, p.size * p.min())), p)


def _clip_xmax(fit: PowerLawFit, max_fingers: int, finger_thresh: float, min_alpha: float,
               device: Any) -> Fingers:
    """WeightWatcher 0.7.7's fit_clipped_powerlaw (xmax=None), step for step."""
    best, n_fingers, removed = fit, 0, 0
    for idx in range(2, max_fingers):
        if fit.data.size - idx < 2:
            break
        clipped = _refit(fit, idx, device)
        if clipped.alpha + finger_thresh < fit.alpha:
            best, n_fingers, removed = clipped, idx - 1, idx
            break
        if clipped.alpha <= min_alpha:
            break
    return Fingers("clip_xmax", n_fingers, removed, fit, best, float("nan"), np.array([]))


def _fingers(layer: LayerResult, W: Any) -> Fingers:
    opts = layer.options
    raw = fit_powerlaw(layer.nonzero, candidates=opts.candidates, device=opts.device)
    return find_fingers(raw, method=opts.fingers, device=opts.device)


#: Registered by rmt.analyses before the power-law analysis, which then fits without them.
FINGERS = Analysis("fingers", _fingers, (
    Column("num_fingers", "outlier eigenvalues at the top of the tail, removed before the "
           "power-law fit (fingers='dk': DK test at 1% family-wise; 'clip_xmax': "
           "WeightWatcher's count)", "count", "rmt.fingers.find_fingers",
           attribute("n_fingers")),
    Column("raw_alpha", "alpha of the power-law fit before removing the fingers", "",
           "rmt.fingers.find_fingers", attribute("raw_alpha")),
    Column("finger_p", "Bonferroni-adjusted p-value of the DK test's most significant block "
           "(NaN for clip_xmax or a tail too short to test)", "", "rmt.fingers.dk_pvalues",
           attribute("p_value")),
), failure="no power-law fit", option="fingers")

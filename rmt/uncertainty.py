"""Error bars on α (``rmt.analyze(uncertainty=True)``, ``rmt.uncertainty.alpha_uncertainty``).

Two intervals for a power-law fit (docs/science.md §4):

- **Bootstrap** (``alpha_ci_low``, ``alpha_ci_high``): the fitted data resampled with
  replacement ``n_boot`` times (seeded), each resample refitted with the same settings and
  its own KS-optimal xmin; the central ``level`` interval of the α's. It carries both
  sources of error — the MLE's and the choice of xmin.
- **xmin sensitivity** (``alpha_xmin_low``, ``alpha_xmin_high``): the range of α over the
  candidate xmin whose KS distance is within ``xmin_margin`` (relative) of the best one,
  from one scan of the same data (D exact wherever it is inside the margin): how much α
  moves among fits that are about as good.

Opt-in: the bootstrap costs ``n_boot`` fits per layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rmt._powerlaw_scan import scan
from rmt.columns import Analysis, Column, LayerResult, attribute, layer_rng
from rmt.errors import DataError
from rmt.heavytail import PowerLawFit, fit_powerlaw

__all__ = ["UNCERTAINTY", "AlphaUncertainty", "alpha_uncertainty"]


@dataclass(frozen=True)
class AlphaUncertainty:
    """Uncertainty of a fitted power-law exponent.

    Attributes
    ----------
    alpha : float
        The fit's α.
    ci_low, ci_high : float
        Bootstrap interval at ``level``.
    xmin_low, xmin_high : float
        Range of α over candidates with D ≤ (1 + xmin_margin)·D_best.
    n_boot : int
        Bootstrap resamples that gave a fit.
    level : float
        Coverage of the bootstrap interval.
    xmin_margin : float
        Relative KS margin of the sensitivity band.
    """

    alpha: float
    ci_low: float
    ci_high: float
    xmin_low: float
    xmin_high: float
    n_boot: int
    level: float
    xmin_margin: float


def alpha_uncertainty(fit: PowerLawFit, *, n_boot: int = 200, rng: Any = None,
                      level: float = 0.95, xmin_margin: float = 0.1) -> AlphaUncertainty:
    """Bootstrap interval and xmin-sensitivity band of a power-law fit's α.

    Parameters
    ----------
    fit : rmt.PowerLawFit
        From :func:`rmt.fit_powerlaw` (its data and settings are reused).
    n_boot : int, default 200
        Bootstrap resamples.
    rng : int or numpy.random.Generator, optional
        Seed of the resampling.
    level : float, default 0.95
        Coverage of the bootstrap interval.
    xmin_margin : float, default 0.1
        Candidates within this relative KS distance of the best enter the band.

    Returns
    -------
    AlphaUncertainty

    Raises
    ------
    ValueError
        ``n_boot < 2``, ``level`` outside (0, 1) or a negative margin.
    """
    if n_boot < 2 or not 0 < level < 1 or xmin_margin < 0:
        raise ValueError(f"need n_boot >= 2, 0 < level < 1, xmin_margin >= 0; got {n_boot}, "
                         f"{level}, {xmin_margin}")
    rng = np.random.default_rng(rng)
    data = np.asarray(fit.data, dtype=np.float64)
    alphas = []
    for _ in range(n_boot):
        sample = data[rng.integers(0, data.size, data.size)]
        try:
            refit = fit_powerlaw(sample, xmax=fit.xmax, alpha_range=fit.alpha_range,
                                 min_tail=fit.min_tail, candidates=fit.candidates,
                                 device="cpu")
        except DataError:
            continue
        if np.isfinite(refit.alpha):
            alphas.append(refit.alpha)
    tail = (1 - level) / 2
    low, high = (np.quantile(alphas, [tail, 1 - tail]) if len(alphas) >= 2
                 else (np.nan, np.nan))
    # D is exact wherever it is within the margin of the least (the rest are lower bounds
    # above the margin, which is all the band needs).
    full = scan(data, xmax=fit.xmax, alpha_range=fit.alpha_range, min_tail=fit.min_tail,
                candidates=fit.candidates, device="cpu", keep=1 + xmin_margin)
    near = full.valid & (full.D <= (1 + xmin_margin) * fit.D)
    band = full.alphas[near] if near.any() else np.array([fit.alpha])
    return AlphaUncertainty(alpha=float(fit.alpha), ci_low=float(low), ci_high=float(high),
                            xmin_low=float(band.min()), xmin_high=float(band.max()),
                            n_boot=len(alphas), level=level, xmin_margin=xmin_margin)


def _uncertainty(layer: LayerResult, W: Any) -> AlphaUncertainty | None:
    fit = layer.results.get("powerlaw")
    if fit is None or not np.isfinite(fit.alpha):
        return None
    return alpha_uncertainty(fit, rng=layer_rng(layer.options.seed, f"{layer.name}#alpha"))


#: Registered by rmt.analyses, after the power-law fit it reads.
UNCERTAINTY = Analysis("uncertainty", _uncertainty, (
    Column("alpha_ci_low", "lower end of the 95% bootstrap interval of alpha (200 seeded "
           "resamples, xmin refitted each time)", "", "rmt.uncertainty.alpha_uncertainty",
           attribute("ci_low")),
    Column("alpha_ci_high", "upper end of that interval", "", "rmt.uncertainty.alpha_uncertainty",
           attribute("ci_high")),
    Column("alpha_xmin_low", "smallest alpha over candidate xmin with D within 10% of the "
           "best", "", "rmt.uncertainty.alpha_uncertainty", attribute("xmin_low")),
    Column("alpha_xmin_high", "largest such alpha", "", "rmt.uncertainty.alpha_uncertainty",
           attribute("xmin_high")),
), option="uncertainty")

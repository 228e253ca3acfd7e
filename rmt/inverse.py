"""The inverse ESD, 1/λ (``rmt.analyze(inverse=True)``, WeightWatcher's ``inverse=True``).

The small end of an ESD, read through 1/λ, has its own tail: for a square Gaussian
matrix the quarter-circle law gives the singular values a finite density at 0, so
p(λ) ∝ λ^(−1/2) near 0 and the inverse ESD has a power-law tail with α = 3/2 exactly
(tested). WeightWatcher's ``inverse=True`` replaces every eigenvalue by its inverse and
runs its whole analysis on that; here the inverse ESD gets its own power-law fit in
``inv_*`` columns beside the ordinary ones (the MP law and the phases are statements
about the ESD itself, not its inverse).

Numerical zeros (≤ M·eps·λmax, :func:`rmt.metrics.numerical_zero_threshold`) have no
inverse and are left out (WeightWatcher would make them ∞). An eigenvalue a little above
that level is known only to within ~M·eps·λmax, so its inverse has relative error
≈ M·eps·λmax/λ: those within 100× of the zero level (error above 1 %) are counted and
named in the row's warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute
from rmt.heavytail import PowerLawFit, fit_powerlaw
from rmt.metrics import numerical_zero_threshold

__all__ = ["INVERSE", "InverseESD", "inverse_esd"]

#: Inverses of eigenvalues within this factor of the numerical-zero level err by > 1 %.
INEXACT_FACTOR = 100.0


@dataclass(frozen=True)
class InverseESD:
    """The inverse ESD of a layer and its power-law fit.

    Attributes
    ----------
    evals : numpy.ndarray
        1/λ of the non-zero eigenvalues, ascending (units: 1/eigenvalue).
    fit : rmt.PowerLawFit
        Power-law fit of its tail.
    n_zero : int
        Eigenvalues left out as numerical zeros.
    n_inexact : int
        Kept eigenvalues within 100× of the zero level (inverse error > 1 %).
    """

    evals: np.ndarray = field(repr=False)
    fit: PowerLawFit
    n_zero: int
    n_inexact: int

    @property
    def lambda_max(self) -> float:
        """The largest 1/λ (the inverse of the smallest non-zero eigenvalue)."""
        return float(self.evals[-1])

    @property
    def warning(self) -> str:
        """A caution about inexact inverses, or empty."""
        if not self.n_inexact:
            return ""
        return (f"inverse ESD: {self.n_inexact} eigenvalue(s) within {INEXACT_FACTOR:g}x of "
                "the numerical-zero level (their 1/lambda err by > 1%)")


def inverse_esd(ev: np.ndarray, M: int, *, candidates: Any = "powerlaw",
                device: Any = "cpu") -> InverseESD:
    """Invert an ESD's non-zero eigenvalues and fit a power law to the inverse's tail.

    Parameters
    ----------
    ev : numpy.ndarray
        The ESD, ascending (any units).
    M : int
        Eigenvalues per matrix (sets the numerical-zero level M·eps·λmax).
    candidates : {"powerlaw", "ww"}
        Power-law fit convention, as in :func:`rmt.fit_powerlaw`.
    device : {"auto", "cpu", "gpu"}
        Where the fit runs.

    Returns
    -------
    InverseESD

    Raises
    ------
    rmt.errors.DataError
        Fewer than two non-zero eigenvalues (from the fit).
    """
    ev = np.asarray(ev, dtype=np.float64)
    zero = numerical_zero_threshold(ev, M)
    kept = ev[ev > zero]
    inv = np.sort(1.0 / kept)
    fit = fit_powerlaw(inv, candidates=candidates, device=device)
    return InverseESD(evals=inv, fit=fit, n_zero=int(ev.size - kept.size),
                      n_inexact=int(np.sum(kept <= INEXACT_FACTOR * zero)))


def _inverse(layer: LayerResult, W: Any) -> InverseESD:
    opts = layer.options
    return inverse_esd(layer.evals, layer.shape.M, candidates=opts.candidates,
                       device=opts.device)


INVERSE = Analysis("inverse", _inverse, (
    Column("inv_alpha", "power-law exponent of the tail of the inverse ESD 1/lambda "
           "(WeightWatcher's alpha with inverse=True; 3/2 for a square Gaussian matrix)", "",
           "rmt.inverse.inverse_esd", lambda r, layer: r.fit.alpha),
    Column("inv_xmin", "lower end of that tail", "1/eigenvalue", "rmt.inverse.inverse_esd",
           lambda r, layer: r.fit.xmin),
    Column("inv_D", "KS distance of that fit", "", "rmt.inverse.inverse_esd",
           lambda r, layer: r.fit.D),
    Column("inv_num_pl_spikes", "inverse eigenvalues in that tail", "count",
           "rmt.inverse.inverse_esd", lambda r, layer: r.fit.n_tail),
    Column("inv_lambda_max", "largest 1/lambda: the inverse of the smallest non-zero "
           "eigenvalue", "1/eigenvalue", "rmt.inverse.inverse_esd", attribute("lambda_max")),
), failure="no inverse-ESD fit", warning=lambda r: r.warning, option="inverse")

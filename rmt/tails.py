"""Truncated power law and the best tail distribution as columns (``rmt.analyze(tpl=True)``).

For each layer's power-law tail (the ``powerlaw`` analysis' fit: same xmin), the maximum-
likelihood truncated power law p(x) ∝ x^(−α)·e^(−λx) (``tpl_alpha``, ``tpl_lambda`` in 1/x,
WeightWatcher's ``Lambda``), and ``best_fit``: the distribution the tail favours among the
power law, the truncated power law, the log-normal and the exponential, by the
log-likelihood-ratio tests of Clauset, Shalizi & Newman (2009, §5) as ``powerlaw`` runs them
(Vuong's test; χ²₁ for the nested truncated power law) at p ≤ 0.05. Opt-in: each layer
costs a few bounded quasi-Newton fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rmt.columns import Analysis, Column, LayerResult, attribute

__all__ = ["BEST_FIT_CANDIDATES", "TPL", "TailComparison", "compare_tails"]

#: Alternatives ``best_fit`` considers besides the power law.
BEST_FIT_CANDIDATES = ("truncated_power_law", "lognormal", "exponential")


@dataclass(frozen=True)
class TailComparison:
    """The truncated power-law fit of a tail and the distribution the tail favours.

    Attributes
    ----------
    tpl_alpha : float
        Exponent α of the truncated power law.
    tpl_lambda : float
        Its cut-off rate λ (1/eigenvalue units).
    best_fit : str
        ``"power_law"``, ``"truncated_power_law"``, ``"lognormal"`` or ``"exponential"``.
    """

    tpl_alpha: float
    tpl_lambda: float
    best_fit: str


def compare_tails(fit: Any, *, p_threshold: float = 0.05) -> TailComparison:
    """Truncated power law and best distribution for a power-law fit's tail.

    Parameters
    ----------
    fit : rmt.PowerLawFit
        The power-law fit (its xmin and tail are used).
    p_threshold : float, default 0.05
        Significance an alternative's win needs.

    Returns
    -------
    TailComparison
    """
    tpl = fit.fit_alternative("truncated_power_law")
    return TailComparison(tpl_alpha=float(tpl.params["alpha"]),
                          tpl_lambda=float(tpl.params["Lambda"]),
                          best_fit=fit.best_fit(p_threshold=p_threshold,
                                                candidates=BEST_FIT_CANDIDATES))


def _tails(layer: LayerResult, W: Any) -> TailComparison | None:
    fit = layer.results.get("powerlaw")
    return None if fit is None or not fit.n_tail else compare_tails(fit)


#: Registered by rmt.analyses, after the power-law fit it reads.
TPL = Analysis("tpl", _tails, (
    Column("tpl_alpha", "exponent of the truncated power law x^-alpha exp(-lambda x) fitted "
           "to the power-law tail", "", "rmt.tails.compare_tails", attribute("tpl_alpha")),
    Column("tpl_lambda", "its cut-off rate lambda (WeightWatcher's Lambda)", "1/eigenvalue",
           "rmt.tails.compare_tails", attribute("tpl_lambda")),
    Column("best_fit", "power_law, truncated_power_law, lognormal or exponential: the tail's "
           "best distribution by likelihood-ratio tests at p <= 0.05", "",
           "rmt.tails.compare_tails", attribute("best_fit")),
), option="tpl")

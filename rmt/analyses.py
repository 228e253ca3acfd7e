"""The built-in per-layer analyses of ``rmt.analyze``, registered in the order they run.

Each is a few lines: a compute function ``(layer, W) -> result`` calling the public
function that does the work, and the columns it adds. ``metrics`` (``rmt.esd_metrics``),
``powerlaw`` (``rmt.fit_powerlaw``), ``mp`` (``rmt.fit_mp``) and ``phase``
(``rmt.phases.decide`` on the two fits; its power-law fit is the powerlaw analysis'
own whenever that one's tail is long enough). New analyses follow the same pattern in
their own module (``docs/design.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult, attribute, entry_std, register
from rmt.errors import DataError
from rmt.heavytail import PowerLawFit, fit_powerlaw
from rmt.metrics import ESDMetrics, esd_metrics
from rmt.mp import MPFit, fit_mp
from rmt.phases import PhaseResult, classifier_powerlaw_fit, decide

__all__ = ["METRICS", "MP", "PHASE", "POWERLAW"]


def _metrics(layer: LayerResult, W: Any) -> ESDMetrics:
    # W is None for a LoRA update analysed from its factors (its ESD is exact)
    return esd_metrics(layer.evals, W=W, M=layer.shape.M, conv=layer.options.conv)


METRICS = register(Analysis("metrics", _metrics, (
    Column("lambda_max", "largest eigenvalue of X = W^T W/N (of W^T W with normalize=False)",
           "eigenvalue", "rmt.esd_metrics", attribute("lambda_max")),
    Column("log_norm", "log10 of the sum of eigenvalues (log10 ||W||_F^2/N; WW: log10 "
           "||W||_F^2)", "log10", "rmt.esd_metrics", attribute("log_norm")),
    Column("log_spectral_norm", "log10 lambda_max", "log10", "rmt.esd_metrics",
           attribute("log_spectral_norm")),
    Column("stable_rank", "sum(lambda)/lambda_max = ||W||_F^2/||W||_2^2 (scale-free)", "",
           "rmt.esd_metrics", attribute("stable_rank")),
    Column("entropy", "matrix entropy -sum p ln p / ln R, p = lambda/sum(lambda), R = hard "
           "rank", "", "rmt.esd_metrics", attribute("entropy")),
    Column("rank_loss", "singular values <= sigma_max*max(N,M)*eps(float64), summed over "
           "slices", "count", "rmt.esd_metrics", attribute("rank_loss")),
)))


# Opt-in: outliers at the top of the tail, found before the power-law fit that leaves them out.
from rmt import fingers  # noqa: E402

register(fingers.FINGERS)


def _powerlaw(layer: LayerResult, W: Any) -> PowerLawFit:
    fingers = layer.results.get("fingers")
    if fingers is not None:  # fingers=...: the fit of the tail without its outliers
        return fingers.fit
    return fit_powerlaw(layer.nonzero, candidates=layer.options.candidates,
                        device=layer.options.device)


def _log10_sum_power(x: np.ndarray, alpha: float) -> float:
    """log10(sum(x**alpha)) in log space: no overflow or underflow for any alpha."""
    logs = alpha * np.log(x)
    top = float(logs.max())
    return (top + float(np.log(np.sum(np.exp(logs - top))))) / np.log(10.0)


POWERLAW = register(Analysis("powerlaw", _powerlaw, (
    Column("alpha", "power-law exponent of the ESD tail (KS-optimal xmin, uncapped; NaN if "
           "failed)", "", "rmt.fit_powerlaw", attribute("alpha")),
    Column("xmin", "lower end of the power-law tail", "eigenvalue", "rmt.fit_powerlaw",
           attribute("xmin")),
    Column("xmax", "upper end of the fit (largest eigenvalue fitted: the fit uses no "
           "xmax; below the fingers when they are removed)", "eigenvalue", "rmt.fit_powerlaw",
           lambda f, layer: float(f.data[-1]) if f.data.size else float(layer.evals[-1])),
    Column("D", "KS distance of the power-law fit", "", "rmt.fit_powerlaw",
           attribute("D")),
    Column("sigma", "standard error of alpha, (alpha-1)/sqrt(n_tail)", "",
           "rmt.fit_powerlaw", attribute("sigma")),
    Column("num_pl_spikes", "eigenvalues in the power-law tail (>= xmin)", "count",
           "rmt.fit_powerlaw", attribute("n_tail")),
    Column("alpha_weighted", "alpha * log10(lambda_max) (WeightWatcher's alpha-hat)", "",
           "rmt.fit_powerlaw, rmt.esd_metrics",
           lambda f, layer: f.alpha * layer.results["metrics"].log_spectral_norm),
    Column("log_alpha_norm", "log10 of sum(lambda^alpha) (Schatten alpha-norm)", "log10",
           "rmt.fit_powerlaw", lambda f, layer: _log10_sum_power(layer.nonzero, f.alpha)),
), failure="no power-law fit", warning=lambda f: f.warning))


def _mp(layer: LayerResult, W: Any) -> MPFit | None:
    if layer.nonzero.size < 2:
        return None
    return fit_mp(layer.nonzero, N=layer.shape.N, M=layer.shape.M,
                  fpr=layer.options.thresholds.fpr, normalized=layer.options.normalize)


MP = register(Analysis("mp", _mp, (
    Column("sigma_mp", "sqrt of the MP fit's entry variance sigma^2 (entry std of the bulk)",
           "entry", "rmt.fit_mp", entry_std),
    Column("mp_softrank", "lambda_plus/lambda_max of the MP fit", "", "rmt.fit_mp",
           attribute("mp_softrank")),
    Column("bulk_max", "upper edge lambda_plus of the fitted MP bulk (WeightWatcher's name; "
           "its value comes from its KDE fit in mean-1 units)", "eigenvalue", "rmt.fit_mp",
           attribute("lambda_plus")),
    Column("bulk_min", "lower edge lambda_minus of the fitted MP bulk", "eigenvalue",
           "rmt.fit_mp", attribute("lambda_minus")),
    Column("num_spikes", "eigenvalues above the Tracy-Widom threshold at false-positive "
           "rate fpr", "count", "rmt.fit_mp", attribute("n_spikes")),
    Column("tw_z", "Tracy-Widom z-score of lambda_max against the MP bulk", "", "rmt.fit_mp",
           attribute("tw_z")),
    Column("D_mp", "KS distance of the bulk to the fitted MP law", "", "rmt.fit_mp",
           attribute("D")),
)))


def _phase(layer: LayerResult, W: Any) -> PhaseResult:
    if layer.evals.size < 4:
        raise DataError(f"classify_esd needs >= 4 finite eigenvalues, got {layer.evals.size}")
    opts = layer.options
    own = layer.results.get("powerlaw") if opts.candidates == "powerlaw" else None
    pl = classifier_powerlaw_fit(layer.nonzero, opts.thresholds, device=opts.device,
                                 tail_fit=own)
    mp, metrics = layer.results.get("mp"), layer.results["metrics"]
    return PhaseResult(decide(mp, pl, metrics, opts.thresholds), N=layer.shape.N,
                       M=layer.shape.M, rank_loss=metrics.rank_loss, evals=layer.evals,
                       mp_fit=mp, pl_fit=pl)


PHASE = register(Analysis("phase", _phase, (
    Column("d0", "null scale of D_mp for this many eigenvalues, 0.6 ln(n)/n", "",
           "rmt.phases.decide", attribute("d0")),
    Column("phase", "Martin & Mahoney 5+1 phase (rmt.classify)", "", "rmt.phases.decide",
           lambda r, layer: str(r.phase)),
    Column("sublabel", "'very'/'moderate' for heavy-tailed, 'rank'/'gap' for rank-collapse",
           "", "rmt.phases.decide", attribute("sublabel")),
    Column("reason", "one sentence saying why the phase was chosen", "", "rmt.phases.decide",
           attribute("reason")),
), required=True))

# Further built-in analyses, each in its own module, registered here in the order they run
# (each may read the results of those before it: ERG_gap reads the power-law tail).
from rmt import (  # noqa: E402
    erg,
    farms,
    hill,
    inverse,
    panels,
    randomized,
    singular,
    tails,
    uncertainty,
    vectors,
)

register(singular.SINGULAR)
register(erg.ERG)
register(hill.HILL)
register(randomized.RANDOMIZE)
register(tails.TPL)
register(inverse.INVERSE)
register(farms.FARMS)
register(uncertainty.UNCERTAINTY)
register(vectors.VECTORS)
register(panels.PANEL)  # last: the figure data reads the phase

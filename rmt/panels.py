"""The figure data of each layer, as JSON (``rmt.analyze(enable=["panel"])``, ``rmt.report``).

A report draws every layer's two pictures — the ESD with its MP fit and spikes, the tail
CCDF with its power-law fit (:func:`rmt.plot.plot_phase`) — in the browser, from these
numbers, so that a 300-layer model costs no matplotlib figure at all. They are computed
where the eigenvalues are (in the worker, in parallel runs) by the same functions the
figures use (:func:`rmt.plot.esd_histogram`, :func:`rmt.plot.mp_curve`,
:func:`rmt.plot.tail_ccdf`, :func:`rmt.plot.powerlaw_curve`), rounded to 5 significant
digits: about 5 kB per layer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from rmt.columns import Analysis, Column, LayerResult
from rmt.plot import _thin, esd_histogram, mp_curve, powerlaw_curve, tail_ccdf

__all__ = ["PANEL", "panel_data"]

#: Histogram bins, curve points and CCDF points kept per layer.
BINS, CURVE_POINTS, TAIL_POINTS, MAX_SPIKES = 60, 120, 240, 64


def _r(values: Any) -> list[float | None]:
    """Floats rounded to 5 significant digits (JSON has no NaN: None instead).

    Vectorised: k = round(v·10^p) for p = 4 − floor(log10|v|), then k/10^p (or k·10^−p),
    one correctly rounded operation by an exact power of ten, so each result is the double
    nearest to its 5-digit decimal and prints as that decimal.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v) & (v != 0)
    p = np.zeros(v.shape, dtype=np.int64)
    p[finite] = 4 - np.floor(np.log10(np.abs(v[finite]))).astype(np.int64)
    p = np.clip(p, -300, 300)
    out = np.where(v == 0, 0.0, v)
    up, down = finite & (p >= 0) & (p <= 22), finite & (p < 0) & (p >= -22)
    out[up] = np.round(v[up] * 10.0 ** p[up]) / 10.0 ** p[up]
    out[down] = np.round(v[down] / 10.0 ** -p[down]) * 10.0 ** -p[down]
    listed: list[float | None] = out.tolist()
    for i in np.flatnonzero(finite & ~up & ~down):  # beyond 10^±22: rare, by formatting
        listed[i] = float(f"{v[i]:.5g}")
    for i in np.flatnonzero(~np.isfinite(v)):
        listed[i] = None
    return listed


def _s(value: Any) -> float | None:
    """One float rounded to 5 significant digits (None when not finite)."""
    v = float(value)
    return float(f"{v:.5g}") if np.isfinite(v) else None


def _every(x: np.ndarray, y: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    index = _thin(x.size, keep)
    return x[index], y[index]


def panel_data(result: Any, powerlaw: Any = None) -> dict[str, Any]:
    """The two pictures of one layer's phase as plain numbers.

    Parameters
    ----------
    result : rmt.phases.PhaseResult
        The layer's classification (its fits and ESD).
    powerlaw : rmt.heavytail.PowerLawFit, optional
        The tail fit to draw (the row's ``alpha``); default the classifier's own, which
        differs from it when the row's tail is too short for the classifier.

    Returns
    -------
    dict
        ``phase``, ``reason``; ``esd``: histogram ``edges`` and ``density``, the MP curve
        (``mp_x``, ``mp_y``), ``lambda_minus``, ``lambda_plus``, ``sigma2``, ``Q``,
        ``spikes`` (at most 64 positions, clipped to the range) and ``n_spikes`` — or,
        without an MP fit, a histogram of log10 λ (``log10``: true); ``tail``: the CCDF
        (``x``, ``ccdf``) and the power-law curve (``fit_x``, ``fit_y``), ``alpha``,
        ``xmin``, ``D``, ``n_tail`` — or, for a rank collapse, the eigenvalue profile
        (``rank``, ``lambda``).
    """
    out: dict[str, Any] = {"phase": str(result.phase), "reason": result.reason}
    fit = result.mp_fit
    if fit is not None:
        edges, density, upper = esd_histogram(fit, BINS)
        xs, ys = mp_curve(fit, CURVE_POINTS)
        spikes = np.unique(np.minimum(np.asarray(fit.spikes, dtype=float), upper))
        out["esd"] = {"edges": _r(edges), "density": _r(density), "mp_x": _r(xs),
                      "mp_y": _r(ys), "lambda_minus": _s(fit.lambda_minus),
                      "lambda_plus": _s(fit.lambda_plus), "sigma2": _s(fit.sigma2),
                      "Q": _s(fit.Q), "n_spikes": int(fit.n_spikes),
                      "spikes": _r(spikes[-MAX_SPIKES:]), "n_evals": int(np.size(fit.evals))}
    else:
        ev = result.evals[result.evals > 0]
        counts, edges = (np.histogram(np.log10(ev), bins=BINS) if ev.size
                         else (np.zeros(0), np.zeros(0)))
        out["esd"] = {"edges": _r(edges), "density": _r(counts), "log10": True,
                      "n_evals": int(np.size(result.evals))}
    pl = powerlaw if powerlaw is not None else result.pl_fit
    if pl is not None and str(result.phase) != "rank-collapse":
        x, ccdf = _every(*tail_ccdf(pl), TAIL_POINTS)
        tail: dict[str, Any] = {"x": _r(x), "ccdf": _r(ccdf), "alpha": _s(pl.alpha),
                                "xmin": _s(pl.xmin), "D": _s(pl.D),
                                "n_tail": int(pl.n_tail)}
        curve = powerlaw_curve(pl, CURVE_POINTS)
        if curve is not None:
            tail.update(fit_x=_r(curve[0]), fit_y=_r(curve[1]))
        out["tail"] = tail
    else:
        ev = np.sort(result.evals)[::-1]
        index = _thin(ev.size, TAIL_POINTS)
        out["profile"] = {"rank": [int(i) + 1 for i in index],
                          "lambda": _r(np.maximum(ev[index], np.finfo(float).tiny))}
    return out


def _panel(layer: LayerResult, W: Any) -> dict[str, Any]:
    return panel_data(layer.results["phase"], layer.results.get("powerlaw"))


#: Registered by rmt.analyses (opt-in ``enable=["panel"]``; rmt.report turns it on).
PANEL = Analysis("panel", _panel, (
    Column("panel", "the layer's figure data as JSON: ESD histogram with the MP density and "
           "spikes, tail CCDF with the power-law curve (rmt.panels.panel_data; for "
           "rmt.report)", "", "rmt.panels.panel_data",
           lambda r, layer: json.dumps(r, separators=(",", ":"))),
), failure="no figure data", option="panel")

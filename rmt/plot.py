"""Plots (matplotlib, imported lazily; install the ``plot`` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(5, 4))
    return ax


def plot_powerlaw_fit(fit: Any, ax: Any = None, **kwargs: Any) -> Any:
    """Empirical CCDF of ``fit.data`` and the fitted power-law tail, log–log.

    Parameters
    ----------
    fit : rmt.heavytail.PowerLawFit
        The fit.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    **kwargs
        Passed to the data's ``step`` call.

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    data = fit.data
    n = data.size
    ccdf = 1.0 - np.arange(n) / n  # P(X >= x_i) at the sorted data
    kwargs.setdefault("color", "0.3")
    ax.step(data, ccdf, where="post", label=f"data (n={n})", **kwargs)
    if np.isfinite(fit.alpha):
        tail = fit.tail
        xs = np.geomspace(fit.xmin, tail[-1], 200)
        frac = tail.size / n
        if fit.xmax is None:
            model = frac * (xs / fit.xmin) ** (1.0 - fit.alpha)
        else:
            span = -np.expm1((1.0 - fit.alpha) * np.log(fit.xmax / fit.xmin))
            model = frac * (1.0 - (-np.expm1((1.0 - fit.alpha) * np.log(xs / fit.xmin))) / span)
        ax.plot(xs, model, color="C3", lw=2,
                label=f"power law α={fit.alpha:.3g} (D={fit.D:.3g}, n_tail={fit.n_tail})")
        ax.axvline(fit.xmin, color="C3", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("x")
    ax.set_ylabel("P(X ≥ x)")
    ax.legend(fontsize=8)
    return ax

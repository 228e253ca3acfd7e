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


def plot_mp_fit(fit: Any, ax: Any = None, bins: int = 100, **kwargs: Any) -> Any:
    """Histogram of the ESD with the fitted MP density, λ± and the spikes marked.

    Parameters
    ----------
    fit : rmt.mp.MPFit
        The fit.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on.
    bins : int
        Histogram bins over the bulk range.
    **kwargs
        Passed to ``hist``.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from rmt import mp

    ax = _axes(ax)
    ev = fit.evals
    upper = max(fit.lambda_plus * 1.2, float(np.max(ev)) if fit.n_spikes == 0 else
                fit.lambda_plus * 1.2)
    kwargs.setdefault("color", "0.7")
    kwargs.setdefault("histtype", "stepfilled")  # one patch instead of one per bin: fast
    ax.hist(ev[ev <= upper], bins=bins, density=True, label=f"ESD (M={fit.M})", **kwargs)
    xs = np.linspace(max(fit.lambda_minus * 0.9, 1e-12 * fit.lambda_plus), fit.lambda_plus, 400)
    scale = fit.sigma2
    ax.plot(xs, mp.pdf(xs, fit.Q, scale) * (fit.M - fit.n_spikes) / fit.M, color="C0", lw=2,
            label=f"MP σ²={fit.sigma2:.3g}, Q={fit.Q:.3g}")
    for edge in (fit.lambda_minus, fit.lambda_plus):
        ax.axvline(edge, color="C0", ls=":", lw=1)
    if fit.n_spikes:
        ax.plot(np.minimum(fit.spikes, upper), np.zeros(fit.n_spikes), "|", color="C3", ms=20,
                mew=2, label=f"{fit.n_spikes} spike(s) (TW fpr {fit.fpr:g})")
    ax.set_xlabel("λ")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax


def plot_phase(result: Any, axes: Any = None) -> Any:
    """The two pictures behind a phase: MP fit of the ESD and power-law fit of its tail.

    Parameters
    ----------
    result : rmt.phases.PhaseResult
        The classification.
    axes : sequence of two matplotlib Axes, optional

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes = np.asarray(axes).ravel()
    title = f"{result.phase}" + (f" ({result.sublabel})" if result.sublabel else "")
    if result.mp_fit is not None:
        plot_mp_fit(result.mp_fit, ax=axes[0])
    else:
        ev = result.evals[result.evals > 0]
        axes[0].hist(np.log10(ev), bins=80, color="0.7", histtype="stepfilled")
        axes[0].set_xlabel("log10 λ")
    if result.pl_fit is not None:
        plot_powerlaw_fit(result.pl_fit, ax=axes[1])
    else:  # rank-collapse: the eigenvalue profile shows the collapsed part
        ev = np.sort(result.evals)[::-1]
        axes[1].semilogy(np.arange(1, ev.size + 1), np.maximum(ev, np.finfo(float).tiny), ".",
                         ms=2, color="0.3")
        axes[1].set_xlabel("rank")
        axes[1].set_ylabel("λ")
    axes[0].set_title(title)
    axes[1].set_title(result.reason, fontsize=7, wrap=True)
    return axes


def save_layer_plot(result: Any, name: str, layer_id: int, directory: str) -> str:
    """Save the phase figure of one layer as ``<directory>/<layer_id>_<name>.png``."""
    import re
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    axes = plot_phase(result)
    fig = axes[0].figure
    fig.suptitle(f"{name}: {result.phase}", fontsize=10)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    path = str(Path(directory) / f"{layer_id:04d}_{safe}.png")
    fig.subplots_adjust(top=0.82, wspace=0.28)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


PHASE_COLORS = {"random-like": "#9e9e9e", "bleeding-out": "#64b5f6", "bulk+spikes": "#1e88e5",
                "bulk-decay": "#ffb300", "heavy-tailed": "#e53935", "rank-collapse": "#6d4c41",
                "failed": "#000000"}


def plot_model(df: Any, path: Any = None, axes: Any = None) -> Any:
    """Model summary: alpha per layer coloured by phase (left) and the phase counts (right).

    Parameters
    ----------
    df : pandas.DataFrame
        The result of :func:`rmt.analyze`.
    path : path, optional
        Save the figure there (PNG).
    axes : sequence of two matplotlib Axes, optional

    Returns
    -------
    numpy.ndarray of matplotlib Axes
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    axes = np.asarray(axes).ravel()
    phases = df["phase"].where(df["status"] == "success", "failed").fillna("failed")
    colors = [PHASE_COLORS.get(p, "#000000") for p in phases]
    x = np.arange(len(df))
    axes[0].scatter(x, df["alpha"].astype(float), c=colors, s=18)
    axes[0].axhline(2.0, color="0.6", ls=":", lw=1)
    axes[0].axhline(4.0, color="0.6", ls=":", lw=1)
    axes[0].set_xlabel("layer")
    axes[0].set_ylabel("alpha")
    axes[0].set_title("power-law alpha per layer, coloured by phase")
    counts = phases.value_counts()
    names = [p for p in PHASE_COLORS if p in counts]
    axes[1].barh(names, [counts[p] for p in names], color=[PHASE_COLORS[p] for p in names])
    axes[1].invert_yaxis()
    axes[1].set_xlabel("layers")
    if path is not None:
        axes[0].figure.savefig(path, dpi=90)
        plt.close(axes[0].figure)
    return axes

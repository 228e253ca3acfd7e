"""Plots (matplotlib, imported lazily; install the ``plot`` extra).

Every figure costs about the same whatever the layer's size: curves are thinned to at
most :data:`MAX_POINTS` points (log-spaced ranks, so the tails keep their resolution)
and spikes are drawn as one line collection, so a conv layer with 786,000 eigenvalues
and 100,000 spikes plots as fast as a small one.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

MAX_POINTS = 2000
# Longest layer name shown whole in a figure title; longer ones keep both ends.
TITLE_CHARS = 90


def _thin(n: int, keep: int = MAX_POINTS) -> np.ndarray:
    """At most ``keep`` indices into a sorted array of ``n`` values, log-spaced from both
    ends (first and last always kept), so both tails of a CCDF or rank plot stay exact."""
    if n <= keep:
        return np.arange(n)
    half = np.unique(np.geomspace(1, n, keep // 2).astype(np.int64)) - 1
    return np.unique(np.concatenate([half, n - 1 - half]))


def short_title(text: str, limit: int = TITLE_CHARS) -> str:
    """``text`` cut in the middle to ``limit`` characters (both ends of a layer name
    carry meaning: the block and the parameter)."""
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-(limit - 1 - keep):]}"


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(5, 4))
    return ax


def tail_ccdf(fit: Any) -> tuple[np.ndarray, np.ndarray]:
    """The empirical CCDF P(X ≥ x) of a power-law fit's data, thinned (:func:`_thin`).

    Parameters
    ----------
    fit : rmt.heavytail.PowerLawFit
        The fit.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        x (ascending) and the CCDF at x.
    """
    data = fit.data
    n = data.size
    shown = _thin(n)
    return data[shown], (1.0 - np.arange(n) / n)[shown]


def powerlaw_curve(fit: Any, points: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """The fitted tail's CCDF from xmin to the largest value (truncated when xmax is set),
    scaled by the tail's share of the data; None without a finite α.

    Parameters
    ----------
    fit : rmt.heavytail.PowerLawFit
        The fit.
    points : int
        Log-spaced points.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray) or None
    """
    if not np.isfinite(fit.alpha):
        return None
    tail = fit.tail
    xs = np.geomspace(fit.xmin, tail[-1], points)
    frac = tail.size / fit.data.size
    if fit.xmax is None:
        return xs, frac * (xs / fit.xmin) ** (1.0 - fit.alpha)
    span = -np.expm1((1.0 - fit.alpha) * np.log(fit.xmax / fit.xmin))
    return xs, frac * (1.0 - (-np.expm1((1.0 - fit.alpha) * np.log(xs / fit.xmin))) / span)


def esd_histogram(fit: Any, bins: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """The ESD's histogram over the MP bulk's range, as a density over *all* eigenvalues
    (so that it and :func:`mp_curve` share one normalisation).

    Parameters
    ----------
    fit : rmt.mp.MPFit
        The fit (its ``evals``).
    bins : int
        Bins.

    Returns
    -------
    (edges, density, upper)
        Bin edges, densities, and the range's upper end (1.2 λ₊ when spikes lie beyond).
    """
    ev = np.asarray(fit.evals)
    upper = max(fit.lambda_plus * 1.2, float(np.max(ev)) if fit.n_spikes == 0 else
                fit.lambda_plus * 1.2)
    counts, edges = np.histogram(ev[ev <= upper], bins=bins)
    return edges, counts / (ev.size * np.diff(edges)), upper


def mp_curve(fit: Any, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """The fitted MP density over its bulk, times the bulk's share (n − spikes)/n.

    Parameters
    ----------
    fit : rmt.mp.MPFit
        The fit.
    points : int
        Points from just below λ₋ to λ₊.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
    """
    from rmt import mp

    ev = np.asarray(fit.evals)
    xs = np.linspace(max(fit.lambda_minus * 0.9, 1e-12 * fit.lambda_plus), fit.lambda_plus,
                     points)
    bulk_share = max(ev.size - fit.n_spikes, 0) / ev.size
    return xs, mp.pdf(xs, fit.Q, fit.sigma2) * bulk_share


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
    x, ccdf = tail_ccdf(fit)
    kwargs.setdefault("color", "0.3")
    ax.step(x, ccdf, where="post", label=f"data (n={fit.data.size})", **kwargs)
    curve = powerlaw_curve(fit)
    if curve is not None:
        ax.plot(*curve, color="C3", lw=2,
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
        Passed to ``Axes.stairs`` (the histogram).

    Returns
    -------
    matplotlib.axes.Axes
    """
    ax = _axes(ax)
    ev = np.asarray(fit.evals)
    edges, density, upper = esd_histogram(fit, bins)
    slices = ev.size // fit.M if fit.M else 1
    what = f"{ev.size} eigenvalues" + (f" = {slices} slices x M={fit.M}" if slices > 1
                                       else f", M={fit.M}")
    ax.stairs(density, edges, fill=True, color=kwargs.pop("color", "0.7"),
              label=f"ESD ({what})", **kwargs)
    ax.plot(*mp_curve(fit), color="C0", lw=2, label=f"MP σ²={fit.sigma2:.3g}, Q={fit.Q:.3g}")
    for edge in (fit.lambda_minus, fit.lambda_plus):
        ax.axvline(edge, color="C0", ls=":", lw=1)
    if fit.n_spikes:
        spikes = np.unique(np.minimum(fit.spikes, upper))  # one tick per position
        top = float(density.max()) if density.size else 1.0
        ax.vlines(spikes, 0, 0.08 * top, color="C3", lw=1.5,
                  label=f"{fit.n_spikes} spike(s) (TW fpr {fit.fpr:g})"
                        + (f", {int((fit.spikes > upper).sum())} beyond {upper:.3g}"
                           if np.any(fit.spikes > upper) else ""))
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
    if result.pl_fit is not None and str(result.phase) != "rank-collapse":
        plot_powerlaw_fit(result.pl_fit, ax=axes[1])
    else:  # rank-collapse: the eigenvalue profile shows the collapsed part
        ev = np.sort(result.evals)[::-1]
        shown = _thin(ev.size)
        axes[1].semilogy(shown + 1, np.maximum(ev[shown], np.finfo(float).tiny), ".",
                         ms=2, color="0.3")
        axes[1].set_xlabel("rank")
        axes[1].set_ylabel("λ")
    axes[0].set_title(title)
    axes[1].set_title(textwrap.fill(result.reason, 80), fontsize=7)
    return axes


def save_layer_plot(result: Any, name: str, layer_id: int, directory: str) -> str:
    """Save the phase figure of one layer as ``<directory>/<layer_id>_<name>.png``.

    Draws on a bare :class:`matplotlib.figure.Figure` (no pyplot state), so it is safe
    on the background thread of :class:`BackgroundPlots`.
    """
    import re
    from pathlib import Path

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    axes = plot_phase(result, axes=fig.subplots(1, 2))
    fig.suptitle(short_title(f"{name}: {result.phase}"), fontsize=10)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:120]  # file names have a length limit
    path = str(Path(directory) / f"{layer_id:04d}_{safe}.png")
    fig.subplots_adjust(top=0.80, wspace=0.28)
    for ax in axes:  # minor ticks of log axes are a third of the drawing time
        ax.minorticks_off()
    fig.savefig(path, dpi=80)
    return path


class BackgroundPlots:
    """Draw layer figures on one background thread, so an analysis never waits on them.

    While one is active (``with BackgroundPlots(): ...``), :func:`queue_layer_plot` calls
    made in the process that opened it are queued to its thread; anywhere else (a worker
    process of a parallel run) they draw inline. Rendering is Python-bound while the
    analysis spends its time in LAPACK and Numba, which release the GIL, so the two
    overlap; the queue holds at most :data:`QUEUE_SIZE` figures, so memory stays bounded
    and a slow disk slows the analysis instead of filling memory. A figure that fails is
    reported as one warning at the end; it never fails its layer.
    """

    QUEUE_SIZE = 8
    _active: BackgroundPlots | None = None

    def __init__(self) -> None:
        import os
        import queue

        self.pid = os.getpid()
        self.jobs: queue.Queue[tuple[Any, ...] | None] = queue.Queue(self.QUEUE_SIZE)
        self.failures: list[str] = []
        self._thread: Any = None

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                save_layer_plot(*job)
            except Exception as err:  # a bad figure must not stop the others
                self.failures.append(f"{job[1]}: {type(err).__name__}: {err}")

    def __enter__(self) -> BackgroundPlots:
        import threading

        self._thread = threading.Thread(target=self._run, name="rmt-plots", daemon=True)
        self._thread.start()
        BackgroundPlots._active = self
        return self

    def __exit__(self, *exc: Any) -> None:
        BackgroundPlots._active = None
        self.jobs.put(None)
        self._thread.join()
        if self.failures:
            import warnings

            warnings.warn(f"{len(self.failures)} layer plot(s) failed; first: "
                          f"{self.failures[0][:300]}", stacklevel=2)


def queue_layer_plot(result: Any, name: str, layer_id: int, directory: str) -> str | None:
    """Save a layer's figure: queued to the active :class:`BackgroundPlots` of this
    process, else drawn now. Returns why drawing failed (inline only), else None."""
    import os

    active = BackgroundPlots._active
    if active is not None and active.pid == os.getpid():
        active.jobs.put((result, name, layer_id, directory))
        return None
    try:
        save_layer_plot(result, name, layer_id, directory)
    except Exception as err:
        return f"plot failed: {type(err).__name__}: {str(err)[:200]}"
    return None


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
    # x is the tensor's position in the checkpoint (rows of a stacked tensor share it)
    x = (df["layer_id"].to_numpy(dtype=float) if "layer_id" in df
         else np.arange(len(df), dtype=float))
    alpha = df["alpha"].astype(float).to_numpy()
    axes[0].scatter(x, alpha, c=colors, s=18)
    if x.size:
        pad = max(1.0, 0.02 * (x.max() - x.min()))
        axes[0].set_xlim(x.min() - pad, x.max() + pad)
    axes[0].axhline(2.0, color="0.6", ls=":", lw=1)
    axes[0].axhline(4.0, color="0.6", ls=":", lw=1)
    axes[0].set_xlabel("layer id (position in the checkpoint)")
    axes[0].set_ylabel("alpha")
    axes[0].set_title("power-law alpha per layer, coloured by phase")
    counts = phases.value_counts()
    names = [p for p in PHASE_COLORS if p in counts]
    axes[1].barh(names, [counts[p] for p in names], color=[PHASE_COLORS[p] for p in names])
    axes[1].invert_yaxis()
    axes[1].set_xlabel("rows")
    axes[0].figure.tight_layout()
    if path is not None:
        axes[0].figure.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(axes[0].figure)
    return axes


def plot_spectral_density(density: Any, ax: Any = None, bandwidth: float | str | None = None,
                          **kwargs: Any) -> Any:
    """An SLQ Hessian density: smoothed on a log-y axis, with the quadrature nodes as a rug.

    Parameters
    ----------
    density : rmt.hessian.SpectralDensity
        From :func:`rmt.hessian.slq`.
    ax : matplotlib.axes.Axes, optional
        Where to draw; default a new figure.
    bandwidth : float, "adaptive", "papyan" or None
        Gaussian smoothing (default ``density.pdf``'s: each node's local spacing,
        capped at width/k).
    **kwargs
        Passed to the density's line.

    Returns
    -------
    matplotlib.axes.Axes
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 3.5))
    pad = 0.02 * max(density.width, 1e-12)
    # the nodes themselves too: a narrow kernel (a cluster of nodes at 0) peaks there
    xs = np.union1d(np.linspace(density.nodes[0] - pad, density.nodes[-1] + pad, 2000),
                    density.nodes)
    ax.semilogy(xs, np.maximum(density.pdf(xs, bandwidth), 1e-12), **kwargs)
    ax.plot(density.nodes, np.full(density.nodes.size, 1e-12), "|", color="0.4")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"SLQ: {density.n_probes} probes × {density.lanczos_degree} steps, "
                 f"index {density.negative_fraction():.4f} "
                 + ("∈ [{:.4f}, {:.4f}]".format(*density.index_bounds())
                    if density.tridiagonals else ""))
    return ax


def save_energy_plot(summary: Any, path: Any, label: str = "minima") -> None:
    """Minimiser energy against ϕ with Pennington & Bahri's ½(1 − ϕ)² (``rmt energy --plot``).

    Parameters
    ----------
    summary : pandas.DataFrame
        One row per ϕ with ``phi_actual``, ``energy_mean`` and ``energy_sd``.
    path : path
        PNG to write.
    label : str
        Legend entry of the measured points.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    grid = np.linspace(0, 1, 200)
    ax.plot(grid, 0.5 * (1 - grid) ** 2, label="½(1−ϕ)² (Pennington & Bahri)")
    ax.plot(grid, 0.5 * (1 - grid), ls="--", label="½(1−ϕ) (linear model)")
    ax.errorbar(summary["phi_actual"], summary["energy_mean"], yerr=summary["energy_sd"],
                fmt="o", color="k", label=label)
    ax.set_xlabel("ϕ = P/(n_out·m)")
    ax.set_ylabel("minimiser energy ε")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_trajectory(df: Any, directory: Any, *, max_lines: int = 24) -> list[str]:
    """Figures of a :func:`rmt.track` table: α as a layer × step heatmap, α(step) per
    layer, and the phases over training.

    Parameters
    ----------
    df : pandas.DataFrame
        From :func:`rmt.track`.
    directory : path
        Where ``alpha_heatmap.png``, ``alpha_lines.png`` and ``phases.png`` are written
        (created if needed).
    max_lines : int, default 24
        Layers drawn in ``alpha_lines.png`` (those whose α moved most).

    Returns
    -------
    list of str
        The files written.
    """
    import os

    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    os.makedirs(directory, exist_ok=True)
    ok = df[(df["status"] == "success") & (df["name"].astype(str) != "")]
    order = list(dict.fromkeys(ok["name"]))
    steps = sorted(ok["step"].unique())
    alpha = ok.pivot_table(index="name", columns="step", values="alpha",
                           aggfunc="first").reindex(index=order, columns=steps)
    phase = ok.pivot_table(index="name", columns="step", values="phase",
                           aggfunc="first").reindex(index=order, columns=steps)
    labels = [short_title(n, 48) for n in order]
    height = min(0.22 * len(order) + 1.5, 40)
    written = []

    fig, ax = plt.subplots(figsize=(min(0.35 * len(steps) + 4, 24), height))
    image = ax.imshow(np.clip(alpha.to_numpy(dtype=float), 1, 8), aspect="auto",
                      cmap="viridis_r", interpolation="nearest", vmin=1, vmax=8)
    fig.colorbar(image, ax=ax, label="alpha (clipped to [1, 8]); < 2: over-trained")
    _step_axes(ax, steps, labels)
    ax.set_title("power-law alpha per layer over training")
    written.append(_save(fig, os.path.join(directory, "alpha_heatmap.png")))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    moved = (alpha.max(axis=1) - alpha.min(axis=1)).sort_values(ascending=False)
    for name in moved.index[:max_lines]:
        ax.plot(steps, alpha.loc[name].to_numpy(dtype=float), marker=".", lw=1,
                label=short_title(name, 40))
    ax.axhline(2.0, color="0.4", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("alpha")
    ax.set_title(f"alpha(step), the {min(max_lines, len(moved))} layers that moved most")
    if len(moved):
        ax.legend(fontsize=6, ncol=2, loc="best")
    written.append(_save(fig, os.path.join(directory, "alpha_lines.png")))

    names = list(PHASE_COLORS)
    codes = phase.apply(lambda col: col.map({p: i for i, p in enumerate(names)}))
    fig, ax = plt.subplots(figsize=(min(0.35 * len(steps) + 4, 24), height))
    ax.imshow(codes.to_numpy(dtype=float), aspect="auto", interpolation="nearest",
              cmap=ListedColormap([PHASE_COLORS[p] for p in names]), vmin=-0.5,
              vmax=len(names) - 0.5)
    _step_axes(ax, steps, labels)
    present = [p for p in names if (phase == p).any().any()]
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p]) for p in present],
              labels=present, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("phase per layer over training")
    written.append(_save(fig, os.path.join(directory, "phases.png")))
    return written


def _step_axes(ax: Any, steps: list[Any], labels: list[str]) -> None:
    every = max(1, len(steps) // 20)
    ax.set_xticks(range(0, len(steps), every))
    ax.set_xticklabels([str(s) for s in steps[::every]], rotation=90, fontsize=7)
    every = max(1, len(labels) // 60)
    ax.set_yticks(range(0, len(labels), every))
    ax.set_yticklabels(labels[::every], fontsize=6)
    ax.set_xlabel("step")


def _save(fig: Any, path: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path

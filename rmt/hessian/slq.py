"""Stochastic Lanczos quadrature (SLQ): spectral densities from matrix-vector products.

Each probe v gives, through k Lanczos steps, a k-point Gauss quadrature of the measure
μ_v = Σ_i (u_iᵀv)² δ(λ_i): nodes θ_j (Ritz values) and weights τ_j (squared first
components of T's eigenvectors). Averaging probes estimates the spectral measure
(1/n) Σ δ(λ_i).

The index (fraction of eigenvalues below 0) comes with an interval: the moments of each
probe's measure that k steps fix (2k + 1 of them, with the last residual norm) bound its
mass below 0 by the Gauss–Radau rule through 0 (``rmt.hessian.quadrature``), and the mean
of those bounds holds the probes' mean for every spectrum the quadrature cannot tell from
the true one. The point estimate is the Gauss rule's own mass below 0 (the step CDF),
kept inside that interval. On the Hessian of a trained network most eigenvalues sit in a
cluster within ~λ_max/k² of 0, where no degree-2k polynomial resolves their sign: the
interval is then wide (it is the honest answer) and any point estimate is a guess; an
interpolated CDF, used before, split that cluster's node across 0: better than the step
CDF on smooth spectra, worse on the trained networks where the two differed
(docs/guide.md, "Hessian spectra").

References
----------
G. H. Golub and G. Meurant, Matrices, Moments and Quadrature with Applications (2010).
L. Lin, Y. Saad and C. Yang, SIAM Review 58(1), 34–65 (2016).
B. Ghorbani, S. Krishnan and Y. Xiao, ICML 2019 (Hessian spectra of neural networks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from rmt import config
from rmt.hessian.lanczos import EPS, Orthogonalize, lanczos
from rmt.hessian.operators import as_operator
from rmt.hessian.smoothing import Bandwidth, mixture_cdf, mixture_pdf, node_widths

__all__ = ["BASIS_BYTES", "SpectralDensity", "slq", "wasserstein"]

BASIS_BYTES = 1 << 30  # orthogonalize="auto": the largest Lanczos basis kept (1 GiB)


@dataclass(frozen=True, eq=False)
class SpectralDensity:
    """A spectral measure as a weighted point set (Gauss quadrature nodes over probes).

    Attributes
    ----------
    nodes : numpy.ndarray
        All Ritz values of all probes, ascending.
    weights : numpy.ndarray
        Their weights (each probe's sum to 1/n_probes; all sum to 1).
    n_matvecs : int
        Operator applications spent.
    lanczos_degree, n_probes : int
        Settings used.
    probes : list of (numpy.ndarray, numpy.ndarray)
        Each probe's Ritz values and quadrature weights.
    tridiagonals : list of (numpy.ndarray, numpy.ndarray, float)
        Each probe's Lanczos (alpha, beta, beta_last), for the Gauss–Radau bounds.
    dimension : int
        The operator's order n (0 when unknown).
    orthogonalize : str
        The re-orthogonalisation scheme the probes ran with.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvecs: int
    lanczos_degree: int
    n_probes: int
    probes: list[tuple[np.ndarray, np.ndarray]] = field(repr=False)
    tridiagonals: list[tuple[np.ndarray, np.ndarray, float]] = field(repr=False,
                                                                     default_factory=list)
    dimension: int = 0
    orthogonalize: str = "full"

    @property
    def width(self) -> float:
        """Spectral width estimated by the extreme Ritz values."""
        return float(self.nodes[-1] - self.nodes[0])

    def cdf(self, x: Any) -> np.ndarray:
        """The quadrature's CDF, μ((−∞, x]): the step function of the nodes and weights.

        Parameters
        ----------
        x : array_like
            Points.

        Returns
        -------
        numpy.ndarray
            Estimated F(x) in [0, 1] (float64).
        """
        x = np.asarray(x, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        return np.minimum(cum[np.searchsorted(self.nodes, x, side="right")], 1.0)

    def _threshold(self, threshold: float | None) -> float:
        """−tol of :func:`rmt.hessian.negative_fraction` (the round-off of exact zeros is
        not negative) unless a threshold is given."""
        if threshold is not None:
            return float(threshold)
        scale = float(np.abs(self.nodes).max())
        return -config.INDEX_EPS_FACTOR * max(self.dimension, 1) * EPS * scale

    def index_bounds(self, threshold: float | None = None) -> tuple[float, float]:
        """Bounds on the probes' estimate of the share of eigenvalues below ``threshold``.

        Each probe's Gauss–Radau rule through ``threshold`` brackets the probe's mass below
        it for every spectrum with the same 2k + 1 moments (``rmt.hessian.quadrature``);
        the bounds are the means over probes. They hold the mean of the probes' exact
        values, so they bracket the true index up to the probes' own (Hutchinson) noise,
        of standard deviation at most √(2·index/n) per probe for Rademacher probes. The
        width is the mass the quadrature cannot put on either side: raise
        ``lanczos_degree`` to shrink it.

        Parameters
        ----------
        threshold : float, optional
            The point; default −n·eps·max|θ| (times ``rmt.config.INDEX_EPS_FACTOR``), the
            tolerance of the exact :func:`rmt.hessian.index`, so both count the same.

        Returns
        -------
        lower, upper : float
            In [0, 1], lower ≤ upper.
        """
        from rmt.hessian.quadrature import radau_bounds

        if not self.tridiagonals:
            raise ValueError("this SpectralDensity keeps no Lanczos tridiagonals (made by hand?): "
                             "the Gauss–Radau bounds need them")
        xi = self._threshold(threshold)
        pairs = np.array([radau_bounds(a, b, b_last, xi) for a, b, b_last in self.tridiagonals])
        return float(pairs[:, 0].mean()), float(pairs[:, 1].mean())

    def negative_fraction(self, threshold: float | None = None) -> float:
        """Estimated fraction of negative eigenvalues (the index).

        Each probe's Gauss-rule mass below the threshold, kept inside that probe's
        Gauss–Radau bounds, averaged over probes; :meth:`index_bounds` says how far it can
        be off.

        Parameters
        ----------
        threshold : float, optional
            As in :meth:`index_bounds`.

        Returns
        -------
        float
        """
        from rmt.hessian.quadrature import radau_bounds

        xi = self._threshold(threshold)
        values = [float(tau[theta < xi].sum()) for theta, tau in self.probes]
        if self.tridiagonals:  # each probe's value kept inside its own bounds
            for i, tri in enumerate(self.tridiagonals):
                lower, upper = radau_bounds(*tri, xi)
                values[i] = min(max(values[i], lower), upper)
        return float(np.mean(values))

    def _mixture(self, bandwidth: Bandwidth, kappa: float,
                 transform: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probes = self.probes or [(self.nodes, self.weights)]
        if transform is not None:
            probes = [(transform(t), w) for t, w in probes]
        return node_widths(probes, self.lanczos_degree, bandwidth, kappa=kappa)

    def pdf(self, x: Any, bandwidth: Bandwidth = None, *, kappa: float = 3.0) -> np.ndarray:
        """Gaussian-smoothed density at ``x``.

        Parameters
        ----------
        x : array_like
            Points.
        bandwidth : float, "adaptive", "papyan" or None
            The kernel: a fixed standard deviation; by default (None, "adaptive") each
            node's mean gap to its neighbours in its probe, capped at width/k — the
            resolution the quadrature has there; or Papyan's fixed width
            (:mod:`rmt.hessian.smoothing`).
        kappa : float, default 3.0
            Papyan's κ (> 1; larger is narrower), for "papyan".

        Returns
        -------
        numpy.ndarray
            Density at ``x`` (float64; integrates to 1).
        """
        return mixture_pdf(x, *self._mixture(bandwidth, kappa))

    def smoothed_cdf(self, x: Any, bandwidth: Bandwidth = None, *,
                     kappa: float = 3.0) -> np.ndarray:
        """The CDF of :meth:`pdf`'s density (the step CDF is :meth:`cdf`).

        Parameters
        ----------
        x : array_like
            Points.
        bandwidth : float, "adaptive", "papyan" or None
            As in :meth:`pdf`.
        kappa : float, default 3.0
            As in :meth:`pdf`.

        Returns
        -------
        numpy.ndarray
            In [0, 1] (float64).
        """
        return mixture_cdf(x, *self._mixture(bandwidth, kappa))

    def log_pdf(self, t: Any, bandwidth: Bandwidth = None, *, epsilon: float = 1e-5,
                kappa: float = 1.04) -> np.ndarray:
        """Papyan's log-spectrum: the smoothed density of u = ln(|λ| + ε) at ``t``.

        Each node θ becomes ln(|θ| + ε) with its weight, and the kernel acts on that
        axis, so a spectrum spanning many decades (a Hessian's bulk at 0 and outliers at
        λ_max) is resolved on each. The density of |λ| + ε itself at x is
        ``log_pdf(log(x)) / x``.

        Parameters
        ----------
        t : array_like
            Points on the ln axis.
        bandwidth : float, "adaptive", "papyan" or None
            As in :meth:`pdf`, on the ln axis.
        epsilon : float, default 1e-5
            The shift ε > 0 (Papyan's and curvlinops' default): eigenvalues below it in
            magnitude pile up at ln ε. Choose it relative to λ_max.
        kappa : float, default 1.04
            Papyan's κ for the log-spectrum (curvlinops' default).

        Returns
        -------
        numpy.ndarray
            Density per unit of ln(|λ| + ε) (float64; integrates to 1 over t).

        Raises
        ------
        ValueError
            ``epsilon`` not positive.
        """
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        return mixture_pdf(t, *self._mixture(bandwidth, kappa,
                                             lambda theta: np.log(np.abs(theta) + epsilon)))

    def wasserstein(self, other: Any) -> float:
        """W1 distance to another measure: a SpectralDensity, or exact eigenvalues (an
        array, equal weights). Uses the quadrature measures themselves (step CDFs).

        Parameters
        ----------
        other : SpectralDensity or array_like
            The other measure.

        Returns
        -------
        float
        """
        if isinstance(other, SpectralDensity):
            return wasserstein(self.nodes, self.weights, other.nodes, other.weights)
        ev = np.sort(np.asarray(other, dtype=np.float64).ravel())
        return wasserstein(self.nodes, self.weights, ev, np.full(ev.size, 1.0 / ev.size))

    def plot(self, ax: Any = None, bandwidth: Bandwidth = None, **kwargs: Any) -> Any:
        """Smoothed density on a log-y axis, with the nodes as a rug.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Where to draw; default a new figure.
        bandwidth : float, optional
            Gaussian smoothing width (default as in :meth:`pdf`).
        **kwargs
            Passed to the density's line.

        Returns
        -------
        matplotlib.axes.Axes
        """
        from rmt.plot import plot_spectral_density

        return plot_spectral_density(self, ax=ax, bandwidth=bandwidth, **kwargs)


def wasserstein(x1: np.ndarray, w1: np.ndarray, x2: np.ndarray, w2: np.ndarray) -> float:
    """W1 = ∫|F₁ − F₂| between two weighted point sets on the real line.

    Parameters
    ----------
    x1, x2 : numpy.ndarray
        Support points.
    w1, w2 : numpy.ndarray
        Their weights (each summing to 1).

    Returns
    -------
    float
    """
    o1, o2 = np.argsort(x1), np.argsort(x2)
    x1, w1, x2, w2 = x1[o1], w1[o1], x2[o2], w2[o2]
    grid = np.union1d(x1, x2)
    F1 = np.searchsorted(x1, grid, side="right")
    F2 = np.searchsorted(x2, grid, side="right")
    c1 = np.concatenate([[0.0], np.cumsum(w1)])[F1]
    c2 = np.concatenate([[0.0], np.cumsum(w2)])[F2]
    return float(np.sum(np.abs(c1 - c2)[:-1] * np.diff(grid)))


def slq(
    op: Any,
    *,
    lanczos_degree: int = 80,
    n_probes: int = 4,
    rng: Any = None,
    orthogonalize: Orthogonalize | Literal["auto"] = "auto",
    probe: Literal["rademacher", "gaussian"] = "rademacher",
) -> SpectralDensity:
    """Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    Parameters
    ----------
    op : LinearOperator or object with ``shape`` and ``matvec``
        Symmetric n×n operator (e.g. a Hessian from ``rmt.hessian.mlp``).
    lanczos_degree : int, default 80
        Lanczos steps per probe.
    n_probes : int, default 4
        Random starting vectors; matvecs = lanczos_degree·n_probes.
    rng : None, int or numpy.random.Generator
        Random source of the probes.
    orthogonalize : {"auto", "full", "partial", "none"}, default "auto"
        Re-orthogonalisation (see :func:`rmt.hessian.lanczos`). "full" and "partial"
        keep the k×n basis (float64); "none" keeps three vectors. "auto" is "full" when
        the basis takes at most ``BASIS_BYTES`` (1 GiB: k = 80 up to n ≈ 1.7M) and
        "none" above: the density is as accurate without re-orthogonalisation (ghost
        copies of converged Ritz values share their weight), the index interval wider
        (docs/guide.md). The scheme used is the result's ``orthogonalize``.
    probe : {"rademacher", "gaussian"}
        Probe distribution (normalised).

    Returns
    -------
    SpectralDensity

    Notes
    -----
    Measured on Hessian-like spectra (n = 10⁴, a bulk near 0 with ~2% negative mass and
    outliers): W1/width ≈ 0.29/k + 4e-3/√n_probes (docs/science.md §7); the goals
    W1 ≤ 5e-3·width and |Δindex| ≤ 0.005 at 320 matvecs are checked in the tests.
    """
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    op = as_operator(op)
    n = op.shape[0]
    rng = np.random.default_rng(rng)
    k = min(int(lanczos_degree), n)
    if orthogonalize == "auto":
        orthogonalize = "full" if k * n * 8 <= BASIS_BYTES else "none"
    probes, tridiagonals = [], []
    for _ in range(int(n_probes)):
        v = rng.choice([-1.0, 1.0], size=n) if probe == "rademacher" else rng.standard_normal(n)
        res = lanczos(op, k, v0=v, orthogonalize=orthogonalize, rng=rng)
        theta, tau = res.ritz()
        probes.append((theta, tau / tau.sum()))
        tridiagonals.append((res.alpha, res.beta, res.beta_last))
    nodes = np.concatenate([t for t, _ in probes])
    weights = np.concatenate([w for _, w in probes]) / len(probes)
    order = np.argsort(nodes)
    return SpectralDensity(nodes=nodes[order], weights=weights[order],
                           n_matvecs=k * int(n_probes), lanczos_degree=k,
                           n_probes=int(n_probes), probes=probes, tridiagonals=tridiagonals,
                           dimension=n, orthogonalize=orthogonalize)

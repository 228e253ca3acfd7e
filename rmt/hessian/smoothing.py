"""Smoothing SLQ's quadrature nodes into a density: kernel widths, on λ and on log|λ|.

A k-point Gauss rule resolves a spectrum only down to the spacing of its nodes, and
that spacing follows the spectrum: close where the eigenvalues crowd (the cluster at 0
of a trained network's Hessian), wide around outliers — each weight τ_j is about the
density at θ_j times the local spacing. So the default kernel (``"adaptive"``) is a
Gaussian per node whose standard deviation is the node's mean gap to its neighbours in
its own probe, capped at width/k (the fixed width used before, so it is never wider,
only narrower where the nodes crowd). Measured (docs/guide.md, ``benchmarks.hessian``):
on the Hessians of MLPs trained on digits the smoothed density's W1/width is that of
the bare nodes (2.3e-3 at 80 × 4) where width/k gave 9.2e-3 and Papyan's width 4.0e-3;
on a Marchenko–Pastur spectrum its L1 distance to the law is that of width/k (0.07 at
80 × 4) where Papyan's width, narrower than the node spacing there, gives 0.22.

Papyan's width (``"papyan"``; Papyan 2020, as curvlinops implements it): the spectrum
``[λmin, λmax]`` padded by ``margin`` on each side is mapped onto [−1, 1], and the
Gaussian's standard deviation there is ``2 / (k − 1) / sqrt(8 ln κ)`` — at one node
spacing of a uniform grid the kernel has fallen to κ⁻⁴ of its peak. κ = 3 for the
spectrum and 1.04 (wider) for the log-spectrum, curvlinops' defaults.

References
----------
V. Papyan, "Traces of class/cross-class structure pervade deep learning spectra",
JMLR 21 (2020), Algorithm 2 and §D.
L. Lin, Y. Saad and C. Yang, SIAM Review 58(1), 34–65 (2016).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import ndtr

__all__ = ["Bandwidth", "mixture_cdf", "mixture_pdf", "node_widths", "papyan_width"]

Bandwidth = float | str | None  # a width, "adaptive" (None) or "papyan"

_FLOOR = 1e-3  # adaptive widths stay above this share of Papyan's (coincident nodes)


def papyan_width(span: float, lanczos_degree: int, *, kappa: float = 3.0,
                 margin: float = 0.05) -> float:
    """Papyan's Gaussian width for nodes spread over ``span``.

    Parameters
    ----------
    span : float
        λmax − λmin (of the nodes, or of the operator when known).
    lanczos_degree : int
        Nodes per probe, k.
    kappa : float, default 3.0
        Papyan's κ > 1; larger is narrower.
    margin : float, default 0.05
        Padding of the span on each side, as a share of it.

    Returns
    -------
    float
        The standard deviation on the λ axis.

    Raises
    ------
    ValueError
        ``kappa`` not above 1.
    """
    if not kappa > 1:
        raise ValueError(f"kappa must be above 1, got {kappa!r}")
    half = span * (1 + 2 * margin) / 2  # d of [−1, 1] ↦ padded span
    return half * 2 / max(int(lanczos_degree) - 1, 1) / np.sqrt(8 * np.log(kappa))


def node_widths(probes: Sequence[tuple[np.ndarray, np.ndarray]], lanczos_degree: int,
                bandwidth: Bandwidth = None, *, kappa: float = 3.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each node's kernel width, with the nodes and their weights.

    Parameters
    ----------
    probes : sequence of (nodes, weights)
        Each probe's Gauss rule (weights summing to 1 per probe).
    lanczos_degree : int
        k, for Papyan's width.
    bandwidth : float, "adaptive", "papyan" or None
        A fixed width, the adaptive rule (None, the default), or Papyan's width.
    kappa : float, default 3.0
        Papyan's κ, for "papyan" (and for the adaptive rule's floor).

    Returns
    -------
    nodes, weights, widths : numpy.ndarray
        Concatenated over probes; weights sum to 1.

    Raises
    ------
    ValueError
        An unknown rule or a width that is not positive.
    """
    nodes = np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in probes])
    weights = np.concatenate([np.asarray(w, dtype=np.float64) for _, w in probes]) / len(probes)
    span = float(nodes.max() - nodes.min())
    scale = max(float(np.abs(nodes).max()), np.finfo(np.float64).tiny)
    fixed = papyan_width(span, lanczos_degree, kappa=kappa) if span > 0 else 1e-3 * scale
    if bandwidth == "papyan":
        return nodes, weights, np.full(nodes.size, fixed)
    if bandwidth is not None and bandwidth != "adaptive":
        if isinstance(bandwidth, str) or not float(bandwidth) > 0:
            raise ValueError("bandwidth must be a positive width, 'adaptive' or 'papyan', "
                             f"got {bandwidth!r}")
        return nodes, weights, np.full(nodes.size, float(bandwidth))
    widths = []
    for theta, _ in probes:
        theta = np.asarray(theta, dtype=np.float64)
        order = np.argsort(theta, kind="stable")
        gaps = np.diff(theta[order])
        if gaps.size == 0:
            local = np.full(theta.size, fixed)
        else:  # the mean of the gaps on either side (one side at the ends)
            left, right = np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]]
            local = np.empty(theta.size)
            local[order] = 0.5 * (left + right)
        widths.append(np.clip(local, _FLOOR * fixed, max(span / max(int(lanczos_degree), 1),
                                                         _FLOOR * fixed)))
    return nodes, weights, np.concatenate(widths)


_CHUNK = 1 << 21  # points × nodes evaluated at once (16 MiB of float64)


def _mixture(x: Any, nodes: np.ndarray, term: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    flat = x.reshape(-1)
    out = np.empty(flat.size)
    step = max(1, _CHUNK // max(nodes.size, 1))
    for start in range(0, flat.size, step):
        out[start:start + step] = term(flat[start:start + step, None]).sum(axis=-1)
    return out.reshape(x.shape)


def mixture_pdf(x: Any, nodes: np.ndarray, weights: np.ndarray,
                widths: np.ndarray) -> np.ndarray:
    """Σ_j w_j N(x; θ_j, h_j²) at ``x`` (float64).

    Parameters
    ----------
    x : array_like
        Points.
    nodes, weights, widths : numpy.ndarray
        The mixture (:func:`node_widths`).

    Returns
    -------
    numpy.ndarray
        The density, shaped like ``x``.
    """
    scaled = weights / (widths * np.sqrt(2 * np.pi))
    return _mixture(x, nodes, lambda p: scaled * np.exp(-0.5 * ((p - nodes) / widths) ** 2))


def mixture_cdf(x: Any, nodes: np.ndarray, weights: np.ndarray,
                widths: np.ndarray) -> np.ndarray:
    """Σ_j w_j Φ((x − θ_j)/h_j) at ``x`` (float64).

    Parameters
    ----------
    x : array_like
        Points.
    nodes, weights, widths : numpy.ndarray
        The mixture (:func:`node_widths`).

    Returns
    -------
    numpy.ndarray
        The CDF in [0, 1], shaped like ``x``.
    """
    return np.minimum(_mixture(x, nodes, lambda p: weights * ndtr((p - nodes) / widths)), 1.0)

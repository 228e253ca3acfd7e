"""Per-block Hessian (or Gauss–Newton) spectra of a torch model, and their heterogeneity.

A block is a group of parameters; its curvature matrix is the diagonal block H_BB of the
full one (the other parameters held fixed), whose spectrum SLQ estimates from products
with H_BB alone. Zhang et al. (2024) found that Transformers' blocks have very different
spectra where CNNs' are alike, and measured it by the Jensen–Shannon distance between
the blocks' smoothed spectral densities; :func:`block_spectra` reports those distances
and their mean over pairs (their JS⁰ when taken at initialisation).

References
----------
Y. Zhang, C. Chen, T. Ding, Z. Li, R. Sun and Z.-Q. Luo, "Why Transformers need Adam: a
Hessian perspective", NeurIPS 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
import pandas as pd

from rmt.hessian.slq import SpectralDensity, slq

__all__ = ["BlockSpectra", "block_spectra", "default_groups", "js_distances"]

Curvature = Literal["hessian", "ggn", "fisher", "empirical_fisher"]


def default_groups(model: Any) -> dict[str, list[str]]:
    """One block per module that owns trainable parameters (a layer's weight and bias).

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    dict of str to list of str
        Module name (``"<root>"`` for parameters of the model itself) → parameter names,
        in model order.
    """
    groups: dict[str, list[str]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            owner = name.rsplit(".", 1)[0] if "." in name else "<root>"
            groups.setdefault(owner, []).append(name)
    return groups


def js_distances(densities: Mapping[str, SpectralDensity], *, grid_points: int = 4001,
                 bandwidth: float | None = None) -> pd.DataFrame:
    """Pairwise Jensen–Shannon distances between spectral densities on one grid.

    Each density is its Gaussian-smoothed quadrature (:meth:`SpectralDensity.pdf`) on a
    common grid over all nodes, normalised to a probability vector; the distance is
    ``scipy.spatial.distance.jensenshannon`` in base 2 (the square root of the JS
    divergence, in [0, 1]).

    Parameters
    ----------
    densities : mapping of str to SpectralDensity
        The blocks' densities.
    grid_points : int, default 4001
        Grid size.
    bandwidth : float, optional
        Kernel width, one for all blocks (the scale differences are part of what is
        compared); default the common width over the largest Lanczos degree.

    Returns
    -------
    pandas.DataFrame
        Square, symmetric, zero diagonal, indexed and columned by block.
    """
    from scipy.spatial.distance import jensenshannon

    names = list(densities)
    lo = min(float(d.nodes[0]) for d in densities.values())
    hi = max(float(d.nodes[-1]) for d in densities.values())
    degree = max(d.lanczos_degree for d in densities.values())
    h = bandwidth if bandwidth is not None else max(hi - lo, 1e-300) / degree
    grid = np.linspace(lo - 4 * h, hi + 4 * h, int(grid_points))
    probs = {}
    for name, d in densities.items():
        p = d.pdf(grid, bandwidth=h)
        probs[name] = p / p.sum()
    out = pd.DataFrame(0.0, index=names, columns=names)
    for a, b in combinations(names, 2):
        out.loc[a, b] = out.loc[b, a] = float(jensenshannon(probs[a], probs[b], base=2))
    return out


@dataclass(frozen=True, eq=False)
class BlockSpectra:
    """The per-block spectra of a curvature matrix.

    Attributes
    ----------
    densities : dict of str to SpectralDensity
        Each block's SLQ density.
    table : pandas.DataFrame
        One row per block: ``block``, ``n_params``, ``lambda_max`` and ``lambda_min``
        (extreme Ritz values), ``trace`` (n·Σ w θ, the probes' Hutchinson estimate),
        ``index`` with ``index_lower``/``index_upper`` (the Gauss–Radau interval),
        ``n_matvecs``, ``precision`` (the dtype the products ran in).
    distances : pandas.DataFrame
        Pairwise Jensen–Shannon distances (:func:`js_distances`).
    heterogeneity : float
        Their mean over pairs (NaN for one block).
    curvature : str
        ``"hessian"`` or ``"ggn"``.
    """

    densities: dict[str, SpectralDensity]
    table: pd.DataFrame
    distances: pd.DataFrame
    heterogeneity: float
    curvature: str


def block_spectra(model: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any],
                  groups: Mapping[str, Any] | Iterable[Any] | None = None, *,
                  curvature: Curvature = "hessian", lanczos_degree: int = 40,
                  n_probes: int = 2, mc_samples: int = 1, rng: Any = None,
                  dtype: Any = None, train: bool | None = None,
                  microbatch: int | None = None, hold: bool | None = None) -> BlockSpectra:
    """SLQ spectra of the diagonal blocks of a torch model's Hessian, GGN or Fisher.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left as it is).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch.
    batches : iterable of (inputs, targets)
        The data; read once (a DataLoader is consumed here and reused for every block).
    groups : mapping of label to params, iterable of params, or None
        The blocks: each value a ``params=`` choice of
        :func:`rmt.hessian.torch.select_parameters` (a glob, a regex, a list of names or
        parameters); a plain iterable is labelled by each item's ``str``. Default
        :func:`default_groups`, one block per layer.
    curvature : {"hessian", "ggn", "fisher", "empirical_fisher"}, default "hessian"
        Which matrix: :func:`~rmt.hessian.torch.hessian_operator`,
        :func:`~rmt.hessian.torch.gauss_newton_operator`, the Monte-Carlo
        :func:`~rmt.hessian.fisher.fisher_operator` or
        :func:`~rmt.hessian.fisher.empirical_fisher_operator`.
    lanczos_degree : int, default 40
        Lanczos steps per probe (capped at each block's size, where SLQ is exact).
    n_probes : int, default 2
        Probes per block; products = Σ over blocks of degree·probes.
    mc_samples : int, default 1
        Targets drawn per term for ``curvature="fisher"``.
    rng : None, int or numpy.random.Generator
        Seed of the probes and the Fisher's draws (one generator drawn from in block
        order).
    dtype : torch.dtype, default torch.float64
        Precision of the products.
    train : bool, optional
        Train or eval mode; default the model's own.
    microbatch : int, optional
        Examples per piece of a batch (:mod:`rmt.hessian.batches`).
    hold : bool, optional
        Keep the cast batches or stream them each product (:mod:`rmt.hessian.batches`).

    Returns
    -------
    BlockSpectra
    """
    import torch

    from rmt.hessian.batches import Batches, decide_hold
    from rmt.hessian.fisher import empirical_fisher_operator, fisher_operator
    from rmt.hessian.torch import _device, gauss_newton_operator, hessian_operator

    makers = {"hessian": hessian_operator, "ggn": gauss_newton_operator,
              "fisher": fisher_operator, "empirical_fisher": empirical_fisher_operator}
    if curvature not in makers:
        raise ValueError(f"curvature must be one of {', '.join(makers)}, got {curvature!r}")
    if groups is None:
        chosen: dict[str, Any] = dict(default_groups(model))
    elif isinstance(groups, Mapping):
        chosen = dict(groups)
    else:
        chosen = {str(g): g for g in groups}
    if not chosen:
        raise ValueError("groups is empty")
    # held data are cast once, and every block's operator finds them in its dtype and
    # device; streamed data (a DataLoader) are passed through, read per product
    dtype = torch.float64 if dtype is None else dtype
    held = decide_hold(batches, dtype, hold)  # streamed data are not read here at all
    source: Iterable[Any] = batches
    if held:
        data = Batches(batches, dtype, _device(model), hold=True)
        assert data.held is not None  # hold=True keeps them
        source = data.held
    generator = np.random.default_rng(rng)
    densities, rows = {}, []
    for label, spec in chosen.items():
        extra = ({"mc_samples": mc_samples, "rng": generator} if curvature == "fisher"
                 else {})
        op = makers[curvature](model, loss_fn, source, dtype=dtype, params=spec, train=train,
                               microbatch=microbatch, hold=held, **extra)
        n = op.shape[0]
        sd = slq(op, lanczos_degree=min(int(lanczos_degree), n), n_probes=n_probes,
                 rng=generator)
        densities[label] = sd
        lower, upper = sd.index_bounds()
        rows.append({"block": label, "n_params": n, "lambda_max": float(sd.nodes[-1]),
                     "lambda_min": float(sd.nodes[0]),
                     "trace": float(n * np.sum(sd.weights * sd.nodes)),
                     "index": sd.negative_fraction(), "index_lower": lower,
                     "index_upper": upper, "n_matvecs": sd.n_matvecs,
                     "precision": getattr(op, "precision", "float64")})
    distances = js_distances(densities)
    pairs = [distances.iloc[i, j] for i, j in combinations(range(len(densities)), 2)]
    return BlockSpectra(densities=densities, table=pd.DataFrame(rows), distances=distances,
                        heterogeneity=float(np.mean(pairs)) if pairs else float("nan"),
                        curvature=curvature)

"""Fisher operators of a PyTorch model: Monte-Carlo and empirical (needs the ``torch`` extra).

With the loss of a batch its mean over examples, L_b = (1/B) Σ_n ℓ_n, and the objective
(1/N) Σ_n ℓ_n over all N examples (as for :func:`rmt.hessian.torch.hessian_operator`):

- the **Monte-Carlo Fisher** Σ_b (B/N) c_b Σ_t J_tᵀ [(1/M) Σ_m g̃_tm g̃_tmᵀ] J_t, where
  L_b = c_b Σ_t (−log q(y_t | ŷ_t)) over the batch's terms t (c_b = 1/B for a classifier:
  (1/N) Σ_n J_nᵀ F_n J_n), and g̃ the score ∇_ŷ(−log q(ỹ | ŷ)) at M targets ỹ drawn from
  the model's own predictive distribution. Terms are a position's class vector
  (categorical) or one output element (Gaussian, Bernoulli), independent given ŷ.
  Unbiased for the Fisher, which for these likelihoods equals the Gauss–Newton matrix;
  the error falls as 1/√M.
- the **empirical Fisher** (1/N) Σ_n ∇ℓ_n ∇ℓ_nᵀ, the per-example gradients' second moment
  at the real targets (Kunstner et al. 2019: not the Fisher, and not the Hessian either,
  but the matrix that Adam-type and natural-gradient codes often use).

Both are J_nᵀ(output-space matrix)J_n, multiplied by a JVP and a VJP per batch without
second derivatives, so they work on models whose layers have none. The empirical Fisher
needs each example's loss to depend on its own outputs only (no train-mode BatchNorm).

References
----------
F. Kunstner, L. Balles and P. Hennig, "Limitations of the empirical Fisher approximation
for natural gradient descent", NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from rmt.hessian import _likelihood as lk
from rmt.hessian.torch import ParamSpec, _Problem, output_space_operator

__all__ = ["empirical_fisher_operator", "fisher_operator"]

_CHUNK_ELEMENTS = 1 << 22  # output elements of the draws' scores held at once


def _generator(rng: Any, device: Any) -> Any:
    """A torch generator on the model's device, seeded from ``rng``."""
    import torch

    seed = int(np.random.default_rng(rng).integers(2**62))
    return torch.Generator(device=device).manual_seed(seed)


def draw_targets(problem: _Problem, loss_fn: Callable[[Any, Any], Any],
                 likelihood: str | None, mc_samples: int,
                 rng: Any) -> tuple[lk.Likelihood, list[Any], list[float]]:
    """The likelihood's layout, each batch's drawn targets and each batch's loss scale.

    Parameters
    ----------
    problem : _Problem
        The model and batches.
    loss_fn : callable
        The caller's loss.
    likelihood : str, optional
        The likelihood, else read from ``loss_fn`` or detected on the first batch.
    mc_samples : int
        Draws per term.
    rng : None, int or numpy.random.Generator
        Seed of the draws.

    Returns
    -------
    (Likelihood, list of torch.Tensor, list of float)
        Draws ``(mc_samples, *targets.shape)`` per batch, in batch order.

    Raises
    ------
    ValueError
        ``loss_fn`` is not a multiple of the likelihood's NLL on some batch.
    """
    import torch

    kind = likelihood or lk.infer_kind(loss_fn)
    generator = _generator(rng, problem.device)
    layout: lk.Likelihood | None = None
    draws, scales = [], []
    with torch.no_grad(), problem.mode():
        for _, x, y, _ in problem.data:
            out = problem(problem.block, x)
            if layout is None:
                layout = (lk.resolve(kind, loss_fn, out, y, generator) if kind is not None
                          else lk.detect(loss_fn, out, y, generator))
            drawn = layout.sample(out, y, mc_samples, generator)
            scale = lk.loss_scale(layout, loss_fn, out, y, drawn[0])
            if scale is None:
                raise lk.mismatch(layout.kind, out, y)
            draws.append(drawn)
            scales.append(scale)
    assert layout is not None  # _Problem refuses empty data
    return layout, draws, scales


def fisher_operator(model: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any],
                    *, mc_samples: int = 1, likelihood: str | None = None, rng: Any = None,
                    dtype: Any = None, params: ParamSpec = None,
                    train: bool | None = None, microbatch: int | None = None,
                    hold: bool | None = None) -> spla.LinearOperator:
    """The Monte-Carlo Fisher as a LinearOperator (PSD, rank ≤ M·terms).

    The targets are drawn once, when the operator is made (``mc_samples`` per term, from
    ``rng``), so it is one fixed symmetric matrix that Lanczos can use; another ``rng``
    gives another draw.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left as it is).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch; a constant
        multiple of the likelihood's negative log-likelihood (checked on every batch).
    batches : iterable of (inputs, targets)
        The data.
    mc_samples : int, default 1
        Targets drawn per term, M.
    likelihood : {"categorical", "gaussian", "bernoulli"}, optional
        The predictive distribution; default read from ``loss_fn`` when it is torch's
        cross-entropy, MSE or BCE-with-logits (module or function), else the one of the
        three that ``loss_fn`` is a multiple of on the first batch.
    rng : None, int or numpy.random.Generator
        Seed of the draws.
    dtype : torch.dtype, default torch.float64
        Precision of the products.
    params : None, str, re.Pattern or list, optional
        The block (:func:`rmt.hessian.torch.select_parameters`).
    train : bool, optional
        Train or eval mode; default the model's own.
    microbatch : int, optional
        Examples per piece of a batch (:mod:`rmt.hessian.batches`).
    hold : bool, optional
        Keep the cast batches or stream them each product (:mod:`rmt.hessian.batches`).

    Returns
    -------
    scipy.sparse.linalg.LinearOperator

    Raises
    ------
    ValueError
        ``mc_samples`` below 1, or a loss that is not a multiple of the likelihood's NLL
        (label smoothing, class weights) — or of any of the three when none is given.
    """
    import torch

    if int(mc_samples) != mc_samples or mc_samples < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    dtype = torch.float64 if dtype is None else dtype
    problem = _Problem(model, batches, dtype, params, train, microbatch, hold,
                       same_inputs=True)
    layout, draws, scales = draw_targets(problem, loss_fn, likelihood, int(mc_samples), rng)

    # the draws' scores in chunks of whole samples, a leading sample axis on the output
    stacked = lk.Likelihood(layout.kind, None if layout.class_axis is None
                            else layout.class_axis + 1, layout.ignore_index)

    def middle(out: Any, jv: Any, y: Any, index: int) -> Any:
        acc = torch.zeros_like(out)
        chunk = max(1, _CHUNK_ELEMENTS // max(out.numel(), 1))
        for drawn in torch.split(draws[index], chunk):
            many = out.expand(drawn.shape[0], *out.shape)
            acc += stacked.outer(stacked.score(many, drawn), jv).sum(0)
        return acc * (scales[index] / len(draws[index]))

    return output_space_operator(problem, middle)


def empirical_fisher_operator(model: Any, loss_fn: Callable[[Any, Any], Any],
                              batches: Iterable[Any], *, dtype: Any = None,
                              params: ParamSpec = None,
                              train: bool | None = None, microbatch: int | None = None,
                              hold: bool | None = None) -> spla.LinearOperator:
    """The empirical Fisher (1/N) Σ_n ∇ℓ_n ∇ℓ_nᵀ as a LinearOperator (PSD, rank ≤ N).

    ℓ_n is example n's loss as the batch's mean counts it (B times its share of L_b), so
    that (1/N) Σ_n ℓ_n is the objective whose Hessian :func:`hessian_operator` gives;
    examples are the leading axis of the inputs and outputs.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left as it is).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch.
    batches : iterable of (inputs, targets)
        The data.
    dtype : torch.dtype, default torch.float64
        Precision of the products.
    params : None, str, re.Pattern or list, optional
        The block.
    train : bool, optional
        Train or eval mode; default the model's own.
    microbatch : int, optional
        Examples per piece of a batch (:mod:`rmt.hessian.batches`).
    hold : bool, optional
        Keep the cast batches or stream them each product (:mod:`rmt.hessian.batches`).

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    problem = _Problem(model, batches, dtype, params, train, microbatch, hold)

    def middle(out: Any, jv: Any, y: Any, index: int) -> Any:
        out = out.requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(out, y), out)
        size = problem.data.sizes[index]
        per_example = (g * jv).reshape(out.shape[0], -1).sum(1)  # ∇ℓ_nᵀ J_n v / B
        # B·g = ∇_ŷ ℓ_n per example; the operator's weight B/N leaves (1/N) ∇ℓ_n ∇ℓ_nᵀ v
        return g * per_example.reshape(-1, *([1] * (out.ndim - 1))) * size

    return output_space_operator(problem, middle)

"""Exact diagonals of a torch model's Gauss–Newton and Fisher matrices (``torch`` extra).

Each of these matrices is Σ_n w_n J_nᵀ M_n J_n with M_n a C × C matrix in example n's
output space (C outputs per example), so its diagonal is Σ_n w_n Σ_k λ_nk (J_nᵀ v_nk)²
over the eigenpairs of M_n (for the empirical Fisher, the one factor ∇_ŷ ℓ_n): C
per-example vector–Jacobian products per example, by ``torch.func.vmap`` over examples
— exact, and cheap where C is small (a classifier's logits), which is when it is offered
(``max_outputs``). For a language model's C = T·V outputs, or for the Hessian itself
(whose diagonal has no such factorisation), estimate it from products instead:
:func:`rmt.hessian.diagonal` (XDiag) on the operator.

Per-example back-propagation needs each example's outputs to depend on that example
alone (no train-mode BatchNorm), as the empirical Fisher itself does.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np

from rmt.hessian import _likelihood as lk
from rmt.hessian.batches import map_tensors
from rmt.hessian.fisher import draw_targets
from rmt.hessian.torch import ParamSpec, _Problem

__all__ = ["curvature_diagonal"]

_ELEMENTS = 1 << 24  # per-example products held at once (128 MiB of float64)


def _term_ids(layout: lk.Likelihood, example_shape: tuple[int, ...]) -> Any:
    """For each of an example's outputs, the likelihood term it belongs to."""
    import torch

    size = int(np.prod(example_shape))
    if layout.kind != "categorical":
        return torch.arange(size)
    coords = np.indices(example_shape).reshape(len(example_shape), -1)
    coords[layout.axis - 1] = 0  # one term per position, over the class axis
    strides = np.cumprod((1, *example_shape[::-1]))[:-1][::-1]
    return torch.as_tensor(strides @ coords)


def _output_hessians(loss_fn: Callable[[Any, Any], Any], out: Any, y: Any) -> Any:
    """∇²_ŷ L_b restricted to each example's block, (B, C, C), by C batched backward
    passes in output space (the blocks off the diagonal are zero for per-example losses)."""
    import torch

    out = out.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(out, y), out, create_graph=True)
    batch, size = out.shape[0], out[0].numel()
    basis = torch.eye(size, dtype=out.dtype, device=out.device)
    basis = basis[:, None, :].expand(size, batch, size).reshape(size, *out.shape)
    (rows,) = torch.autograd.grad(g, out, basis, is_grads_batched=True)
    return rows.reshape(size, batch, size).permute(1, 0, 2)


def _squared_vjps(problem: _Problem, x: Any, factors: Any, weights: Any) -> Any:
    """Σ_n Σ_k weights[n, k] (J_nᵀ factors[n, k])² for one batch, flat over the block."""
    import torch
    from torch.func import vjp, vmap

    def single(block: dict, example: Any) -> Any:
        return problem(block, map_tensors(lambda t: t.unsqueeze(0), example))[0]

    def per_example(example: Any, cotangents: Any) -> Any:
        _, pullback = vjp(lambda block: single(block, example), problem.block)  # type: ignore[misc]
        (grads,) = vmap(pullback)(cotangents)
        return torch.cat([grads[k].reshape(cotangents.shape[0], -1) for k in problem.names], 1)

    batch, K = factors.shape[:2]
    acc = torch.zeros(problem.n, dtype=problem.dtype, device=problem.device)
    k_chunk = max(1, min(K, _ELEMENTS // max(problem.n, 1)))
    n_chunk = max(1, _ELEMENTS // max(problem.n * k_chunk, 1))
    for start in range(0, batch, n_chunk):
        part = slice(start, start + n_chunk)
        examples = map_tensors(operator.itemgetter(part), x)
        for k0 in range(0, K, k_chunk):
            ks = slice(k0, k0 + k_chunk)
            try:
                rows = vmap(per_example)(examples, factors[part, ks])
            except RuntimeError as err:
                raise ValueError(
                    "an exact curvature diagonal back-propagates one example at a time, and "
                    f"this model cannot ({err}); layers that couple a batch's examples "
                    "(train-mode BatchNorm) rule it out — estimate it with "
                    "rmt.hessian.diagonal(operator, n_matvecs) instead") from err
            acc += torch.einsum("nk,nkp->p", weights[part, ks], rows * rows)
    return acc


def curvature_diagonal(model: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any],
                       *, curvature: Literal["ggn", "fisher", "empirical_fisher"] = "ggn",
                       mc_samples: int = 1, likelihood: str | None = None, rng: Any = None,
                       dtype: Any = None, params: ParamSpec = None, train: bool | None = None,
                       microbatch: int | None = None, hold: bool | None = None,
                       max_outputs: int = 1024) -> np.ndarray:
    """The exact diagonal of the GGN, the Monte-Carlo Fisher or the empirical Fisher.

    Equal (to rounding) to the diagonal of the matching operator —
    :func:`~rmt.hessian.torch.gauss_newton_operator`,
    :func:`~rmt.hessian.fisher.fisher_operator` (the same draws for the same ``rng``) or
    :func:`~rmt.hessian.fisher.empirical_fisher_operator` — at the cost of C per-example
    backward passes per example (one for the empirical Fisher) instead of P products.

    Parameters
    ----------
    model : torch.nn.Module
        The network (left as it is).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch, a sum of
        per-example terms.
    batches : iterable of (inputs, targets)
        The data.
    curvature : {"ggn", "fisher", "empirical_fisher"}, default "ggn"
        Which matrix.
    mc_samples : int, default 1
        Draws per term for the Monte-Carlo Fisher.
    likelihood : str, optional
        The Fisher's likelihood (:func:`~rmt.hessian.fisher.fisher_operator`).
    rng : None, int or numpy.random.Generator
        Seed of the Fisher's draws.
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
    max_outputs : int, default 1024
        Refuse examples with more outputs than this (the cost grows with C; a language
        model's outputs call for :func:`rmt.hessian.diagonal` instead).

    Returns
    -------
    numpy.ndarray
        P, float64, in the block's parameter order.

    Raises
    ------
    ValueError
        An unknown curvature, examples with more than ``max_outputs`` outputs, or a model
        that per-example back-propagation cannot run.
    """
    import torch

    if curvature not in ("ggn", "fisher", "empirical_fisher"):
        raise ValueError("curvature must be 'ggn', 'fisher' or 'empirical_fisher', got "
                         f"{curvature!r}")
    dtype = torch.float64 if dtype is None else dtype
    problem = _Problem(model, batches, dtype, params, train, microbatch, hold,
                       same_inputs=curvature == "fisher")
    if curvature == "fisher":
        layout, draws, scales = draw_targets(problem, loss_fn, likelihood, int(mc_samples), rng)
    acc = torch.zeros(problem.n, dtype=dtype, device=problem.device)
    with problem.mode():
        for index, x, y, size in problem.data:
            with torch.no_grad():
                out = problem(problem.block, x)
            outputs = out[0].numel()
            if outputs > max_outputs:
                raise ValueError(
                    f"each example has {outputs} outputs, above max_outputs={max_outputs}: "
                    f"the exact diagonal costs that many backward passes per example; "
                    f"estimate it with rmt.hessian.diagonal(operator, n_matvecs) instead")
            weight = size / problem.total
            if curvature == "empirical_fisher":
                out_r = out.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(loss_fn(out_r, y), out_r)
                factors = (g * size).unsqueeze(1)  # ∇_ŷ ℓ_n, one factor per example
                weights = torch.full((size, 1), 1.0 / size, dtype=dtype, device=out.device)
            else:
                if curvature == "ggn":
                    middle = _output_hessians(loss_fn, out, y)
                else:
                    stacked = lk.Likelihood(layout.kind, None if layout.class_axis is None
                                            else layout.class_axis + 1, layout.ignore_index)
                    scores = stacked.score(out.expand(draws[index].shape[0], *out.shape),
                                           draws[index]).reshape(-1, size, outputs)
                    ids = _term_ids(layout, tuple(out.shape[1:])).to(out.device)
                    same_term = (ids[:, None] == ids[None, :]).to(dtype)
                    middle = torch.einsum("mnk,mnl->nkl", scores, scores) * same_term
                    middle *= scales[index] / scores.shape[0]
                weights, vectors = torch.linalg.eigh(middle)  # (B, C), (B, C, C)
                factors = vectors.transpose(1, 2).reshape(size, outputs, *out.shape[1:])
            acc += _squared_vjps(problem, x, factors, weights) * weight
    return problem.to_host(acc)

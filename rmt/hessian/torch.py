"""Hessian and Gauss–Newton operators of a PyTorch model (needs the ``torch`` extra).

HVPs by double back-propagation over a list (or loader) of ``(inputs, targets)`` batches,
batch losses weighted by batch size, in float64 by default (a copy of the model is cast;
the caller's model is left alone). The Gauss–Newton operator is Jᵀ(∇²_ŷ ℓ)J, by a
forward-mode JVP, the Hessian of the loss in the outputs, and a reverse-mode VJP
(``torch.func``). Vectors in and out are NumPy float64; the products run on the model's
device. Inputs may be a tensor, a tuple of tensors (``model(*inputs)``) or a dict
(``model(**inputs)``, Hugging Face style); only floating-point tensors are cast to
``dtype`` — token ids and masks stay integers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["gauss_newton_operator", "hessian_operator"]


def _device(model: Any) -> Any:
    for p in model.parameters():
        return p.device
    return None


def _cast(value: Any, dtype: Any, device: Any) -> Any:
    """A batch's inputs or targets on the model's device, floating tensors in ``dtype``."""
    import torch

    if isinstance(value, dict):
        return {k: _cast(v, dtype, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_cast(v, dtype, device) for v in value)
    t = torch.as_tensor(value)
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)


def _size(inputs: Any) -> int:
    """Examples in a batch: the leading dimension of its (first) input tensor."""
    if isinstance(inputs, dict):
        inputs = next(iter(inputs.values()))
    elif isinstance(inputs, tuple | list):
        inputs = inputs[0]
    return int(inputs.shape[0])


def _call(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def _setup(model: Any, batches: Iterable[Any], dtype: Any) -> tuple[Any, list, list, list]:
    model = copy.deepcopy(model).to(dtype)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device = _device(model)
    data = [(_cast(x, dtype, device), _cast(y, dtype, device)) for x, y in batches]
    if not data:
        raise ValueError("batches is empty")
    return model, params, data, [_size(x) for x, _ in data]


def _to_params(v: np.ndarray, params: list, dtype: Any) -> list:
    import torch

    out, start = [], 0
    flat = torch.as_tensor(np.ravel(v), dtype=dtype, device=params[0].device)
    for p in params:
        out.append(flat[start : start + p.numel()].view_as(p))
        start += p.numel()
    return out


def hessian_operator(model: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any],
                     *, dtype: Any = None) -> spla.LinearOperator:
    """The Hessian of the batch-size-weighted mean loss as a LinearOperator.

    Parameters
    ----------
    model : torch.nn.Module
        The network (copied and cast to ``dtype``; put in eval mode).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch.
    batches : iterable of (inputs, targets)
        The data (a list, or a DataLoader consumed once here). Inputs: a tensor, a tuple of
        tensors or a dict of keyword tensors; integer tensors (token ids) stay integers.
    dtype : torch.dtype, default torch.float64
        Precision of the model's copy and of the products.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        P×P, P the number of trainable parameters (in ``model.parameters()`` order).
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    model, params, data, sizes = _setup(model, batches, dtype)
    total = float(sum(sizes))
    n = sum(p.numel() for p in params)

    def matvec(v: np.ndarray) -> np.ndarray:
        vs = _to_params(v, params, dtype)
        acc = torch.zeros(n, dtype=dtype, device=params[0].device)
        for (x, y), size in zip(data, sizes, strict=True):
            loss = loss_fn(_call(model, x), y) * (size / total)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * u).sum() for g, u in zip(grads, vs, strict=True))
            hv = torch.autograd.grad(dot, params)
            acc += torch.cat([h.reshape(-1) for h in hv])
        return acc.detach().cpu().numpy().astype(np.float64)

    return spla.LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def gauss_newton_operator(model: Any, loss_fn: Callable[[Any, Any], Any],
                          batches: Iterable[Any], *, dtype: Any = None) -> spla.LinearOperator:
    """The generalised Gauss–Newton matrix Jᵀ(∇²_ŷ ℓ)J as a LinearOperator (PSD for convex
    losses; equals the Fisher for softmax cross-entropy). Same arguments as
    :func:`hessian_operator`.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch.
    batches : iterable of (inputs, targets)
        The data.
    dtype : torch.dtype, default torch.float64
        Precision of the products.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    import torch
    from torch.func import functional_call, jvp, vjp

    dtype = torch.float64 if dtype is None else dtype
    model, params, data, sizes = _setup(model, batches, dtype)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    base = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    total = float(sum(sizes))
    n = sum(p.numel() for p in params)

    def matvec(v: np.ndarray) -> np.ndarray:
        tangents = dict(zip(names, _to_params(v, params, dtype), strict=True))
        acc = torch.zeros(n, dtype=dtype, device=params[0].device)
        for (x, y), size in zip(data, sizes, strict=True):
            def f(p: dict, x: Any = x) -> Any:
                if isinstance(x, dict):
                    return functional_call(model, p, (), x)
                return functional_call(model, p, tuple(x) if isinstance(x, tuple | list)
                                       else (x,))

            out, jv = jvp(f, (base,), (tangents,))  # type: ignore[misc]  # (primal, tangent)
            out = out.detach().requires_grad_(True)
            loss = loss_fn(out, y) * (size / total)
            (g,) = torch.autograd.grad(loss, out, create_graph=True)
            (hjv,) = torch.autograd.grad((g * jv).sum(), out)
            _, pullback = vjp(f, base)  # type: ignore[misc]  # (primal, pullback)
            (grads,) = pullback(hjv)
            acc += torch.cat([grads[name].reshape(-1) for name in names])
        return acc.detach().cpu().numpy().astype(np.float64)

    return spla.LinearOperator((n, n), matvec=matvec, rmatvec=matvec, dtype=np.float64)

"""Hessian and Gauss–Newton operators of a PyTorch model (needs the ``torch`` extra).

HVPs by double back-propagation over a list (or loader) of ``(inputs, targets)`` batches,
batch losses weighted by batch size, in float64 by default. The caller's model is neither
copied nor changed: its parameters are read once into ``dtype`` tensors and substituted
by ``torch.func.functional_call``; ``params=`` restricts the operator to a block of them.
The Gauss–Newton operator is Jᵀ(∇²_ŷ ℓ)J, by a forward-mode JVP, the Hessian of the loss
in the outputs, and a reverse-mode VJP (``torch.func``). Vectors in and out are NumPy
float64; the products run on the model's device. Inputs may be a tensor, a tuple of
tensors (``model(*inputs)``) or a dict (``model(**inputs)``, Hugging Face style); only
floating-point tensors are cast to ``dtype`` — token ids and masks stay integers.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

from rmt.hessian.batches import Batches

__all__ = ["gauss_newton_operator", "hessian_operator", "output_space_operator",
           "select_parameters"]


def _device(model: Any) -> Any:
    for p in model.parameters():
        return p.device
    return None


ParamSpec = Any  # None, a glob, a compiled regex, or a list of names / parameters


def select_parameters(model: Any, params: ParamSpec = None) -> list[str]:
    """Names of the trainable parameters a ``params=`` argument picks, in model order.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    params : None, str, re.Pattern or list of str / torch.nn.Parameter
        None: every trainable parameter. A string: an ``fnmatch`` glob on the names
        (``"layers.0.*"``, ``"*.attn.*"``). A compiled regex: names it ``search``-es. A
        list: those names, or those parameter objects.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        Nothing matches, or a listed name or parameter is not a trainable parameter of
        ``model``.
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    if params is None:
        return [name for name, _ in named]
    if isinstance(params, str):
        chosen = [name for name, _ in named if fnmatch.fnmatchcase(name, params)]
    elif isinstance(params, re.Pattern):
        chosen = [name for name, _ in named if params.search(name)]
    else:
        items = list(params)
        by_id = {id(p): name for name, p in named}
        names = {name for name, _ in named}
        wanted = set()
        for item in items:
            key = item if isinstance(item, str) else by_id.get(id(item))
            if key not in names:
                raise ValueError(f"params: {item if isinstance(item, str) else type(item).__name__}"
                                 " is not a trainable parameter of the model")
            wanted.add(key)
        chosen = [name for name, _ in named if name in wanted]
    if not chosen:
        raise ValueError(f"params={params!r} matches no trainable parameter; names look like "
                         f"{', '.join(name for name, _ in named[:3])}")
    return chosen


class _Problem:
    """The model as a function of a block of its parameters, on the caller's batches.

    Nothing of the caller's model changes: parameters and floating buffers are read once
    into ``dtype`` tensors and substituted by ``torch.func.functional_call``, so the
    model is neither copied nor cast, ``.grad`` is never written, and it runs in the mode
    the caller left it in unless ``train`` says otherwise (then only for the duration of
    each product, restored afterwards).
    """

    def __init__(self, model: Any, batches: Iterable[Any], dtype: Any, params: ParamSpec,
                 train: bool | None, microbatch: int | None = None,
                 hold: bool | None = None, same_inputs: bool = False) -> None:
        import torch

        self.model, self.dtype, self.train = model, dtype, train
        self.names = select_parameters(model, params)
        state = dict(model.named_parameters())
        device = _device(model)
        self.block = {name: state[name].detach().to(dtype) for name in self.names}
        self.fixed = {name: p.detach().to(dtype) for name, p in state.items()
                      if name not in self.block}
        for name, b in model.named_buffers():  # copies: train-mode BatchNorm writes to them
            self.fixed[name] = (b.to(dtype, copy=True) if torch.is_floating_point(b)
                                else b.clone())
        self.data = Batches(batches, dtype, device, microbatch=microbatch, hold=hold,
                            same_inputs=same_inputs)
        self.total = self.data.total
        self.param_sizes = [p.numel() for p in self.block.values()]
        self.n = sum(self.param_sizes)
        self.device = device

    def __call__(self, block: dict, x: Any) -> Any:
        from torch.func import functional_call

        merged = {**self.fixed, **block}
        if isinstance(x, dict):
            return functional_call(self.model, merged, (), x)
        return functional_call(self.model, merged, tuple(x) if isinstance(x, tuple | list)
                               else (x,))

    @contextlib.contextmanager
    def mode(self) -> Iterator[None]:
        """Context for one product: the requested train/eval mode (the caller's restored
        afterwards), and attention on PyTorch's math kernel — the fused (flash,
        memory-efficient) kernels of ``scaled_dot_product_attention`` have no second
        derivative, so a Hessian through them would fail."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        saved = [(m, m.training) for m in self.model.modules()]
        if self.train is not None:
            self.model.train(self.train)
        try:
            with sdpa_kernel([SDPBackend.MATH]):
                yield
        finally:
            for m, was in saved:
                m.training = was

    def split(self, v: np.ndarray) -> dict:
        import torch

        flat = torch.as_tensor(np.ravel(v), dtype=self.dtype, device=self.device)
        return {name: piece.view(p.shape) for (name, p), piece in zip(
            self.block.items(), torch.split(flat, self.param_sizes), strict=True)}

    def flat(self, parts: Any) -> Any:
        """The block's pieces (a dict or a sequence, in block order) as one device vector."""
        import torch

        values = parts.values() if isinstance(parts, dict) else parts
        return torch.cat([t.reshape(-1) for t in values]).detach()

    def operator(self, matvec: Callable[[np.ndarray], np.ndarray]) -> spla.LinearOperator:
        """The symmetric P×P LinearOperator of ``matvec`` (float64 vectors on the host),
        its ``precision`` the dtype the products are computed in (``"float64"``,
        ``"float32"``, ...), so results can say it."""
        op = spla.LinearOperator((self.n, self.n), matvec=matvec, rmatvec=matvec,
                                 dtype=np.float64)
        op.precision = str(self.dtype).removeprefix("torch.")
        return op

    @staticmethod
    def to_host(vec: Any) -> np.ndarray:
        """A product's result back on the host as float64 (one transfer per product)."""
        return np.asarray(vec.cpu().numpy(), dtype=np.float64)  # no copy when float64


def hessian_operator(model: Any, loss_fn: Callable[[Any, Any], Any], batches: Iterable[Any],
                     *, dtype: Any = None, params: ParamSpec = None,
                     train: bool | None = None, microbatch: int | None = None,
                     hold: bool | None = None,
                     reuse_graph: bool | None = None) -> spla.LinearOperator:
    """The Hessian of the batch-size-weighted mean loss as a LinearOperator.

    Parameters
    ----------
    model : torch.nn.Module
        The network; left as it is (not copied, cast, switched or given ``.grad``).
    loss_fn : callable
        ``loss_fn(model(inputs), targets)`` → scalar mean loss of a batch.
    batches : iterable of (inputs, targets)
        The data (a list, or a DataLoader consumed once here). Inputs: a tensor, a tuple of
        tensors or a dict of keyword tensors; integer tensors (token ids) stay integers.
    dtype : torch.dtype, default torch.float64
        Precision of the parameters' and inputs' copies and of the products.
    params : None, str, re.Pattern or list, optional
        The block: H restricted to these parameters (:func:`select_parameters`), the
        others held fixed; default all trainable parameters.
    train : bool, optional
        Run the model in train (True) or eval (False) mode; default the mode it is in.
    microbatch : int, optional
        Split each batch into pieces of at most this many examples, each weighted by its
        size (bounds the memory of a pass; exact for losses that are means over examples).
    hold : bool, optional
        Keep the batches' cast copies (True) or read them anew for every product (False,
        one batch in memory at a time; a DataLoader); default held for one-shot iterators
        and lists whose copy is at most 1 GiB (:mod:`rmt.hessian.batches`).
    reuse_graph : bool, optional
        Keep each batch's gradient graph from the first product and differentiate it again
        for every later one (one backward pass per product instead of a forward and two
        backward passes; PyHessian's way). It holds the graphs of all held batches at
        once, so the default reuses only when the data are one held batch, whose graph
        a product holds anyway; True for several held batches; streamed data cannot.
        With a reused graph every product sees the same dropout masks and train-mode
        batch statistics, the first product's.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        P×P, P the number of parameters of the block (in ``model.parameters()`` order).

    Raises
    ------
    ValueError
        ``reuse_graph=True`` with streamed data.
    """
    import torch

    dtype = torch.float64 if dtype is None else dtype
    problem = _Problem(model, batches, dtype, params, train, microbatch, hold)
    held = problem.data.held is not None
    if reuse_graph and not held:
        raise ValueError("reuse_graph=True needs held data (hold=True): streamed batches "
                         "are read anew for every product, so their graphs are not kept")
    reuse = held and len(problem.data) == 1 if reuse_graph is None else bool(reuse_graph)
    # leaves sharing the block's storage (no copy), made once for every product:
    # autograd.grad differentiates with respect to them and never writes a .grad
    leaves = {k: t.detach().requires_grad_(True) for k, t in problem.block.items()}
    graphs: list[tuple[Any, ...]] = []

    def gradients(block: dict, x: Any, y: Any, size: int) -> tuple[Any, ...]:
        loss = loss_fn(problem(block, x), y) * (size / problem.total)
        return torch.autograd.grad(loss, list(block.values()), create_graph=True)

    def backward(grads: tuple[Any, ...], inputs: list[Any], tangent: dict,
                 keep: bool) -> Any:
        # ∂(g·v)/∂θ; a parameter whose gradient is constant in θ (a loss linear in it)
        # has no graph and contributes a zero block
        live = [g.requires_grad for g in grads]
        if not any(live):
            return torch.zeros(problem.n, dtype=dtype, device=problem.device)
        parts = torch.autograd.grad([g for g, on in zip(grads, live, strict=True) if on],
                                    inputs,
                                    grad_outputs=[t for t, on in zip(tangent.values(), live,
                                                                     strict=True) if on],
                                    retain_graph=keep, allow_unused=True,
                                    materialize_grads=True)
        return problem.flat(parts)

    inputs = list(leaves.values())

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = problem.split(v)
        if reuse:
            if not graphs:
                with problem.mode():
                    graphs.extend(gradients(leaves, x, y, size)
                                  for _, x, y, size in problem.data)
            acc = backward(graphs[0], inputs, tangent, keep=True)
            for grads in graphs[1:]:
                acc += backward(grads, inputs, tangent, keep=True)
            return problem.to_host(acc)
        acc = torch.zeros(problem.n, dtype=dtype, device=problem.device)
        with problem.mode():
            for _, x, y, size in problem.data:
                acc += backward(gradients(leaves, x, y, size), inputs, tangent, keep=False)
        return problem.to_host(acc)

    return problem.operator(matvec)


def gauss_newton_operator(model: Any, loss_fn: Callable[[Any, Any], Any],
                          batches: Iterable[Any], *, dtype: Any = None,
                          params: ParamSpec = None,
                          train: bool | None = None, microbatch: int | None = None,
                          hold: bool | None = None) -> spla.LinearOperator:
    """The generalised Gauss–Newton matrix Jᵀ(∇²_ŷ ℓ)J as a LinearOperator (PSD for convex
    losses; equals the Fisher for softmax cross-entropy). Same arguments as
    :func:`hessian_operator`.

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
        The block (J taken with respect to these parameters only).
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

    def middle(out: Any, jv: Any, y: Any, index: int) -> Any:  # (∇²_ŷ ℓ) Jv
        out = out.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(out, y), out, create_graph=True)
        (hjv,) = torch.autograd.grad((g * jv).sum(), out)
        return hjv

    return output_space_operator(problem, middle)


Middle = Callable[[Any, Any, Any, int], Any]


def output_space_operator(problem: _Problem, middle: Middle) -> spla.LinearOperator:
    """The operator Σ_b w_b J_bᵀ M_b J_b, w_b = batch size / total, for a curvature matrix
    M_b in the model's output space: ``middle(outputs, J v, targets, batch index)`` returns
    M_b J v. One forward-mode JVP and one reverse-mode VJP per batch (``torch.func``).

    Parameters
    ----------
    problem : _Problem
        The model, its block of parameters and the batches.
    middle : callable
        The output-space product.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    import torch
    from torch.func import jvp, vjp

    def matvec(v: np.ndarray) -> np.ndarray:
        tangent = problem.split(v)
        acc = torch.zeros(problem.n, dtype=problem.dtype, device=problem.device)
        with problem.mode():
            for index, x, y, size in problem.data:
                def f(block: dict, x: Any = x) -> Any:
                    return problem(block, x)

                out, jv = jvp(f, (problem.block,), (tangent,))  # type: ignore[misc]
                mjv = middle(out.detach(), jv.detach(), y, index) * (size / problem.total)
                _, pullback = vjp(f, problem.block)  # type: ignore[misc]
                (grads,) = pullback(mjv)
                acc += problem.flat({k: grads[k] for k in problem.names})
        return problem.to_host(acc)

    return problem.operator(matvec)

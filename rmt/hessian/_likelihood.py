"""The likelihood behind a loss, for the Monte-Carlo Fisher (needs the ``torch`` extra).

The Fisher of a loss ℓ(ŷ, y) = c·(−log q(y | ŷ)) is Jᵀ E_{ỹ∼q(·|ŷ)}[c ∇ℓ̃ ∇ℓ̃ᵀ / c²] J,
where ∇ℓ̃ = c ∇_ŷ(−log q(ỹ | ŷ)); for these three likelihoods, with ŷ their natural
parameters, its expectation is the Gauss–Newton matrix. A :class:`Likelihood` draws ỹ
and gives the score g = ∇_ŷ(−log q(ỹ | ŷ)) in closed form in the model's output layout,
and the loss scale c is read off the caller's ``loss_fn`` by comparing it with the
negative log-likelihood — which also checks that the loss is one (label smoothing, class
weights or a hidden ignore index are refused, not silently mis-scaled).

``categorical``: logits, classes on one axis of the output (axis 1 as
``torch.nn.functional.cross_entropy`` takes them, or the last axis with the targets
flattened), integer targets, negative ones (``-100``, Hugging Face padding) or the loss's
``ignore_index`` left out. ``gaussian``: q = N(ŷ, ½I), so −log q = ‖ŷ − y‖² (MSE up to c).
``bernoulli``: logits of independent binary outputs (``BCEWithLogitsLoss``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["KINDS", "Likelihood", "detect", "infer_kind", "loss_scale", "mismatch", "resolve"]

Kind = Literal["categorical", "gaussian", "bernoulli"]
KINDS: tuple[str, ...] = ("categorical", "gaussian", "bernoulli")


def infer_kind(loss_fn: Callable[..., Any]) -> Kind | None:
    """The likelihood of a torch loss module or function, or None when not one of them.

    Parameters
    ----------
    loss_fn : callable
        The loss.

    Returns
    -------
    str or None
    """
    import torch.nn as nn
    import torch.nn.functional as F

    if isinstance(loss_fn, nn.CrossEntropyLoss) or loss_fn is F.cross_entropy:
        return "categorical"
    if isinstance(loss_fn, nn.MSELoss) or loss_fn is F.mse_loss:
        return "gaussian"
    if isinstance(loss_fn, nn.BCEWithLogitsLoss) or loss_fn is F.binary_cross_entropy_with_logits:
        return "bernoulli"
    return None


@dataclass(frozen=True)
class Likelihood:
    """One likelihood, laid out on one model output shape.

    Attributes
    ----------
    kind : str
        ``"categorical"``, ``"gaussian"`` or ``"bernoulli"``.
    class_axis : int or None
        The categorical's class axis in the model's output; None for the others.
    ignore_index : int or None
        A categorical target value left out besides the negative ones.
    """

    kind: str
    class_axis: int | None = None
    ignore_index: int | None = None

    @property
    def axis(self) -> int:
        """The class axis (categorical only)."""
        assert self.class_axis is not None, "only a categorical has a class axis"
        return self.class_axis

    def terms(self, out: Any, y: Any) -> Any:
        """The targets in the output's layout (the class axis removed for a categorical).

        Parameters
        ----------
        out, y : torch.Tensor
            Model outputs and targets.

        Returns
        -------
        torch.Tensor
        """
        if self.kind == "categorical":
            shape = list(out.shape)
            del shape[self.axis]
            return y.reshape(shape)
        return y.reshape(out.shape)

    def _kept(self, yt: Any) -> Any:
        kept = yt >= 0
        if self.ignore_index is not None:
            kept = kept & (yt != self.ignore_index)
        return kept

    def nll_sum(self, out: Any, y: Any) -> Any:
        """Σ over the kept terms of −log q(y | ŷ), constants dropped.

        Parameters
        ----------
        out, y : torch.Tensor
            Model outputs and targets.

        Returns
        -------
        torch.Tensor
            0-d, in the outputs' dtype.
        """
        import torch
        import torch.nn.functional as F

        yt = self.terms(out, y)
        if self.kind == "categorical":
            axis = self.axis
            kept = self._kept(yt)
            picked = torch.gather(F.log_softmax(out, dim=axis), axis,
                                  torch.where(kept, yt, 0).unsqueeze(axis))
            return -(picked.squeeze(axis) * kept).sum()
        if self.kind == "gaussian":
            return ((out - yt.to(out.dtype)) ** 2).sum()
        return F.binary_cross_entropy_with_logits(out, yt.to(out.dtype), reduction="sum")

    def sample(self, out: Any, y: Any, samples: int, generator: Any) -> Any:
        """Draws of ỹ ∼ q(·|ŷ) in the targets' own shape and dtype; ignored categorical
        targets keep their value.

        Parameters
        ----------
        out, y : torch.Tensor
            Model outputs and (real) targets.
        samples : int
            Draws per term.
        generator : torch.Generator
            The source of randomness (on the outputs' device).

        Returns
        -------
        torch.Tensor
            ``(samples, *y.shape)``.
        """
        import torch

        with torch.no_grad():
            if self.kind == "categorical":
                axis = self.axis
                probs = torch.softmax(out, dim=axis).movedim(axis, -1)
                flat = probs.reshape(-1, probs.shape[-1])
                draws = torch.multinomial(flat, samples, replacement=True, generator=generator)
                draws = draws.T.reshape(samples, *probs.shape[:-1])
                yt = self.terms(out, y)
                draws = torch.where(self._kept(yt), draws.to(y.dtype), yt)
                return draws.reshape(samples, *y.shape)
            if self.kind == "gaussian":
                noise = torch.randn((samples, *out.shape), generator=generator,
                                    dtype=out.dtype, device=out.device)
                return (out + noise / math.sqrt(2.0)).reshape(samples, *y.shape).to(y.dtype)
            p = torch.sigmoid(out).expand(samples, *out.shape)
            return torch.bernoulli(p, generator=generator).reshape(samples, *y.shape).to(y.dtype)

    def score(self, out: Any, y: Any) -> Any:
        """g = ∇_ŷ(−log q(y | ŷ)) in the output's layout (zero on ignored terms).

        Parameters
        ----------
        out, y : torch.Tensor
            Model outputs and targets.

        Returns
        -------
        torch.Tensor
            Shaped like ``out``.
        """
        import torch
        import torch.nn.functional as F

        yt = self.terms(out, y)
        if self.kind == "categorical":
            axis = self.axis
            kept = self._kept(yt)
            onehot = F.one_hot(torch.where(kept, yt, 0), out.shape[axis])
            onehot = onehot.movedim(-1, axis).to(out.dtype)
            return (torch.softmax(out, dim=axis) - onehot) * kept.unsqueeze(axis)
        if self.kind == "gaussian":
            return 2.0 * (out - yt.to(out.dtype))
        return torch.sigmoid(out) - yt.to(out.dtype)

    def outer(self, g: Any, v: Any) -> Any:
        """(g gᵀ) v per term: summed over the class axis for a categorical, per element
        for the others (their elements are independent given ŷ).

        Parameters
        ----------
        g, v : torch.Tensor
            A score and an output-space vector, shaped alike.

        Returns
        -------
        torch.Tensor
        """
        if self.kind == "categorical":
            return g * (g * v).sum(dim=self.axis, keepdim=True)
        return g * g * v


def _ratio(likelihood: Likelihood, loss_fn: Callable[..., Any], out: Any,
           y: Any) -> float | None:
    """loss_fn(ŷ, y) / nll_sum(ŷ, y), or None where the NLL is 0 (a perfect fit) or not finite."""
    import torch

    with torch.no_grad():
        nll = float(likelihood.nll_sum(out, y))
        loss = float(loss_fn(out, y))
    if not math.isfinite(nll) or nll <= 0.0 or not math.isfinite(loss):
        return None
    return loss / nll


def _reference(likelihood: Likelihood, out: Any) -> Any:
    """An output where every kept term's NLL is positive: zero logits, or ŷ shifted by 1."""
    import torch

    return out + 1.0 if likelihood.kind == "gaussian" else torch.zeros_like(out)


def loss_scale(likelihood: Likelihood, loss_fn: Callable[..., Any], out: Any, y: Any,
               drawn: Any) -> float | None:
    """The scale c with loss_fn = c·nll_sum, checked on this batch; None when loss_fn is
    not such a multiple here.

    c is read at a reference output (zero logits, or ŷ + 1 for a Gaussian), where every
    NLL term is positive, and must agree to 10·√eps relative with the ratio at the real
    targets and at drawn ones wherever those are defined.

    Parameters
    ----------
    likelihood : Likelihood
        The laid-out likelihood.
    loss_fn : callable
        The caller's loss.
    out, y, drawn : torch.Tensor
        The batch's outputs, targets and one draw of targets from the model.

    Returns
    -------
    float or None
    """
    import torch

    c = _ratio(likelihood, loss_fn, _reference(likelihood, out), y)
    if c is None:
        return None
    rtol = 10.0 * math.sqrt(torch.finfo(out.dtype).eps)
    for targets in (y, drawn):
        ratio = _ratio(likelihood, loss_fn, out, targets)
        if ratio is not None and not math.isclose(ratio, c, rel_tol=rtol):
            return None
    return c


def _candidates(kind: str, out: Any, y: Any, ignore_index: int | None) -> list[Likelihood]:
    if kind != "categorical":
        return [Likelihood(kind)] if out.numel() == y.numel() else []
    if y.is_floating_point():
        return []
    found = []
    if out.ndim >= 2 and tuple(out.shape[:1] + out.shape[2:]) == tuple(y.shape):
        found.append(Likelihood(kind, 1, ignore_index))
    if out.ndim > 2 and out.numel() // out.shape[-1] == y.numel():
        found.append(Likelihood(kind, out.ndim - 1, ignore_index))
    return found


def resolve(kind: str, loss_fn: Callable[..., Any], out: Any, y: Any,
            generator: Any) -> Likelihood:
    """The likelihood's layout on this output, checked against the caller's loss.

    A layout is accepted when ``loss_fn`` is the same multiple c of the negative
    log-likelihood at a reference output, at the real targets and at targets drawn from
    the model (:func:`loss_scale`); a loss that is not a multiple of this likelihood's
    NLL fails that test.

    Parameters
    ----------
    kind : str
        ``"categorical"``, ``"gaussian"`` or ``"bernoulli"``.
    loss_fn : callable
        The caller's loss.
    out, y : torch.Tensor
        A batch's model outputs and targets.
    generator : torch.Generator
        Draws the check's targets.

    Returns
    -------
    Likelihood

    Raises
    ------
    ValueError
        An unknown kind, or no layout of the output and targets makes ``loss_fn`` a
        multiple of the NLL.
    """
    if kind not in KINDS:
        raise ValueError(f"likelihood must be one of {', '.join(KINDS)}; got {kind!r}")
    ignore = getattr(loss_fn, "ignore_index", None)
    ignore = ignore if isinstance(ignore, int) and ignore >= 0 else None
    for likelihood in _candidates(kind, out, y, ignore):
        drawn = likelihood.sample(out, y, 1, generator)[0]
        if loss_scale(likelihood, loss_fn, out, y, drawn) is not None:
            return likelihood
    raise mismatch(kind, out, y)


def detect(loss_fn: Callable[..., Any], out: Any, y: Any, generator: Any) -> Likelihood:
    """The one likelihood (and layout) of which ``loss_fn`` is a multiple on this batch.

    Parameters
    ----------
    loss_fn : callable
        The caller's loss.
    out, y : torch.Tensor
        A batch's model outputs and targets.
    generator : torch.Generator
        Draws the check's targets.

    Returns
    -------
    Likelihood

    Raises
    ------
    ValueError
        None of the three fits.
    """
    for kind in KINDS:
        try:
            return resolve(kind, loss_fn, out, y, generator)
        except ValueError:
            continue
    raise mismatch(" / ".join(KINDS), out, y)


def mismatch(kind: str, out: Any, y: Any) -> ValueError:
    """The error for a loss that is not a multiple of the likelihood's NLL.

    Parameters
    ----------
    kind : str
        The likelihood(s) tried.
    out, y : torch.Tensor
        The batch's outputs and targets (their shapes go into the message).

    Returns
    -------
    ValueError
    """
    return ValueError(
        f"loss_fn is not a constant multiple of the {kind} negative log-likelihood on "
        f"outputs of shape {tuple(out.shape)} and targets of shape {tuple(y.shape)} "
        f"(label smoothing, class weights or a custom ignore index change it): the Monte-"
        f"Carlo Fisher is the Fisher of such a likelihood — for other losses use "
        f"gauss_newton_operator or empirical_fisher_operator")

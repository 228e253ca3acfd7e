"""The caller's data as the torch operators read it: held or streamed, in microbatches.

Every product is a sum over the data, Σ_b (B_b/N) (per-batch term), so the data are read
once per product. Three ways:

- **held**: the batches are cast to the operator's dtype and device once and kept — a
  one-shot iterator must be held (it cannot be read again), and a list or tuple is when
  its cast copy is small (``hold_bytes``), so a GPU model does not copy it every product;
- **streamed**: anything else iterable again (a ``torch.utils.data.DataLoader``, a large
  list) is read anew for every product, one batch in memory at a time; each pass must
  give the same batch sizes as the first (checked), so a shuffling loader is fine for
  the Hessian, the GGN and the empirical Fisher, whose sums do not depend on the order;
- **microbatches** (``microbatch=k``): each batch is split along its leading axis into
  pieces of at most k examples, each weighted by its own size, which bounds the memory of
  one forward and backward pass. This is exact when the batch loss is a mean over
  examples; a loss that couples a batch's examples (a token mean with padding, train-mode
  BatchNorm) is then the microbatches' loss, not the batch's.

An operator whose terms belong to particular inputs (the Monte-Carlo Fisher's targets are
drawn for them) asks for ``same_inputs``: a streamed pass must then give each piece the
inputs and targets it had in the first pass, checked by a float64 fingerprint of each
piece (its sum and its position-weighted sum, so a reshuffle is caught, not only new data).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

__all__ = ["HOLD_BYTES", "Batches", "decide_hold"]

HOLD_BYTES = 1 << 30  # a list's cast copy is held when at most this large


def cast(value: Any, dtype: Any, device: Any) -> Any:
    """A batch's inputs or targets on the model's device, floating tensors in ``dtype``.

    Parameters
    ----------
    value : tensor, array, tuple/list or dict of them, or None
        Inputs or targets (None for a loss without targets).
    dtype : torch.dtype
        The operator's floating dtype.
    device : torch.device
        The model's device.

    Returns
    -------
    The same structure of tensors.
    """
    import torch

    if value is None:  # a loss without targets
        return None
    if isinstance(value, dict):
        return {k: cast(v, dtype, device) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(cast(v, dtype, device) for v in value)
    t = torch.as_tensor(value)
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)


def map_tensors(fn: Callable[[Any], Any], value: Any) -> Any:
    """``fn`` on every tensor of a batch's inputs or targets.

    Parameters
    ----------
    fn : callable
        Applied to each tensor.
    value : tensor, tuple/list or dict of them, or None
        The structure; None stays None.

    Returns
    -------
    The same structure of ``fn``'s results.
    """
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(map_tensors(fn, v) for v in value)
    return None if value is None else fn(value)


def size_of(inputs: Any) -> int:
    """Examples in a batch: the leading dimension of its (first) input tensor.

    Parameters
    ----------
    inputs : tensor, tuple/list or dict of tensors
        A batch's inputs.

    Returns
    -------
    int
    """
    if isinstance(inputs, dict):
        inputs = next(iter(inputs.values()))
    elif isinstance(inputs, tuple | list):
        inputs = inputs[0]
    return int(inputs.shape[0])


def _nbytes(value: Any, itemsize: int) -> int:
    return itemsize * sum(math.prod(int(d) for d in getattr(t, "shape", ()))
                          for t in _leaves(value))


def _fingerprint(value: Any) -> tuple[float, float]:
    """Sum and position-weighted sum of every floating or integer entry, in float64."""
    import torch

    total, weighted = 0.0, 0.0
    for t in _leaves(value):
        flat = t.detach().reshape(-1).to(torch.float64)
        total += float(flat.sum())
        weighted += float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64,
                                               device=flat.device)).sum())
    return total, weighted


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(p == q or (p != p and q != q) for p, q in zip(a, b, strict=True))  # NaN ≡ NaN


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _leaves(v)
    elif value is not None:
        yield value


def decide_hold(batches: Iterable[Any], dtype: Any, hold: bool | None) -> bool:
    """Whether the batches are held: as asked, else for a one-shot iterator (it cannot be
    read again) and for a sequence whose cast copy is at most ``HOLD_BYTES``.

    Parameters
    ----------
    batches : iterable of (inputs, targets)
        The data.
    dtype : torch.dtype
        Floating dtype of the copies.
    hold : bool, optional
        The caller's choice.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        ``hold=False`` for a one-shot iterator.
    """
    import torch

    one_shot = isinstance(batches, Iterator)
    if one_shot and hold is False:
        raise ValueError("batches is an iterator, which can be read only once: it cannot "
                         "be streamed for every product; pass a list or a DataLoader, "
                         "or hold=True")
    if hold is not None:
        return bool(hold)
    itemsize = torch.finfo(dtype).bits // 8
    return one_shot or (isinstance(batches, Sequence) and sum(
        _nbytes(x, itemsize) + _nbytes(y, itemsize) for x, y in batches) <= HOLD_BYTES)


class Batches:
    """The data of one operator: ``for index, inputs, targets, size in batches``.

    Parameters
    ----------
    batches : iterable of (inputs, targets)
        A list or tuple, a DataLoader, or a one-shot iterator.
    dtype : torch.dtype
        Floating dtype of the copies.
    device : torch.device
        Where the products run.
    microbatch : int, optional
        Split each batch into pieces of at most this many examples.
    hold : bool, optional
        Keep the cast batches (True), read them anew each product (False), or decide:
        held for one-shot iterators and for sequences whose cast copy is at most
        ``HOLD_BYTES``.
    same_inputs : bool
        Streamed passes must repeat the first pass's inputs and targets piece by piece
        (checked).

    Raises
    ------
    ValueError
        No data, a bad ``microbatch``, or ``hold=False`` for a one-shot iterator.
    """

    def __init__(self, batches: Iterable[Any], dtype: Any, device: Any, *,
                 microbatch: int | None = None, hold: bool | None = None,
                 same_inputs: bool = False) -> None:

        if microbatch is not None and (int(microbatch) != microbatch or microbatch < 1):
            raise ValueError(f"microbatch must be a positive integer, got {microbatch!r}")
        self.dtype, self.device, self.microbatch = dtype, device, microbatch
        hold = decide_hold(batches, dtype, hold)
        self.source = batches
        self.held: list[tuple[Any, Any]] | None = None
        self.fingerprints: list[tuple[float, float]] | None = None
        if hold:
            self.held = [piece for x, y in batches for piece in self._pieces(x, y)]
            self.sizes = [size_of(x) for x, _ in self.held]
        elif same_inputs:
            pieces = [(size_of(x), _fingerprint((x, y))) for x_raw, y_raw in batches
                      for x, y in self._pieces(x_raw, y_raw)]
            self.sizes = [size for size, _ in pieces]
            self.fingerprints = [print_ for _, print_ in pieces]
        else:
            self.sizes = [size for x, y in batches for size in self._piece_sizes(x)]
        if not self.sizes:
            raise ValueError("batches is empty")
        self.total = float(sum(self.sizes))

    def _piece_sizes(self, x: Any) -> list[int]:
        n = size_of(x)  # an empty batch adds nothing (and its mean loss is NaN)
        step = n if self.microbatch is None else int(self.microbatch)
        return [min(step, n - start) for start in range(0, n, max(step, 1))]

    def _pieces(self, x: Any, y: Any) -> Iterator[tuple[Any, Any]]:
        sizes = self._piece_sizes(x)
        if not sizes:
            return
        x, y = cast(x, self.dtype, self.device), cast(y, self.dtype, self.device)
        if len(sizes) == 1:
            yield x, y
            return
        start = 0
        for size in sizes:
            take = operator.itemgetter(slice(start, start + size))
            yield map_tensors(take, x), map_tensors(take, y)
            start += size

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[tuple[int, Any, Any, int]]:
        if self.held is not None:
            for index, (x, y) in enumerate(self.held):
                yield index, x, y, self.sizes[index]
            return
        index = 0
        for x_raw, y_raw in self.source:
            for x, y in self._pieces(x_raw, y_raw):
                size = size_of(x)
                if index >= len(self.sizes) or size != self.sizes[index]:
                    raise ValueError(
                        f"the data changed between passes: batch piece {index} has {size} "
                        f"examples where the first pass had "
                        f"{self.sizes[index] if index < len(self.sizes) else 'none'} (a "
                        f"DataLoader must give the same batch sizes every time it is read)")
                if (self.fingerprints is not None
                        and not _same(_fingerprint((x, y)), self.fingerprints[index])):
                    raise ValueError(
                        f"the data changed between passes: batch piece {index} has other "
                        f"inputs or targets than in the first pass, and this operator's terms "
                        f"belong to them (the Monte-Carlo Fisher's targets were drawn for "
                        f"them); use a DataLoader with shuffle=False, or hold=True")
                yield index, x, y, size
                index += 1
        if index != len(self.sizes):
            raise ValueError(f"the data changed between passes: {index} batch pieces where "
                             f"the first pass had {len(self.sizes)}")

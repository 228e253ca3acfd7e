"""Empirical spectral density (ESD) of one weight: orientation, conv kernels, dtype policy.

Conventions (docs/science.md §1): W is N×M after transposing so that N ≥ M, Q = N/M, and
the ESD is the M eigenvalues of X = WᵀW/N (``normalize=True``) or of WᵀW
(``normalize=False``, WeightWatcher's eigenvalues). Conv kernels (out, in, kh, kw)
give kh·kw matrices W[:, :, i, j] of out×in, each oriented and normalised on its own,
their eigenvalues pooled (``conv="slices"``, WeightWatcher's default without its
extra conv2d_norm factor) or one out×(in·kh·kw) matrix (``conv="flatten"``). A 3-D
tensor is read as a Conv1d kernel (out, in, k) by the same rule.

Precision: the Gram matrix on the small side is accumulated from row blocks in
``dtype`` (float64 by default) and handed to a symmetric eigensolver; the error is
about (√N + M)·eps(dtype)·λmax (≤ 5e-14·λmax measured in float64, ≤ 3.1e-5·λmax in
float32; ``benchmarks/esd.py``). Output is always float64, ascending.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rmt import config
from rmt._device import Device, array_namespace, is_cupy_array, kernels, resolve_device, to_host
from rmt._dtypes import accumulation_dtype, storage_kind
from rmt._threads import limit_threads
from rmt.errors import EmptyWeightError, NonFiniteError, ShapeError, WeightError

__all__ = ["WeightShape", "esd", "esd_batch", "esds_together", "stored_matrices", "weight_shape"]

Conv = Literal["slices", "flatten"]



@dataclass(frozen=True)
class WeightShape:
    """How a weight tensor is read as matrices.

    Attributes
    ----------
    N, M : int
        Rows and columns of each oriented matrix (N ≥ M).
    n_slices : int
        Matrices pooled into the ESD (kh·kw for a conv kernel with ``conv="slices"``);
        ``num_slices`` and ``num_evals`` are ``n_slices`` and ``n_evals`` under the table
        columns' names.
    transpose : bool
        Whether the stored matrix (or slice) is transposed to make N ≥ M.
    """

    N: int
    M: int
    n_slices: int
    transpose: bool

    @property
    def Q(self) -> float:
        """Aspect ratio N/M ≥ 1."""
        return self.N / self.M

    @property
    def n_evals(self) -> int:
        """Length of the ESD, M·n_slices."""
        return self.M * self.n_slices

    @property
    def num_slices(self) -> int:
        """``n_slices`` under the table column's name."""
        return self.n_slices

    @property
    def num_evals(self) -> int:
        """``n_evals`` under the table column's name."""
        return self.n_evals


def _as_array(W: Any) -> Any:
    if isinstance(W, np.ndarray) or is_cupy_array(W):
        return W
    return np.asarray(W)


def _check_conv(conv: Any) -> None:
    if conv not in ("slices", "flatten"):
        raise ValueError(f"conv must be 'slices' or 'flatten', got {conv!r}")


def weight_shape(
    shape: Sequence[int], conv: Conv = "slices", name: str | None = None
) -> WeightShape:
    """Read a tensor shape as matrices (the orientation and conv rule of :func:`esd`).

    Parameters
    ----------
    shape : sequence of int
        The tensor's shape: 2-D (out, in), 3-D Conv1d (out, in, k) or 4-D Conv2d
        (out, in, kh, kw).
    conv : {"slices", "flatten"}
        How to read 3-D and 4-D kernels.
    name : str, optional
        Layer name for error messages.

    Returns
    -------
    WeightShape

    Raises
    ------
    ShapeError
        Fewer than 2 or more than 4 dimensions.
    EmptyWeightError
        A dimension of length zero.
    """
    _check_conv(conv)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ShapeError(
            f"has {len(shape)} dimension(s) (shape {shape}); an ESD needs a matrix or a "
            "conv kernel (2 to 4 dimensions)",
            name,
        )
    if len(shape) > 4:
        raise ShapeError(
            f"has {len(shape)} dimensions (shape {shape}); at most 4 are supported", name
        )
    if 0 in shape:
        raise EmptyWeightError(f"is empty (shape {shape})", name)
    rows, cols = shape[0], shape[1]
    k = int(np.prod(shape[2:], dtype=np.int64)) if len(shape) > 2 else 1
    if len(shape) > 2 and conv == "flatten":
        rows, cols, k = shape[0], cols * k, 1
    return WeightShape(N=max(rows, cols), M=min(rows, cols), n_slices=k, transpose=rows < cols)


def _raise_nonfinite(W: Any, acc: np.dtype, name: str | None) -> None:
    """Count NaN/Inf entries block by block (error path only) and raise a precise error."""
    flat = W.reshape(W.shape[0], -1) if W.ndim > 2 else W
    n_nan = n_inf = 0
    largest = 0.0
    step = max(1, (16 * 2**20) // max(1, flat.shape[1] * 8))
    for start in range(0, flat.shape[0], step):
        block = flat[start : start + step]
        if not is_cupy_array(block):
            block = np.asarray(block).astype(np.float64)
        n_nan += int(np.isnan(block).sum())
        n_inf += int(np.isinf(block).sum())
        largest = max(largest, float(np.nanmax(np.abs(block), initial=0.0)))
    if n_nan or n_inf:
        parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "Inf")) if n]
        raise NonFiniteError(f"contains {' and '.join(parts)} entries", name)
    raise NonFiniteError(
        f"has entries so large that their squares overflow the {acc} accumulator "
        f"(max |w| = {largest:.3g})",
        name,
    )


def _check_gram(G: Any, W: Any, acc: np.dtype, name: str | None) -> None:
    # Every entry of W enters a diagonal element Σ w², so one O(M) check of the Gram
    # diagonal catches NaN, Inf and overflow without another pass over W.
    if not bool(np.all(np.isfinite(np.diagonal(G, axis1=-2, axis2=-1)))):
        _raise_nonfinite(W, acc, name)


def stored_matrices(W: Any, conv: Conv = "slices") -> list[Any]:
    """The matrices a weight is read as, in its stored orientation (views, no copies).

    Parameters
    ----------
    W : array
        A matrix, or a kernel (out, in, k...) (NumPy or CuPy).
    conv : {"slices", "flatten"}
        Each kh·kw slice W[:, :, i, j] in row-major order, or the out × (in·kh·kw) matrix.

    Returns
    -------
    list of array
    """
    if W.ndim == 2 or conv == "flatten":
        return [W.reshape(W.shape[0], -1)]
    flat = W.reshape(W.shape[0], W.shape[1], -1)
    return [flat[:, :, i] for i in range(flat.shape[2])]


def _slices(W: Any, shape: WeightShape) -> Any:
    """Stack (k, N, M) of the oriented slices W[:, :, i, j] of a conv kernel."""
    out_ch, in_ch = W.shape[0], W.shape[1]
    stack = W.reshape(out_ch, in_ch, -1).transpose(2, 0, 1)
    if shape.transpose:
        stack = stack.transpose(0, 2, 1)
    return stack


def _validated(W: Any, conv: Conv, name: str | None) -> tuple[Any, WeightShape]:
    W = _as_array(W)
    shape = weight_shape(W.shape, conv, name)
    storage_kind(W.dtype, name)
    if W.ndim > 2 and conv == "flatten":
        W = W.reshape(W.shape[0], -1)
    return W, shape


def _eigenvalues(W: Any, shape: WeightShape, device: Device, acc: np.dtype,
                 block_rows: int | None, name: str | None) -> np.ndarray:
    K = kernels(device)  # type: ignore[arg-type]
    if W.ndim == 2:
        G = K.gram(W, transpose=shape.transpose, dtype=acc, block_rows=block_rows)
        _check_gram(G, W, acc, name)
        return K.eigvalsh(G)
    stack = _slices(W, shape)
    per_batch = max(1, config.ESD_BATCH_BYTES // (shape.N * shape.M * 8 + shape.M * shape.M * 8))
    parts = []
    for start in range(0, shape.n_slices, per_batch):
        G = K.gram_stack(stack[start : start + per_batch], dtype=acc)
        _check_gram(G, W, acc, name)
        parts.append(K.eigvalsh(G).ravel())
    return np.sort(np.concatenate(parts))


def esd(
    W: Any,
    *,
    normalize: bool = True,
    conv: Conv = "slices",
    device: Device = "auto",
    dtype: Any = np.float64,
    n_threads: int | None = None,
    block_rows: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Empirical spectral density of a weight: the eigenvalues of X = WᵀW/N.

    Parameters
    ----------
    W : array_like, 2-D, 3-D or 4-D
        The weight in its storage dtype: a NumPy array or memmap (float64, float32,
        float16, bfloat16 or a 1-byte ``ml_dtypes`` float) or a CuPy array. Transposed
        internally so that N ≥ M. Conv kernels are (out, in, kh, kw); 3-D tensors are
        Conv1d kernels (out, in, k).
    normalize : bool, default True
        Divide by N (X = WᵀW/N, Martin & Mahoney); ``False`` gives the eigenvalues of
        WᵀW (WeightWatcher's convention).
    conv : {"slices", "flatten"}, default "slices"
        ``"slices"``: pool the eigenvalues of the kh·kw matrices W[:, :, i, j], each
        oriented and normalised on its own. ``"flatten"``: one out×(in·kh·kw) matrix.
    device : {"auto", "cpu", "gpu"}, default "auto"
        ``"auto"`` uses the GPU when CuPy imports and a CUDA device is present (or W
        is a CuPy array), else the CPU. ``"gpu"`` without one raises ``DeviceError``.
    dtype : {numpy.float64, numpy.float32}, default numpy.float64
        Accumulation and eigensolver dtype. float64 error ≈ (√N + M)·1.1e-16·λmax;
        float32 error ≈ (√N + M)·6e-8·λmax.
    n_threads : int, optional
        BLAS and Numba threads for this call (default: the limits already in force —
        ``OMP_NUM_THREADS``, threadpoolctl, Numba — never more).
    block_rows : int, optional
        Rows per block of the Gram accumulation (default: ~1 MiB, ≥ 512-row blocks on the
        CPU, or
        the whole matrix when it is already in the accumulation dtype).
    name : str, optional
        Layer name used in error messages.

    Returns
    -------
    numpy.ndarray of float64, shape (M·n_slices,)
        Eigenvalues in ascending order. Round-off can make eigenvalues of a
        rank-deficient W slightly negative (≥ −M·eps·λmax); they are returned as
        computed.

    Raises
    ------
    rmt.errors.ShapeError, rmt.errors.EmptyWeightError, rmt.errors.DTypeError,
    rmt.errors.NonFiniteError
        All ``ValueError`` subclasses naming ``name`` and the problem.
    rmt.errors.DeviceError
        ``device="gpu"`` without a usable CUDA device.

    References
    ----------
    C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural
    networks", JMLR 22(165), 2021, §3 (normalisation X = WᵀW/N).
    """
    acc = accumulation_dtype(dtype)
    W, shape = _validated(W, conv, name)
    dev = resolve_device(device, W)
    if dev == "cpu" and is_cupy_array(W):
        W = to_host(W)  # an explicit CPU request for a device array: bring it to the host
    with limit_threads(n_threads):
        ev = _eigenvalues(W, shape, dev, acc, block_rows, name)
    ev = np.asarray(ev, dtype=np.float64)
    if normalize:
        ev /= shape.N
    ev.sort()
    return ev


def esds_together(weights: Sequence[Any], *, normalize: bool = True, conv: Conv = "slices",
                  device: Device = "auto", n_threads: int | None = None,
                  name: str | None = None) -> list[np.ndarray]:
    """ESDs of a few matrices of one shape, their eigenvalues solved together on the CPU.

    For 2-D matrices on the host whose Gram matrices fit ``config.ESD_BATCH_BYTES``
    together, each Gram matrix is formed as :func:`esd` forms it and the eigenvalues of
    all of them come from one lockstep QL iteration (``rmt.kernels.cpu.eigvalsh_together``:
    two 384 × 384 ESDs 17% faster than one after the other). Anything else — conv
    kernels, device arrays, mixed shapes, large matrices — goes through :func:`esd` one by
    one. Precision as :func:`esd` (float64; the bits differ from ``syevd``'s by rounding).

    Parameters
    ----------
    weights : sequence of array_like
        The matrices (a weight and, say, its shuffled copy).
    normalize, conv, device, n_threads
        As in :func:`esd`.
    name : str, optional
        Layer name for error messages.

    Returns
    -------
    list of numpy.ndarray
        One float64 ascending ESD per weight, in order.
    """
    checked = [_validated(W, conv, name) for W in weights]
    arrays, shapes = [W for W, _ in checked], [shape for _, shape in checked]
    M = shapes[0].M
    together = (len(arrays) > 1 and all(W.ndim == 2 for W in arrays)
                and len({W.shape for W in arrays}) == 1
                and all(resolve_device(device, W) == "cpu" and not is_cupy_array(W)
                        for W in arrays)
                and len(arrays) * M * M * 8 <= config.ESD_BATCH_BYTES)
    if not together:
        return [esd(W, normalize=normalize, conv=conv, device=device, n_threads=n_threads,
                    name=name) for W in arrays]
    f64 = np.dtype(np.float64)
    K = kernels("cpu")
    with limit_threads(n_threads):
        grams = []
        for W, shape in zip(arrays, shapes, strict=True):
            G = K.gram(W, transpose=shape.transpose, dtype=f64)
            _check_gram(G, W, f64, name)
            grams.append(G)
        evs = K.eigvalsh_together(grams)
    return [np.sort(ev / shape.N if normalize else ev) for ev, shape in zip(evs, shapes,
                                                                              strict=True)]


def esd_batch(
    weights: Iterable[Any],
    *,
    normalize: bool = True,
    conv: Conv = "slices",
    device: Device = "auto",
    dtype: Any = np.float64,
    n_threads: int | None = None,
    names: Sequence[str] | None = None,
    on_error: Literal["raise", "return"] = "raise",
) -> list[np.ndarray | WeightError]:
    """ESDs of many weights, batching small same-shape matrices into one eigensolve.

    2-D weights with equal shape, dtype and orientation whose Gram matrices fit in
    ``config.ESD_BATCH_BYTES`` together are stacked, and their eigenvalues come from one batched
    call (one cuSOLVER launch on the GPU, one loop inside NumPy on the CPU). Other
    weights go through :func:`esd` one at a time.

    Parameters
    ----------
    weights : iterable of array_like
        The weights, as accepted by :func:`esd`.
    normalize, conv, device, dtype, n_threads
        As in :func:`esd`.
    names : sequence of str, optional
        Layer names for error messages, one per weight.
    on_error : {"raise", "return"}, default "raise"
        ``"return"`` puts the :class:`~rmt.errors.WeightError` of a bad weight in its
        slot of the result and carries on with the others.

    Returns
    -------
    list of numpy.ndarray (or WeightError with ``on_error="return"``)
        One float64 ascending ESD per weight, in input order.
    """
    if on_error not in ("raise", "return"):
        raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
    acc = accumulation_dtype(dtype)
    weights = [_as_array(W) for W in weights]
    names = list(names) if names is not None else [None] * len(weights)  # type: ignore[list-item]
    if len(names) != len(weights):
        raise ValueError(f"got {len(names)} names for {len(weights)} weights")
    results: list[Any] = [None] * len(weights)
    groups: dict[tuple, list[int]] = {}
    for i, (W, nm) in enumerate(zip(weights, names, strict=True)):
        try:
            _, shape = _validated(W, conv, nm)
        except WeightError as err:
            if on_error == "raise":
                raise
            results[i] = err
            continue
        if W.ndim == 2 and shape.M * shape.M * 8 * 2 <= config.ESD_BATCH_BYTES:
            groups.setdefault((W.shape, W.dtype.str, is_cupy_array(W)), []).append(i)
        else:
            groups.setdefault(("single", i), []).append(i)

    def run_single(i: int) -> None:
        try:
            results[i] = esd(weights[i], normalize=normalize, conv=conv, device=device,
                             dtype=acc, n_threads=n_threads, name=names[i])
        except WeightError as err:
            if on_error == "raise":
                raise
            results[i] = err

    with limit_threads(n_threads):
        for key, members in groups.items():
            if key[0] == "single" or len(members) == 1:
                for i in members:
                    run_single(i)
                continue
            _run_stacked(weights, members, results, normalize, device, acc, run_single)
    return results


def _run_stacked(
    weights: list[Any],
    members: list[int],
    results: list[Any],
    normalize: bool,
    device: Device,
    acc: np.dtype,
    run_single: Any,
) -> None:
    """ESDs of same-shape 2-D weights ``members`` by batched Gram + eigensolve."""
    first = weights[members[0]]
    shape = weight_shape(first.shape)
    dev = resolve_device(device, first)
    K = kernels(dev)
    each = shape.N * shape.M * acc.itemsize + shape.M**2 * 8
    per_batch = max(1, config.ESD_BATCH_BYTES // each)
    for start in range(0, len(members), per_batch):
        chunk = members[start : start + per_batch]
        xp = array_namespace(weights[chunk[0]])
        stack = xp.stack([weights[i] for i in chunk])
        if dev == "cpu" and xp is not np:
            stack = to_host(stack)
        if shape.transpose:
            stack = stack.transpose(0, 2, 1)
        G = K.gram_stack(stack, dtype=acc)
        finite = to_host(np.all(np.isfinite(np.diagonal(G, axis1=-2, axis2=-1)), axis=-1))
        if not finite.all():
            # A bad member spoils nothing else: redo the chunk one by one for exact errors.
            for i in chunk:
                run_single(i)
            continue
        ev = np.asarray(K.eigvalsh(G), dtype=np.float64)
        if normalize:
            ev /= shape.N
        for row, i in zip(ev, chunk, strict=True):
            results[i] = np.sort(row)

"""GPU kernels (CuPy): blocked Gram accumulation, decoding, batched eigenvalues.

Twin of :mod:`rmt.kernels.cpu`: the same function names and signatures. CuPy is
imported lazily inside the functions; import this module freely on a machine
without a GPU. The array logic is written against an array namespace ``xp`` so the
same code runs with ``xp=numpy`` in the CPU test suite (``_gram``, ``_decode``) and
with ``xp=cupy`` here.

Precision
---------
Blocks are decoded on the device (bit lookup for 1- and 2-byte formats, exact) and
accumulated by cuBLAS GEMM in the accumulation dtype (float64 by default);
eigenvalues come from cuSOLVER ``syevd`` (batched ``syevj`` for stacks of M ≤ 32).
Expected error is of the order ``(√N + M)·eps·λmax``, as on the CPU. Results return to
the host as NumPy arrays.

Host inputs are streamed block by block (one block resident on the device at a time
plus the M×M Gram matrix); CuPy inputs are used in place.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from rmt import config
from rmt._device import cupy_or_none, is_cupy_array, to_host
from rmt._dtypes import accumulation_dtype, decode_table, storage_kind
from rmt.errors import DeviceError

__all__ = ["decode", "eigh", "eigh_top", "eigvalsh", "gram", "gram_stack", "ks_distances",
           "permuted"]



def _cupy() -> ModuleType:
    cp = cupy_or_none()
    if cp is None:
        raise DeviceError("rmt.kernels.gpu needs CuPy and a usable CUDA device")
    return cp


def _decode(block: Any, out_dtype: np.dtype, xp: ModuleType) -> Any:
    """Decode a 2-D block of any storage dtype to ``out_dtype`` in namespace ``xp``.

    Host blocks of 1- or 2-byte formats travel as their raw bits (half or a quarter of
    the bytes of float32) and are decoded on the device by table lookup.
    """
    if is_cupy_array(block) or storage_kind(block.dtype) == "native" or block.dtype == np.float16:
        arr = xp.asarray(block)
        return xp.ascontiguousarray(arr.astype(out_dtype, copy=False))
    bits = xp.asarray(np.ascontiguousarray(block).view(
        np.uint16 if block.dtype.itemsize == 2 else np.uint8))
    table = xp.asarray(decode_table(block.dtype, out_dtype))
    return xp.take(table, bits.astype(xp.int32))


def _gram(
    W: Any,
    transpose: bool,
    dtype: np.dtype,
    block_rows: int | None,
    xp: ModuleType,
) -> Any:
    """AᵀA (full, symmetric) of A = Wᵀ or W, accumulated over row blocks of A in ``xp``.

    A row block of A = Wᵀ is a column block of W; it is moved as W[:, a:b] (a copy of
    contiguous row segments, no transposition on the host) and its contribution is
    W[:, a:b]·W[:, a:b]ᵀ.
    """
    acc = accumulation_dtype(dtype)
    n_rows, m = (W.shape[1], W.shape[0]) if transpose else W.shape
    if block_rows is None:
        block_rows = config.GPU_GRAM_BLOCK_BYTES // (m * acc.itemsize)
    block_rows = int(max(1, min(block_rows, n_rows)))
    G = xp.zeros((m, m), dtype=acc)
    for start in range(0, n_rows, block_rows):
        if transpose:
            C = _decode(W[:, start : start + block_rows], acc, xp)
            G += C @ C.T
        else:
            B = _decode(W[start : start + block_rows], acc, xp)
            G += B.T @ B
    return G


def decode(block: Any, out: Any) -> Any:
    """Convert a 2-D block (host or device, any supported storage dtype) into ``out``.

    Parameters
    ----------
    block : numpy.ndarray or cupy.ndarray, shape (b, M)
        The block in its storage dtype.
    out : cupy.ndarray, shape (b, M)
        Float64 or float32 device destination.

    Returns
    -------
    cupy.ndarray
        ``out`` holding the exact values of ``block``.
    """
    cp = _cupy()
    out[...] = _decode(block, out.dtype, cp)
    return out


def gram(
    W: Any,
    *,
    transpose: bool = False,
    dtype: np.dtype | type = np.float64,
    block_rows: int | None = None,
) -> Any:
    """Gram matrix AᵀA of A = Wᵀ (``transpose``) or W on the GPU.

    Parameters
    ----------
    W : numpy.ndarray, numpy.memmap or cupy.ndarray, 2-D
        The weight in its storage dtype; host arrays are streamed by row blocks.
    transpose : bool
        Use A = Wᵀ.
    dtype : {float64, float32}
        Accumulation dtype.
    block_rows : int, optional
        Rows of A per block; default ``config.GPU_GRAM_BLOCK_BYTES`` worth of decoded rows.

    Returns
    -------
    cupy.ndarray, shape (M, M)
        The full symmetric Gram matrix (its lower triangle is what ``eigvalsh`` reads).
    """
    return _gram(W, transpose, np.dtype(dtype), block_rows, _cupy())


def gram_stack(stack: Any, *, dtype: np.dtype | type = np.float64) -> Any:
    """Gram matrices AₖᵀAₖ of a stack (k, N, M) of oriented same-shape matrices.

    Parameters
    ----------
    stack : cupy.ndarray or numpy.ndarray, shape (k, N, M)
        Oriented (N ≥ M), any supported storage dtype.
    dtype : {float64, float32}
        Accumulation dtype.

    Returns
    -------
    cupy.ndarray, shape (k, M, M)
    """
    cp = _cupy()
    acc = accumulation_dtype(dtype)
    k, n, m = stack.shape
    A = _decode(stack.reshape(k * n, m), acc, cp).reshape(k, n, m)
    return cp.matmul(A.transpose(0, 2, 1), A)


SYEVJ_BATCHED_MAX_N = 32  # cuSOLVER's syevjBatched is documented for n <= 32 only


def _eigvalsh(G: Any, xp: ModuleType) -> Any:
    """Eigenvalues of one matrix or a stack in namespace ``xp``, by the right solver per size.

    ``cupy.linalg.eigvalsh`` sends every stack to cuSOLVER's batched Jacobi solver
    (``syevjBatched``), which is meant for n ≤ 32; larger stacks are solved one matrix at
    a time by divide and conquer (``syevd``), the accurate and fast path at that size.
    """
    G = xp.asarray(G)
    if G.ndim == 2 or G.shape[-1] <= SYEVJ_BATCHED_MAX_N:
        return xp.linalg.eigvalsh(G, UPLO="L")
    out = xp.empty(G.shape[:-1], dtype=G.dtype)
    for k in range(G.shape[0]):
        out[k] = xp.linalg.eigvalsh(G[k], UPLO="L")
    return out


def eigvalsh(G: Any) -> np.ndarray:
    """Eigenvalues, ascending, of one symmetric matrix or a stack, returned to the host.

    Parameters
    ----------
    G : cupy.ndarray, shape (M, M) or (k, M, M)
        Symmetric matrices; only the lower triangle is referenced.

    Returns
    -------
    numpy.ndarray, shape (M,) or (k, M)
        Eigenvalues in the dtype of ``G``: cuSOLVER ``syevd`` per matrix, or batched
        ``syevj`` (Jacobi to machine precision) for stacks of matrices with M ≤ 32.
    """
    cp = _cupy()
    return cp.asnumpy(_eigvalsh(G, cp))


def eigh(G: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues, ascending, and unit eigenvectors, returned to the host.

    Parameters
    ----------
    G : cupy.ndarray, shape (M, M) or (k, M, M)
        Symmetric matrices; only the lower triangle is referenced.

    Returns
    -------
    w : numpy.ndarray, shape (M,) or (k, M)
    V : numpy.ndarray, shape (M, M) or (k, M, M)
        Eigenvectors as columns: cuSOLVER ``syevd`` per matrix, batched ``syevj`` for
        stacks with M ≤ 32.
    """
    cp = _cupy()
    G = cp.asarray(G)
    if G.ndim == 2 or G.shape[-1] <= SYEVJ_BATCHED_MAX_N:
        w, V = cp.linalg.eigh(G, UPLO="L")
    else:
        pairs = [cp.linalg.eigh(G[k], UPLO="L") for k in range(G.shape[0])]
        w, V = cp.stack([p[0] for p in pairs]), cp.stack([p[1] for p in pairs])
    return cp.asnumpy(w), cp.asnumpy(V)


def eigh_top(G: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every eigenvalue and the top-k eigenvectors (cuSOLVER ``syevd``, then the last k).

    cuSOLVER has no tridiagonal subset solver exposed through CuPy; the full ``syevd`` is
    fast on the device, so the host twin's saving is not needed here.

    Parameters
    ----------
    G : cupy.ndarray, shape (M, M)
        Symmetric; only the lower triangle is referenced.
    k : int
        Eigenvectors wanted.

    Returns
    -------
    w : numpy.ndarray, shape (M,)
    V : numpy.ndarray, shape (M, k)
    """
    w, V = eigh(G)
    return w, V[:, -max(1, min(int(k), V.shape[1])):]


# --- power-law KS scan -------------------------------------------------------------------
#
# The CPU kernel's branch and bound, level by level so that each level is a few array
# operations over every live block of every candidate at once: a block [a, b] of
# consecutive points cannot hold a |T - E| above max(T_hi - E_a, E_b - T_lo) (both CDFs
# are monotone), so blocks whose bound cannot beat their candidate's running maximum are
# dropped and the others are cut into KS_SPLIT parts, until no block is left. With
# pruning, a candidate whose running maximum exceeds keep x the least upper bound of any
# candidate so far is dropped too: its D cannot be within keep of the minimum.

_KS_SPLIT = 16
_KS_SLACK = 1e-12  # as in the CPU kernel: room above the few ulps of non-monotone T


def _ks_distances(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms,
                  active, xp: ModuleType, prune: bool = True, keep: float = 1.0):
    """Every candidate's KS distance by a level-synchronous branch and bound in ``xp``.

    Every ``config.KS_COARSE_STRIDE``-th candidate goes first; each other one then starts
    from the points where its two coarse neighbours peaked (the CPU kernel's warm start,
    in two passes instead of a chain) and, with ``prune``, below the least D found.
    """
    todo = np.flatnonzero(np.asarray(active))
    out = np.full(len(starts), np.inf)
    if todo.size == 0:
        return out
    log_pts = xp.asarray(np.asarray(log_pts, dtype=np.float64))
    rank_pts = xp.asarray(np.asarray(rank_pts, dtype=np.float64))
    params = [np.asarray(v) for v in (starts, log_xmins, rank0s, n_tails, alphas, inv_norms)]
    budget = max(_KS_SPLIT, int(config.GPU_KS_CHUNK_ELEMENTS))
    keep = keep if prune else np.inf

    def run(sel: np.ndarray, hints: np.ndarray | None, least_upper: float
            ) -> tuple[np.ndarray, float]:
        # A candidate keeps about 1/D ~ √P blocks alive at its busiest level.
        per_chunk = max(1, budget // (_KS_SPLIT * int(np.sqrt(log_pts.shape[0]) + 1)))
        peaks = np.empty(sel.size, dtype=np.int64)
        for lo in range(0, sel.size, per_chunk):
            part = slice(lo, lo + per_chunk)
            d, peak, least_upper = _ks_chunk(
                log_pts, rank_pts, *(xp.asarray(v[sel[part]].astype(np.float64))
                                     for v in params),
                hints=None if hints is None else xp.asarray(hints[part]), xp=xp,
                least_upper=least_upper, keep=keep, budget=budget)
            out[sel[part]], peaks[part] = to_host(d), to_host(peak)
        return peaks, least_upper

    stride = int(config.KS_COARSE_STRIDE)
    if todo.size <= 2 * stride:
        run(todo, None, np.inf)
        return out
    coarse = todo[::stride]
    rest = np.setdiff1d(todo, coarse, assume_unique=True)
    peaks, least_upper = run(coarse, None, np.inf)
    after = np.searchsorted(coarse, rest)
    hints = np.stack([peaks[np.maximum(after - 1, 0)], peaks[np.minimum(after, peaks.size - 1)]],
                     axis=1)
    run(rest, hints, least_upper)
    return out


def _ks_chunk(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms, *,
              hints, xp: ModuleType, least_upper: float, keep: float, budget: int):
    """(D, a point where it is reached, least upper bound on any D) for one chunk of
    candidates. D is exact unless the candidate's running maximum exceeded keep × the
    least upper bound (then it is a lower bound above that)."""
    one_minus_alpha, inv_n = 1.0 - alphas, 1.0 / n_tails

    def at(cand, point):  # T, E and |T - E| of candidates ``cand`` at points ``point``
        theo = -xp.expm1(one_minus_alpha[cand] * (log_pts[point] - log_xmins[cand])
                         ) * inv_norms[cand]
        emp = (rank_pts[point] - rank0s[cand]) * inv_n[cand]
        return theo, emp, xp.abs(theo - emp)

    def reach(ta, tb, ea, eb):  # no point of a block is farther than this (with room)
        t_lo, t_hi = xp.minimum(ta, tb), xp.maximum(ta, tb)
        room = _KS_SLACK * xp.maximum(1.0, xp.maximum(xp.abs(t_lo), xp.abs(t_hi)))
        return xp.maximum(t_hi - ea, eb - t_lo) + room

    def raise_running(cand, point, gap):  # running max and a point reaching it
        cand, point, gap = cand.ravel(), point.ravel(), gap.ravel()
        xp.maximum.at(running, cand, gap)
        top = gap == running[cand]
        peak[cand[top]] = point[top]

    n_cand = int(starts.shape[0])
    cand = xp.arange(n_cand)
    a = starts.astype(xp.int64)
    b = xp.full(n_cand, int(log_pts.shape[0]) - 1, dtype=xp.int64)
    ta, ea, gap_a = at(cand, a)
    tb, eb, gap_b = at(cand, b)
    running, peak = gap_a.copy(), a.copy()
    raise_running(cand, b, gap_b)
    if hints is not None:
        points = xp.clip(hints, a[:, None], b[:, None])
        rows = xp.broadcast_to(cand[:, None], points.shape)
        raise_running(rows, points, at(rows, points)[2])
    blocks = (cand, a, b, ta, tb, ea, eb, reach(ta, tb, ea, eb))
    alive = xp.ones(n_cand, dtype=bool)
    steps = xp.arange(1, _KS_SPLIT, dtype=xp.int64)
    while True:
        cand, a, b = blocks[:3]
        if np.isfinite(keep):
            upper = running.copy()
            xp.maximum.at(upper, cand, blocks[7])  # each candidate's D is at most this
            if bool(xp.any(alive)):
                least_upper = min(least_upper, float(xp.min(upper[alive])))
            alive &= running <= keep * least_upper
        live = (b - a > 1) & (blocks[7] > running[cand]) & alive[cand]
        blocks = tuple(v[live] for v in blocks)
        if not blocks[0].shape[0]:
            return running, peak, least_upper
        children = []
        step = max(1, budget // _KS_SPLIT)
        for lo in range(0, int(blocks[0].shape[0]), step):
            cand, a, b, ta, tb, ea, eb, _ = (v[lo : lo + step] for v in blocks)
            # Cut each block into _KS_SPLIT parts (short blocks repeat cut points: the
            # empty parts are dropped below).
            cuts = a[:, None] + ((b - a)[:, None] * steps[None, :]) // _KS_SPLIT
            rows = xp.broadcast_to(cand[:, None], cuts.shape)
            tc, ec, gap_c = at(rows, cuts)
            raise_running(rows, cuts, gap_c)
            edges = [xp.concatenate([u[:, None], c, w[:, None]], axis=1)
                     for u, c, w in ((a, cuts, b), (ta, tc, tb), (ea, ec, eb))]
            pa, pta, pea = (e[:, :-1].ravel() for e in edges)
            pb, ptb, peb = (e[:, 1:].ravel() for e in edges)
            pc = xp.repeat(cand, _KS_SPLIT)
            pr = reach(pta, ptb, pea, peb)
            ok = (pb - pa > 1) & (pr > running[pc])
            children.append(tuple(v[ok] for v in (pc, pa, pb, pta, ptb, pea, peb, pr)))
        blocks = tuple(xp.concatenate([c[i] for c in children]) for i in range(8))


def ks_distances(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms,
                 active, prune: bool = True, keep: float = 1.0) -> np.ndarray:
    """Kolmogorov–Smirnov distance of a power-law fit for every candidate xmin, on the GPU.

    Same arguments and result as :func:`rmt.kernels.cpu.ks_distances`, by the same
    branch and bound over blocks of points, level by level (every live block of every
    candidate in one array operation per level).

    Parameters
    ----------
    log_pts, rank_pts : numpy.ndarray of float64, shape (P,)
        As in the CPU twin.
    starts : numpy.ndarray of int64, shape (C,)
        First evaluation point of each candidate.
    log_xmins, rank0s, n_tails, alphas, inv_norms : numpy.ndarray of float64, shape (C,)
        Per-candidate fit parameters.
    active : numpy.ndarray of bool, shape (C,)
        Candidates to evaluate; the others get +inf.
    prune : bool, default True
        The minimum, its argmin and every D ≤ ``keep`` × the minimum exact, the others
        lower bounds above that; False: every D exact.
    keep : float, default 1.0
        How far above the minimum D stays exact under ``prune`` (≥ 1).

    Returns
    -------
    numpy.ndarray of float64, shape (C,)
        float64; within ~1e-15 of the CPU's (the device's expm1 rounds differently).
    """
    if not keep >= 1.0:
        raise ValueError(f"keep must be at least 1, got {keep!r}")
    return _ks_distances(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas,
                         inv_norms, active, _cupy(), prune=prune, keep=keep)


# --- shuffles (randomized ESDs) ----------------------------------------------------------

def permuted(a: Any, seed: int) -> Any:
    """A uniformly random permutation of the entries of a 1-D device array, as a new array.

    The permutation comes from CuPy's own generator seeded with ``seed``: the same seed
    gives the same shuffle on the GPU, a different one than on the CPU.

    Parameters
    ----------
    a : cupy.ndarray
        1-D.
    seed : int
        0 ≤ seed < 2**64.

    Returns
    -------
    cupy.ndarray
    """
    cp = _cupy()
    return a[cp.random.RandomState(int(seed) % 2**32).permutation(a.size)]

"""CPU kernels: blocked Gram accumulation, low-precision decoding, eigenvalues.

Twin of :mod:`rmt.kernels.gpu` (same names, same signatures).

Precision
---------
The Gram matrix G = AᵀA is accumulated by BLAS ``syrk`` in the accumulation dtype
(float64 by default) and its eigenvalues come from LAPACK ``syevd``. Both are
backward stable: every eigenvalue is within about ``c·(√N + M)·eps·λmax`` of the
exact eigenvalue of the stored (decoded) matrix, measured at ≤ 5e-14·λmax in float64
and ≤ 3.1e-5·λmax in float32 on the shapes of ``benchmarks/esd.py``. Eigenvalues far
below ``eps·λmax`` carry no relative accuracy (the Gram matrix squares the
condition number); rank decisions therefore use singular values (``rmt.spectra``).
"""

from __future__ import annotations

import numba
import numpy as np

from rmt import config
from rmt._dtypes import accumulation_dtype, bits_view, decode_table, storage_kind
from rmt.kernels import _lapack, _small_eigvalsh

# The twin interface (kernels/gpu.py exports the same names). ``sum_squares``,
# ``mirror_lower``, ``add_ranges`` and ``eigvalsh_together`` are host-side helpers of the
# comparison, the eigenvector analyses, FARMS and the shuffled ESDs, used on host arrays
# only: they have no device twin and are not listed.
__all__ = ["decode", "eigh", "eigh_top", "eigvalsh", "gram", "gram_stack", "ks_distances",
           "permuted"]



@numba.njit(parallel=True, cache=True, nogil=True)
def _decode_table(bits, table, out):  # pragma: no cover - compiled
    for i in numba.prange(bits.shape[0]):
        for j in range(bits.shape[1]):
            out[i, j] = table[bits[i, j]]


@numba.njit(parallel=True, cache=True, nogil=True)
def _decode_bf16(bits, out):  # pragma: no cover - compiled
    # bfloat16 is the top half of a float32: shift the bits up and reinterpret.
    for i in numba.prange(bits.shape[0]):
        row = np.empty(bits.shape[1], dtype=np.uint32)
        for j in range(bits.shape[1]):
            row[j] = np.uint32(bits[i, j]) << np.uint32(16)
        as_float = row.view(np.float32)
        for j in range(bits.shape[1]):
            out[i, j] = as_float[j]


def decode(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Convert a 2-D block of any supported storage dtype into ``out``.

    Parameters
    ----------
    block : numpy.ndarray, shape (b, M)
        Any strides (a transposed view is fine); float64/32/16, bfloat16 or a 1-byte
        ``ml_dtypes`` float.
    out : numpy.ndarray, shape (b, M)
        C-contiguous float64 or float32 destination.

    Returns
    -------
    numpy.ndarray
        ``out``, holding the exact values of ``block`` (1- and 2-byte formats are exact
        in float32 and float64).
    """
    if storage_kind(block.dtype) == "native":
        np.copyto(out, block, casting="same_kind")
    elif block.dtype.name == "bfloat16":
        _decode_bf16(bits_view(block), out)
    else:
        _decode_table(bits_view(block), decode_table(block.dtype, out.dtype), out)
    return out


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _sum_squares(x):  # pragma: no cover - compiled
    # reassociation lets the loop run as SIMD partial sums, as BLAS's dot does
    total = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        total += v * v
    return total


def sum_squares(a: np.ndarray) -> float:
    """Σ aᵢ² of a float32 or float64 array, accumulated in float64, without a float64 copy.

    Parameters
    ----------
    a : numpy.ndarray
        float32 or float64, C-contiguous (any shape).

    Returns
    -------
    float
        Relative error about n·eps/16 at worst (16 SIMD partial sums), ~√n·eps typically:
        2e-13 on 1.2·10⁷ Gaussian float32 entries.
    """
    if a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        raise ValueError("sum_squares needs a C-contiguous float32 or float64 array")
    return float(_sum_squares(a.reshape(-1)))


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _add_ranges(parts, first, last, out):  # pragma: no cover - compiled
    n = parts.shape[1]
    for k in range(out.shape[0]):
        o = out[k]
        for i in range(n):
            row = o[i]
            src = parts[first[k], i]
            for j in range(numba.uint64(i + 1)):  # unsigned: no wraparound, vectorises
                row[j] = src[j]
            for s in range(first[k] + 1, last[k]):
                src = parts[s, i]
                for j in range(numba.uint64(i + 1)):
                    row[j] += src[j]


def add_ranges(parts: np.ndarray, first: np.ndarray, last: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """Lower triangles of sums of consecutive matrices: out[k] = Σ parts[first[k]:last[k]].

    Parameters
    ----------
    parts : numpy.ndarray, (S, n, n), float64, C-contiguous
    first, last : numpy.ndarray of int64, (K,)
        Ranges, ``first[k] < last[k] ≤ S``.
    out : numpy.ndarray, (K, n, n), float64, C-contiguous
        Its lower triangles (diagonal included) are set; the upper ones are not touched.

    Returns
    -------
    numpy.ndarray
        ``out``. The sums run in the order of ``parts`` (as ``numpy.sum`` over axis 0),
        float64.
    """
    if not (np.all(first < last) and np.all(last <= parts.shape[0]) and np.all(first >= 0)):
        raise ValueError("add_ranges needs 0 <= first < last <= len(parts)")
    _add_ranges(parts, first.astype(np.int64), last.astype(np.int64), out)
    return out


@numba.njit(cache=True, nogil=True)
def _mirror_lower(G):  # pragma: no cover - compiled
    for j in range(G.shape[1]):
        for i in range(j + 1, G.shape[0]):
            G[j, i] = G[i, j]


def mirror_lower(G: np.ndarray) -> np.ndarray:
    """Copy the lower triangle of a square matrix onto its upper one, in place.

    Parameters
    ----------
    G : numpy.ndarray, (M, M), writeable, any order
        ``syrk``'s output (lower triangle set).

    Returns
    -------
    numpy.ndarray
        ``G``, symmetric (bit for bit: values are copied, not recomputed).
    """
    _mirror_lower(G)
    return G


def _usable_directly(a: np.ndarray, acc: np.dtype) -> bool:
    return a.dtype == acc and a.dtype.isnative and (a.flags.c_contiguous or a.flags.f_contiguous)


def gram(
    W: np.ndarray,
    *,
    transpose: bool = False,
    dtype: np.dtype | type = np.float64,
    block_rows: int | None = None,
) -> np.ndarray:
    """Lower triangle of the Gram matrix AᵀA of A = Wᵀ (``transpose``) or W.

    A is read in blocks of rows; each block is decoded into one reusable buffer of the
    accumulation dtype and added with ``syrk``, so a low-precision or memory-mapped W
    never exists as a full float64 copy. A W already in the accumulation dtype and
    contiguous is handed to ``syrk`` whole, without a copy (pass ``block_rows`` to force
    blocking).

    Parameters
    ----------
    W : numpy.ndarray or numpy.memmap, 2-D
        The weight in its storage dtype.
    transpose : bool
        Use A = Wᵀ (for a wide W, so that the Gram matrix is on the small side).
    dtype : {float64, float32}
        Accumulation dtype.
    block_rows : int, optional
        Rows of A per block; default ``config.GRAM_BLOCK_BYTES`` worth of decoded rows, at least
        ``config.GRAM_MIN_BLOCK_ROWS``.

    Returns
    -------
    numpy.ndarray, shape (M, M), Fortran order
        G with its lower triangle set; the strict upper triangle is not referenced.
    """
    acc = accumulation_dtype(dtype)
    A = W.T if transpose else W
    n_rows, m = A.shape
    G = np.zeros((m, m), dtype=acc, order="F")
    if block_rows is None and _usable_directly(A, acc):
        if A.flags.f_contiguous:
            return _lapack.syrk(A, True, G, 0.0)
        return _lapack.syrk(A.T, False, G, 0.0)
    if block_rows is None:
        block_rows = max(config.GRAM_MIN_BLOCK_ROWS, config.GRAM_BLOCK_BYTES // (m * acc.itemsize))
    block_rows = int(max(1, min(block_rows, n_rows)))
    buffer = np.empty((block_rows, m), dtype=acc)
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        out = buffer[: stop - start]
        decode(A[start:stop], out)
        _lapack.syrk(out.T, False, G, 1.0)
    return G


def gram_stack(stack: np.ndarray, *, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Gram matrices AₖᵀAₖ of a stack of small same-shape matrices.

    Parameters
    ----------
    stack : numpy.ndarray, shape (k, N, M)
        Already oriented (N ≥ M), any supported storage dtype.
    dtype : {float64, float32}
        Accumulation dtype.

    Returns
    -------
    numpy.ndarray, shape (k, M, M)
        Full symmetric Gram matrices.
    """
    acc = accumulation_dtype(dtype)
    k, n, m = stack.shape
    A = np.empty((k * n, m), dtype=acc)
    decode(stack.reshape(k * n, m), A)
    A = A.reshape(k, n, m)
    return np.matmul(A.transpose(0, 2, 1), A)


def eigvalsh(G: np.ndarray) -> np.ndarray:
    """Eigenvalues, ascending, of one symmetric matrix or a stack of them.

    Only the lower triangle of each matrix is referenced. A single Fortran-ordered
    matrix is overwritten (LAPACK ``syevd`` in place, no copy). A float64 stack of
    matrices up to ``config.SMALL_EIGVALSH_MAX_N`` wide goes through
    :mod:`rmt.kernels._small_eigvalsh` (eight tridiagonal QL iterations in lockstep,
    1.35–2.3× LAPACK's speed, same accuracy); larger ones through LAPACK one by one.

    Parameters
    ----------
    G : numpy.ndarray, shape (M, M) or (k, M, M)
        Symmetric matrices in float64 or float32.

    Returns
    -------
    numpy.ndarray, shape (M,) or (k, M)
        Eigenvalues in the dtype of ``G``, ascending along the last axis.
    """
    if G.ndim == 3:
        if G.dtype == np.float64 and G.shape[-1] <= config.SMALL_EIGVALSH_MAX_N:
            return _small_eigvalsh.eigvalsh_stack(G)
        return np.linalg.eigvalsh(G, UPLO="L")
    G, lower = _fortran(G)
    return _lapack.syevd(G, lower, vectors=False)[0]


# Up to this size a few matrices go through the stack solver whole; above it, LAPACK's
# blocked sytrd is faster for one or two (two 384 x 384: 12.7 ms against 14.5 ms).
_TOGETHER_STACK_MAX_N = 200


def eigvalsh_together(Gs: list[np.ndarray]) -> list[np.ndarray]:
    """Eigenvalues, ascending, of a few symmetric matrices of one size, solved together.

    Each is tridiagonalised (LAPACK ``sytrd``, as ``eigvalsh`` does; up to 200 wide by
    the stack solver's own reduction, faster there) and the tridiagonal matrices go
    through one lockstep QL iteration
    (:func:`rmt.kernels._small_eigvalsh.tridiagonal_eigvalsh`): two 384 × 384 matrices in
    10.8 ms against 13.1 ms for two ``eigvalsh`` calls (one thread), the same accuracy
    (≈ n·eps·λmax; the bits differ from ``syevd``'s). A lone matrix goes to
    :func:`eigvalsh`.

    Parameters
    ----------
    Gs : list of numpy.ndarray, each (M, M)
        Symmetric, float64; only the lower triangle is referenced; a Fortran-ordered one
        is overwritten.

    Returns
    -------
    list of numpy.ndarray
        One float64 array of M eigenvalues per matrix, in order.
    """
    if len({G.shape for G in Gs}) > 1 or any(G.ndim != 2 for G in Gs):
        raise ValueError(f"eigvalsh_together needs square matrices of one size, got "
                         f"{[G.shape for G in Gs]}")
    if len(Gs) == 1:
        return [np.asarray(eigvalsh(Gs[0]), dtype=np.float64)]
    if Gs[0].shape[0] <= _TOGETHER_STACK_MAX_N:
        return list(_small_eigvalsh.eigvalsh_stack(np.stack([np.asarray(G, np.float64)
                                                             for G in Gs])))
    ds, es = [], []
    for G in Gs:
        a, lower = _fortran(np.asarray(G, dtype=np.float64))
        d, e, _ = _lapack.tridiagonalise(a, lower)
        ds.append(d)
        es.append(e[:-1])
    return list(_small_eigvalsh.tridiagonal_eigvalsh(np.array(ds), np.array(es)))


def eigh_top(G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every eigenvalue and the top-k unit eigenvectors of one symmetric matrix.

    One Householder tridiagonalisation (LAPACK ``sytrd``, as ``eigvalsh`` does), all
    eigenvalues of the tridiagonal matrix (``sterf``), its top k eigenvectors (``stemr``)
    and the reflectors applied to those k only (``ormqr`` on the subdiagonal block): about
    the cost of ``eigvalsh`` plus O(M²k), against ~2.5× for ``syevd`` with every vector.
    Accuracy as ``syevd``'s (tests: eigenvalues to 1e-14·λmax, vectors to 1e-13). The
    routines are called without the GIL (:mod:`rmt.kernels._lapack`), so layers in other
    threads run meanwhile.

    Parameters
    ----------
    G : numpy.ndarray, shape (M, M)
        Symmetric, float64; only the lower triangle is referenced; not modified.
    k : int
        Eigenvectors wanted, 1 ≤ k ≤ M.

    Returns
    -------
    w : numpy.ndarray, shape (M,)
        All eigenvalues, ascending.
    V : numpy.ndarray, shape (M, k)
        Eigenvectors of ``w[-k:]`` as columns, ascending like them.
    """
    M = G.shape[0]
    k = max(1, min(int(k), M))
    if M < 3:
        w, V = np.linalg.eigh(G, UPLO="L")
        return w, V[:, -k:]
    return _lapack.eigh_top(np.array(G, dtype=np.float64, order="F"), k)


def eigh(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues, ascending, and unit eigenvectors of one symmetric matrix or a stack.

    Only the lower triangle is referenced; a single Fortran-ordered matrix is overwritten
    (LAPACK ``syevd`` with vectors, in place).

    Parameters
    ----------
    G : numpy.ndarray, shape (M, M) or (k, M, M)
        Symmetric matrices in float64 or float32.

    Returns
    -------
    w : numpy.ndarray, shape (M,) or (k, M)
        Eigenvalues in the dtype of ``G``, ascending.
    V : numpy.ndarray, shape (M, M) or (k, M, M)
        Orthonormal eigenvectors as columns, ``V[..., :, i]`` for ``w[..., i]``.
    """
    if G.ndim == 3:
        w, V = np.linalg.eigh(G, UPLO="L")
        return w, V
    G, lower = _fortran(G)
    w, V = _lapack.syevd(G, lower, vectors=True)
    assert V is not None
    return w, V


def _fortran(G: np.ndarray) -> tuple[np.ndarray, bool]:
    """G as a Fortran-ordered float32/64 array LAPACK may overwrite, and whether its lower
    triangle is the one to read (a C-ordered G's lower triangle is its transpose's upper)."""
    if G.dtype not in (np.float32, np.float64):
        G = G.astype(np.float64)
    if G.flags.c_contiguous and not G.flags.f_contiguous:
        return G.T, False
    return (G if G.flags.f_contiguous else np.asfortranarray(G)), True


# --- power-law KS scan -------------------------------------------------------------------
#
# D of one candidate is max_p |T(p) - E(p)| over its tail's points, with T the fitted CDF
# and E the empirical one. Both are monotone in p, so on a block of consecutive points
# [a, b] no point can exceed max(T_hi - E_a, E_b - T_lo), known from the two end points:
# a branch and bound over blocks skips every block whose bound cannot beat the running
# maximum and halves the others (docs/science.md §4). Neighbouring candidates' deviation
# curves nearly coincide, so each candidate starts at the point where the one before it
# peaked; with a bound (the least D so far, prune=True) a candidate is abandoned as soon as
# one point exceeds it.

# A block's bound skips it only with this much room (relative to max(1, |T|)): T's
# computed values are monotone up to a few ulps (expm1 is faithfully rounded), so a
# skipped point can never be the one that sets the maximum.
_KS_SLACK = 1e-12


@numba.njit(cache=True, nogil=True, inline="always")
def _ks_gap(log_pts, rank_pts, p, log_xmin, rank0, inv_n, one_minus_alpha, inv_norm
            ):  # pragma: no cover - compiled
    theo = -np.expm1(one_minus_alpha * (log_pts[p] - log_xmin)) * inv_norm
    return theo, abs(theo - (rank_pts[p] - rank0) * inv_n)


@numba.njit(cache=True, nogil=True)
def _ks_one(log_pts, rank_pts, start, log_xmin, rank0, n_tail, one_minus_alpha, inv_norm,
            bound, hint, leaf, grid, stack_i, stack_t):  # pragma: no cover - compiled
    """(D, argmax) of one candidate; (a lower bound > ``bound``, its point) if abandoned."""
    last = log_pts.shape[0] - 1
    inv_n = 1.0 / n_tail
    d, arg = 0.0, start
    if start <= hint <= last:
        d = _ks_gap(log_pts, rank_pts, hint, log_xmin, rank0, inv_n, one_minus_alpha,
                    inv_norm)[1]
        arg = hint
        if d > bound:
            return d, arg
    # Top-level blocks over which E rises by about d/2: the ones away from the peak are
    # skipped at once.
    rise = d if 0.0 < d < 1.0 else 1.0 / np.sqrt(n_tail)  # d may be inf or NaN
    width = max(int(min(0.5 * n_tail * rise, last - start + 1.0)), leaf)
    n_blocks = max(1, (last - start + width - 1) // width)
    for k in range(n_blocks + 1):
        p = min(start + k * width, last)
        grid[k], gap = _ks_gap(log_pts, rank_pts, p, log_xmin, rank0, inv_n,
                               one_minus_alpha, inv_norm)
        if gap > d:
            d, arg = gap, p
            if d > bound:
                return d, arg
    for k in range(n_blocks):
        stack_i[0, 0], stack_i[0, 1] = start + k * width, min(start + (k + 1) * width, last)
        stack_t[0, 0], stack_t[0, 1] = grid[k], grid[k + 1]
        top = 1
        while top > 0:
            top -= 1
            a, b = stack_i[top, 0], stack_i[top, 1]
            ta, tb = stack_t[top, 0], stack_t[top, 1]
            if b - a <= 1:
                continue
            t_lo, t_hi = min(ta, tb), max(ta, tb)
            reach = max(t_hi - (rank_pts[a] - rank0) * inv_n,
                        (rank_pts[b] - rank0) * inv_n - t_lo)
            if reach + _KS_SLACK * max(1.0, abs(t_lo), abs(t_hi)) <= d:
                continue
            if b - a <= leaf:
                for p in range(a + 1, b):
                    gap = _ks_gap(log_pts, rank_pts, p, log_xmin, rank0, inv_n,
                                  one_minus_alpha, inv_norm)[1]
                    if gap > d:
                        d, arg = gap, p
                if d > bound:
                    return d, arg
                continue
            m = (a + b) // 2
            tm, gap = _ks_gap(log_pts, rank_pts, m, log_xmin, rank0, inv_n,
                              one_minus_alpha, inv_norm)
            if gap > d:
                d, arg = gap, m
                if d > bound:
                    return d, arg
            stack_i[top, 0], stack_i[top, 1], stack_t[top, 0], stack_t[top, 1] = m, b, tm, tb
            stack_i[top + 1, 0], stack_i[top + 1, 1] = a, m
            stack_t[top + 1, 0], stack_t[top + 1, 1] = ta, tm
            top += 2
    return d, arg


@numba.njit(cache=True, nogil=True)
def _ks_run(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms, todo,
            lo, hi, least, keep, chain, leaf, out):  # pragma: no cover - compiled
    """Candidates todo[lo:hi] in order, each starting from the previous one's peak, each
    abandoned once it exceeds keep × ``least``; with ``chain`` ``least`` follows the
    least D found (so every D ≤ keep × the final least stays exact).
    """
    grid = np.empty(log_pts.shape[0] // leaf + 2)
    stack_i = np.empty((128, 2), dtype=np.int64)  # depth <= log2(points) + 1
    stack_t = np.empty((128, 2))
    hint = -1
    for t in range(lo, hi):
        c = todo[t]
        d, hint = _ks_one(log_pts, rank_pts, starts[c], log_xmins[c], rank0s[c], n_tails[c],
                          1.0 - alphas[c], inv_norms[c], keep * least, hint, leaf, grid,
                          stack_i, stack_t)
        out[c] = d
        if chain and d < least:
            least = d


@numba.njit(parallel=True, cache=True, nogil=True)
def _ks_strands(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms,
                todo, least, keep, chain, leaf, n_strands, out):  # pragma: no cover - compiled
    # Contiguous runs of candidates, so that each starts from its neighbour's peak.
    size = (todo.shape[0] + n_strands - 1) // n_strands
    for s in numba.prange(n_strands):
        _ks_run(log_pts, rank_pts, starts, log_xmins, rank0s, n_tails, alphas, inv_norms,
                todo, s * size, min((s + 1) * size, todo.shape[0]), least, keep, chain, leaf,
                out)


def ks_distances(
    log_pts: np.ndarray,
    rank_pts: np.ndarray,
    starts: np.ndarray,
    log_xmins: np.ndarray,
    rank0s: np.ndarray,
    n_tails: np.ndarray,
    alphas: np.ndarray,
    inv_norms: np.ndarray,
    active: np.ndarray,
    prune: bool = True,
    keep: float = 1.0,
) -> np.ndarray:
    """Kolmogorov–Smirnov distance of a power-law fit for every candidate xmin.

    For candidate c the distance is the largest |T(x) − E(x)| over the evaluation points
    p ≥ ``starts[c]``, with the fitted CDF T(x) = (1 − (x/xmin)^(1−α))·inv_norm and the
    empirical CDF E(x) = (rank_p − rank0)/n_tail (powerlaw's convention: evaluation at
    the distinct values, fraction of the tail strictly below x, k/n only).

    Parameters
    ----------
    log_pts : numpy.ndarray of float64, shape (P,)
        ln of the ascending evaluation points.
    rank_pts : numpy.ndarray of float64, shape (P,)
        Number of data values strictly below each point.
    starts : numpy.ndarray of int64, shape (C,)
        First evaluation point of each candidate.
    log_xmins, rank0s, n_tails, alphas, inv_norms : numpy.ndarray of float64, shape (C,)
        ln xmin, data values below xmin, tail size, fitted α and 1/normaliser
        (1 without xmax; 1/(1 − (xmax/xmin)^(1−α)) with one) per candidate.
    active : numpy.ndarray of bool, shape (C,)
        Candidates to evaluate; the others get +inf.
    prune : bool, default True
        Exact pruning: the minimum over active candidates, its argmin and every D at or
        below ``keep`` × the minimum are exact; any other candidate reports a lower bound
        above that. False: every D is exact.
    keep : float, default 1.0
        How far above the minimum D stays exact under ``prune`` (≥ 1).

    Returns
    -------
    numpy.ndarray of float64, shape (C,)
        D per candidate, float64 throughout; the same values, bit for bit, as evaluating
        every point (agrees with powerlaw to ~1e-15).

    Notes
    -----
    Cost: on a pure power-law sample every point is in every tail and the minimum is
    flat, the worst case of the old point-by-point scan (O(n²)); the branch and bound
    visits a few points per candidate there (measured in ``benchmarks/powerlaw_fit.py``).
    """
    if not keep >= 1.0:
        raise ValueError(f"keep must be at least 1, got {keep!r}")
    out = np.full(starts.shape[0], np.inf)
    todo = np.flatnonzero(active).astype(np.int64)
    if todo.size == 0:
        return out
    args = (np.ascontiguousarray(log_pts, dtype=np.float64),
            np.ascontiguousarray(rank_pts, dtype=np.float64), starts.astype(np.int64),
            log_xmins, rank0s, n_tails, alphas, inv_norms)
    leaf = int(config.KS_LEAF_POINTS)

    def run(which: np.ndarray, least: float) -> None:
        if numba.get_num_threads() == 1 or which.size * log_pts.size < config.KS_SERIAL_PAIRS:
            _ks_run(*args, which, 0, which.size, least, float(keep), prune, leaf, out)
        else:
            n_strands = min(which.size, 8 * numba.get_num_threads())
            _ks_strands(*args, which, least, float(keep), prune, leaf, n_strands, out)

    stride = int(config.KS_COARSE_STRIDE)
    if prune and todo.size > 2 * stride:
        coarse = todo[::stride]
        run(coarse, np.inf)
        run(np.setdiff1d(todo, coarse, assume_unique=True), float(out[coarse].min()))
    else:
        run(todo, np.inf)
    return out


# --- WeightWatcher's MP fit (rmt.mp_ww) ---------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _mp_ww_residuals(sigmas, x, y, Q, penalty, out):
    n = x.size
    if Q == 1.0:  # quarter-circle law of the singular values: no edge checks
        for k in range(sigmas.size):
            scale = 1.0 / (np.pi * sigmas[k] * sigmas[k])
            total = 0.0
            for i in range(n):
                fit = np.sqrt(max(4.0 - x[i] * x[i], 0.0)) * scale
                total += (fit - y[i]) ** 2
            out[k] = total
        return
    mode, x_max, best = x[0], x[0], y[0]
    for i in range(n):
        if y[i] > best:
            best, mode = y[i], x[i]
        x_max = max(x_max, x[i])
    root = np.sqrt(1.0 / Q)
    for k in range(sigmas.size):
        s = sigmas[k]
        b = (s * (1.0 + root)) ** 2
        a = (s * (1.0 - root)) ** 2
        if b < mode or b > x_max or a > mode:
            out[k] = penalty * penalty * n
            continue
        scale = 1.0 / (2.0 * np.pi * s * s / Q)
        total = 0.0
        for i in range(n):
            prod = (b - x[i]) * (x[i] - a)
            fit = 0.0
            if prod > 0.0:
                fit = np.sqrt(prod) * scale / (x[i] if x[i] > 0.0 else 1.0)
            total += (fit - y[i]) ** 2
        out[k] = total


def mp_ww_residuals(sigmas: np.ndarray, x: np.ndarray, y: np.ndarray, Q: float,
                    penalty: float) -> np.ndarray:
    """WeightWatcher's least-squares residual of the MP density for each σ (its resid_mp).

    For Q ≠ 1: Σᵢ (ρ_σ(xᵢ) − yᵢ)² with ρ_σ the MP density of the eigenvalues, 0 outside
    (λ₋, λ₊); a σ whose λ₊ lies left of the mode of y or beyond max x, or whose λ₋ lies
    right of the mode, costs ``penalty``² per point. For Q = 1: the quarter-circle density
    of the singular values, 1/(πσ²)·√(4 − x²). Float64, sequential sums (the NumPy
    reference agrees to ~n·eps relative).

    Parameters
    ----------
    sigmas : numpy.ndarray
        σ values, float64.
    x, y : numpy.ndarray
        The density estimate's points and values, float64.
    Q : float
        Aspect ratio N/M ≥ 1.
    penalty : float
        WeightWatcher's per-point cost of a rejected σ.

    Returns
    -------
    numpy.ndarray
        One residual per σ.
    """
    sigmas = np.ascontiguousarray(sigmas, dtype=np.float64).reshape(-1)
    out = np.empty(sigmas.size)
    _mp_ww_residuals(sigmas, np.ascontiguousarray(x, dtype=np.float64),
                     np.ascontiguousarray(y, dtype=np.float64), float(Q), float(penalty), out)
    return out


@numba.njit(cache=True, nogil=True)
def _mp_ww_fmin(x0, x, y, Q, penalty, xatol, fatol, maxfun):  # pragma: no cover - compiled
    # scipy.optimize.fmin (Nelder–Mead, non-adaptive: rho 1, chi 2, psi 1/2, sigma 1/2) in
    # one dimension, step for step: its initial simplex, its vertex formulas evaluated as
    # SciPy writes them, numpy.argsort's order of two values after every iteration (ties
    # keep their order, NaN last), its stopping rules (xatol and fatol; maxiter = maxfun),
    # and its way of running out of calls (the iteration stops at the refused call, the
    # vertex moved before it stays moved).
    point = np.empty(1)
    value = np.empty(1)
    sim = np.empty(2)
    fsim = np.empty(2)
    sim[0] = x0
    sim[1] = (1 + 0.05) * x0 if x0 != 0 else 0.00025
    for k in range(2):
        point[0] = sim[k]
        _mp_ww_residuals(point, x, y, Q, penalty, value)
        fsim[k] = value[0]
    calls = 2
    iterations = 1
    while True:
        if fsim[1] < fsim[0] or (np.isnan(fsim[0]) and not np.isnan(fsim[1])):
            sim[0], sim[1] = sim[1], sim[0]
            fsim[0], fsim[1] = fsim[1], fsim[0]
        if not (calls < maxfun and iterations < maxfun):
            return sim[0]
        if abs(sim[1] - sim[0]) <= xatol and abs(fsim[0] - fsim[1]) <= fatol:
            return sim[0]
        xbar = sim[0] / 1
        point[0] = (1 + 1) * xbar - 1 * sim[1]  # reflection
        _mp_ww_residuals(point, x, y, Q, penalty, value)
        calls += 1
        xr, fxr = point[0], value[0]
        shrink = False
        if fxr < fsim[0]:
            if calls >= maxfun:
                continue
            point[0] = (1 + 1 * 2) * xbar - 1 * 2 * sim[1]  # expansion
            _mp_ww_residuals(point, x, y, Q, penalty, value)
            calls += 1
            if value[0] < fxr:
                sim[1], fsim[1] = point[0], value[0]
            else:
                sim[1], fsim[1] = xr, fxr
        else:  # fsim[-2] is fsim[0] in one dimension: straight to a contraction
            if calls >= maxfun:
                continue
            if fxr < fsim[1]:
                point[0] = (1 + 0.5 * 1) * xbar - 0.5 * 1 * sim[1]  # outside
                _mp_ww_residuals(point, x, y, Q, penalty, value)
                calls += 1
                if value[0] <= fxr:
                    sim[1], fsim[1] = point[0], value[0]
                else:
                    shrink = True
            else:
                point[0] = (1 - 0.5) * xbar + 0.5 * sim[1]  # inside
                _mp_ww_residuals(point, x, y, Q, penalty, value)
                calls += 1
                if value[0] < fsim[1]:
                    sim[1], fsim[1] = point[0], value[0]
                else:
                    shrink = True
            if shrink:
                sim[1] = sim[0] + 0.5 * (sim[1] - sim[0])
                if calls >= maxfun:
                    continue
                point[0] = sim[1]
                _mp_ww_residuals(point, x, y, Q, penalty, value)
                calls += 1
                fsim[1] = value[0]
        iterations += 1


def mp_ww_fmin(start: float, x: np.ndarray, y: np.ndarray, Q: float, penalty: float,
               xtol: float = 1e-4, ftol: float = 1e-4) -> float:
    """The σ that ``scipy.optimize.fmin`` finds for :func:`mp_ww_residuals` from ``start``.

    WeightWatcher polishes its grid search with SciPy's Nelder–Mead; this runs the same
    one-dimensional iteration compiled, around the compiled residual (SciPy's Python loop
    took ~50 µs per residual, ~1 ms per layer). The same σ, bit for bit (tested against
    SciPy, shortcuts and call limits included).

    Parameters
    ----------
    start : float
        The initial σ (WeightWatcher: the best point of its grid).
    x, y, Q, penalty
        As in :func:`mp_ww_residuals`.
    xtol, ftol : float, default 1e-4
        SciPy's ``xtol`` and ``ftol`` (absolute).

    Returns
    -------
    float
    """
    return float(_mp_ww_fmin(float(start), np.ascontiguousarray(x, dtype=np.float64),
                             np.ascontiguousarray(y, dtype=np.float64), float(Q),
                             float(penalty), float(xtol), float(ftol), 200))


# --- shuffles (randomized ESDs) ----------------------------------------------------------

# Entries per bucket of the two-pass shuffle: a bucket stays in L2 while it is shuffled.
SHUFFLE_BUCKET = 32768


#: Weyl increment of the counter-based generator (2^64 / golden ratio, odd).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, nogil=True, inline="always")
def _mix(z):
    # splitmix64's finaliser (Steele, Lea & Flood 2014): a bijection of 64-bit words whose
    # outputs over a Weyl sequence key + i·golden pass BigCrush. Counter-based: no draw
    # waits for the previous one, and a draw can be made again without storing it
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


#: The low 32 bits of a word: each 64-bit draw gives two 32-bit ones (high, then low half).
_LOW = np.uint64(0xFFFFFFFF)


@numba.njit(cache=True, nogil=True, inline="always")
def _below(r, m):
    # floor(r·m/2^32) for 32 random bits r: uniform on [0, m) to within m/2^32 (Lemire 2019)
    return (r * m) >> np.uint64(32)


_ONE = np.uint64(1)
_TWO = np.uint64(2)


@numba.njit(cache=True, nogil=True)
def _permuted(a, out, seed, n_buckets):
    # Rao–Sandelius: send each entry to a uniformly random bucket, then Fisher–Yates each
    # bucket. Exactly uniform, and both passes stream through memory instead of jumping
    # (plain Fisher–Yates on 10^7 entries is cache-miss bound). The bucket draws are made
    # twice (count, then scatter), so no index array is stored; each 64-bit draw serves two
    # entries (or two swaps): 20% faster than one draw each, the mix being half the work.
    # Indices are unsigned (no negative-index wraparound to check): 30% faster on 10^5
    # entries, the same permutation.
    n = np.uint64(a.size)
    buckets = _mix(np.uint64(seed))  # one stream for the buckets, one for the swaps
    swaps = _mix(buckets ^ np.uint64(0xD1B54A32D192ED03))
    counts = np.zeros(n_buckets + 1, np.uint64)
    m = np.uint64(n_buckets)
    half = n // _TWO  # entries 2i and 2i + 1 take the halves of draw i
    for i in range(half):
        z = _mix(buckets + i * _GOLDEN)
        counts[_below(z >> np.uint64(32), m) + _ONE] += _ONE
        counts[_below(z & _LOW, m) + _ONE] += _ONE
    if n % _TWO:  # the last entry, alone: outside the loop, which stays branch-free
        counts[_below(_mix(buckets + half * _GOLDEN) >> np.uint64(32), m) + _ONE] += _ONE
    for b in range(m):
        counts[b + _ONE] += counts[b]
    fill = counts[:n_buckets].copy()
    for i in range(half):
        z = _mix(buckets + i * _GOLDEN)
        k = _below(z >> np.uint64(32), m)
        out[fill[k]] = a[_TWO * i]
        fill[k] += _ONE
        k = _below(z & _LOW, m)
        out[fill[k]] = a[_TWO * i + _ONE]
        fill[k] += _ONE
    if n % _TWO:
        k = _below(_mix(buckets + half * _GOLDEN) >> np.uint64(32), m)
        out[fill[k]] = a[n - _ONE]
    for b in range(m):  # Fisher–Yates from the top: swap pos with a j in [lo, pos]
        lo = np.int64(counts[b])  # signed: pos steps down to lo - 1, which may be -1
        pos = np.int64(counts[b + _ONE]) - 1
        while pos > lo:
            z = _mix(swaps + np.uint64(pos) * _GOLDEN)
            j = np.uint64(lo) + _below(z >> np.uint64(32), np.uint64(pos - lo + 1))
            t = out[np.uint64(pos)]
            out[np.uint64(pos)] = out[j]
            out[j] = t
            pos -= 1  # the second half: pos may now be lo, then j = lo, a swap with itself
            j = np.uint64(lo) + _below(z & _LOW, np.uint64(pos - lo + 1))
            t = out[np.uint64(pos)]
            out[np.uint64(pos)] = out[j]
            out[j] = t
            pos -= 1


def permuted(a: np.ndarray, seed: int) -> np.ndarray:
    """A uniformly random permutation of the entries of a 1-D array, as a new array.

    Rao–Sandelius shuffle (random buckets, then Fisher–Yates within each) driven by a
    counter-based splitmix64 stream keyed by ``seed`` (about 7 ns per entry on one core,
    against ~50 ns for ``Generator.permutation``): uniform up to the 32-bit draws
    (relative bias of a bucket or position at most 4096/2³² or (bucket size)/2³², below
    1e-4), no global generator touched.

    Parameters
    ----------
    a : numpy.ndarray
        1-D, any dtype of 1, 2, 4 or 8 bytes (moved as raw bits).
    seed : int
        0 ≤ seed < 2**64.

    Returns
    -------
    numpy.ndarray
        Same dtype and length.
    """
    if a.ndim != 1:
        raise ValueError("permuted needs a 1-D array")
    bits = np.ascontiguousarray(a).view(np.dtype(f"u{a.dtype.itemsize}"))
    out = np.empty_like(bits)
    n_buckets = int(min(4096, max(1, a.size // SHUFFLE_BUCKET)))
    _permuted(bits, out, np.uint64(seed), n_buckets)
    return out.view(a.dtype)

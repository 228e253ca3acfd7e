"""FARMS: α of the pooled ESD of fixed-aspect-ratio submatrices (``rmt.analyze(farms=True)``).

Hu, Goel, Killiakov & Yang, "Eigenspectrum analysis of neural networks without aspect
ratio bias" (ICML 2025). The ESD's shape, and so α, depends on the aspect ratio Q of the
matrix as well as on training (the MP bulk's width is set by Q), which biases comparisons
between layers of different shapes. FARMS samples submatrices of one fixed shape —
``window`` rows × ``window·aspect`` columns of W as stored — on an evenly spaced grid over
W, pools their eigenvalues and estimates α on the pooled ESD, so every layer is measured
at the same Q.

Defaults are the paper's code's (LLM pruning): ``window=100`` rows, ``aspect=2.0`` (so
100 × 200 submatrices), ``windows_per_dim=10`` evenly spaced windows per axis (its
``sampling_ops_per_dim``, fixed sampling: up to 100 submatrices), α by the Hill estimator
with xmin at the median of the pooled ESD (its ``xmin_mid``, :func:`rmt.alpha_hill`). Its
sliding-window mode — a window every ``stride`` rows and columns — is ``stride=10``. A
matrix smaller than a window gets the largest window of the same aspect ratio that fits
(the paper's code clamps the rows only, which changes the aspect ratio or, for a short
matrix, slices past its edge), laid along the longer axis when that fits a larger one.
Conv kernels: each kh·kw slice is sampled the same way and all are pooled (the paper's
code uses a different split for convolutions).

All submatrices of a layer go through one batched eigensolve (``eigvalsh`` on the stack
of their Gram matrices, as :func:`rmt.esd_batch` does). The Gram matrices are built from
shared pieces: windows in the same rows overlap in their columns, so the Gram matrix of
each column segment between window edges is formed once and each window's is the sum of
its segments' (float64, no cancellation; error ≈ (√c + r)·eps·λmax per eigenvalue, as
for :func:`rmt.esd`). ``FarmsESD.evals`` is the pooled ESD, for other fits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt._device import array_namespace, is_cupy_array, kernels, resolve_device, to_host
from rmt._threads import limit_threads
from rmt.columns import Analysis, Column, LayerResult, attribute
from rmt.errors import DataError
from rmt.hill import HillFit, alpha_hill
from rmt.kernels import cpu
from rmt.metrics import numerical_zero_threshold
from rmt.spectra import _check_gram, _validated, stored_matrices

__all__ = ["FARMS", "FarmsESD", "farms_esd", "window_starts"]

#: The paper's defaults (its LLM-pruning code): window rows, aspect ratio, windows per axis.
WINDOW = 100
ASPECT = 2.0
WINDOWS_PER_DIM = 10


def window_starts(length: int, size: int, *, windows_per_dim: int | None = WINDOWS_PER_DIM,
                  stride: int | None = None) -> list[int]:
    """Start offsets of the windows along one axis.

    Parameters
    ----------
    length : int
        The axis' length.
    size : int
        The window's length along it (≤ ``length``).
    windows_per_dim : int, optional
        Evenly spaced windows: step = max(1, (length − size) // (n − 1)), at most n
        windows, the last ones moved back to end at the edge (FARMS's fixed sampling).
    stride : int, optional
        Instead, a window every ``stride`` (FARMS's sliding window).

    Returns
    -------
    list of int
    """
    span = length - size
    if stride is not None:
        return [i * stride for i in range(max(1, span // stride + 1))]
    n = int(windows_per_dim or 1)
    if n == 1:
        return [0]
    step = max(1, span // (n - 1))
    count = min(n, max(1, span // step + 1))
    return [min(i * step, span) for i in range(count)]


@dataclass(frozen=True)
class FarmsESD:
    """The pooled ESD of a layer's fixed-aspect-ratio submatrices and its α.

    Attributes
    ----------
    evals : numpy.ndarray
        The pooled ESD, ascending (each submatrix's X = AᵀA/N_sub, or AᵀA).
    rows, cols : int
        The submatrices' shape (of W as stored: ``window × window·aspect``, or the other
        way round for a matrix too narrow for it).
    n_windows : int
        Submatrices pooled (over all slices).
    hill : rmt.hill.HillFit
        Hill estimate at the median (FARMS's α).
    """

    evals: np.ndarray = field(repr=False)
    rows: int
    cols: int
    n_windows: int
    hill: HillFit

    @property
    def alpha(self) -> float:
        """FARMS's α: the Hill estimate at the median."""
        return float(self.hill.alpha)


def _window_shape(rows: int, cols: int, window: int, aspect: float) -> tuple[int, int]:
    """The largest window × window·aspect submatrix (rows × cols) that fits, window ≤ asked."""
    r = min(window, rows, int(cols // aspect))
    return r, int(r * aspect)


def _window_grams(A: Any, r: int, c: int, row_starts: list[int], col_starts: list[int],
                  K: Any, xp: Any) -> Any:
    """Gram matrices (r × r) of every r × c window of A, in float64 (on the host, the
    lower triangles only: all the eigensolver reads).

    Windows that share rows share columns too (they overlap when the stride is below the
    width), so each row block is decoded once, the Gram matrix of every column segment
    between window edges is formed once, and a window's Gram matrix is the sum of its
    segments' — sums of positive semi-definite pieces, no cancellation.
    """
    cuts = sorted({0, A.shape[1], *col_starts, *(j + c for j in col_starts)})
    position = {cut: k for k, cut in enumerate(cuts)}
    first = np.array([position[j] for j in col_starts], dtype=np.int64)
    last = np.array([position[j + c] for j in col_starts], dtype=np.int64)
    out = xp.empty((len(row_starts) * len(col_starts), r, r))
    block = xp.empty((r, A.shape[1]))
    segments = xp.empty((len(cuts) - 1, r, r))
    for n, i in enumerate(row_starts):
        K.decode(A[i:i + r], block)
        for s, (a, b) in enumerate(itertools.pairwise(cuts)):
            xp.matmul(block[:, a:b], block[:, a:b].T, out=segments[s])
        grams = out[n * len(col_starts):(n + 1) * len(col_starts)]
        if xp is np:  # one compiled pass over the lower triangles (numpy.sum: 3x slower)
            cpu.add_ranges(segments, first, last, grams)
        else:
            for k, (lo, hi) in enumerate(zip(first, last, strict=True)):
                xp.sum(segments[lo:hi], axis=0, out=grams[k])
    return out


def farms_esd(W: Any, *, window: int = WINDOW, aspect: float = ASPECT,
              windows_per_dim: int | None = WINDOWS_PER_DIM, stride: int | None = None,
              normalize: bool = True, device: Any = "auto", n_threads: int | None = None,
              name: str | None = None) -> FarmsESD:
    """FARMS's pooled submatrix ESD of W and its α.

    Parameters
    ----------
    W : array_like
        A matrix (out × in, as stored) or conv kernel (out, in, kh, kw), storage dtype
        (NumPy or CuPy).
    window : int, default 100
        Rows of each submatrix (FARMS's ``num_row_samples``).
    aspect : float, default 2.0
        Columns per row of each submatrix (its ``Q_ratio``): window × int(window·aspect).
    windows_per_dim : int, default 10
        Evenly spaced windows per axis (its ``sampling_ops_per_dim``).
    stride : int, optional
        Sliding windows every ``stride`` rows and columns instead (its ``step_size``).
    normalize : bool, default True
        Eigenvalues of each submatrix's AᵀA/N_sub (False: AᵀA); α does not depend on it.
    device : {"auto", "cpu", "gpu"}
        Where the Gram matrices and the batched eigensolve run.
    n_threads : int, optional
        As in :func:`rmt.esd`.
    name : str, optional
        Layer name for messages.

    Returns
    -------
    FarmsESD

    Raises
    ------
    ValueError
        Bad window, aspect, windows_per_dim or stride.
    rmt.errors.NonFiniteError
        W has NaN or Inf entries in a sampled window.
    rmt.errors.DataError
        W is too small for a submatrix of at least 2 × 2, or its pooled ESD has too few
        non-zero eigenvalues for the Hill estimate.
    """
    if int(window) < 2 or not aspect >= 1 or (stride is not None and int(stride) < 1) or (
            windows_per_dim is not None and int(windows_per_dim) < 1):
        raise ValueError(f"need window >= 2, aspect >= 1, stride >= 1, windows_per_dim >= 1; "
                         f"got {window}, {aspect}, {stride}, {windows_per_dim}")
    W, _ = _validated(W, "slices", name)
    dev = resolve_device(device, W)
    if dev == "cpu" and is_cupy_array(W):
        W = to_host(W)
    K, xp = kernels(dev), array_namespace(W) if dev == "gpu" else np
    slices = stored_matrices(W)
    rows, cols = slices[0].shape
    r, c = _window_shape(rows, cols, int(window), float(aspect))
    flipped = _window_shape(cols, rows, int(window), float(aspect))
    tall = flipped[0] > r  # too narrow for the window: lay it along the rows
    if tall:
        slices, (rows, cols), (r, c) = [A.T for A in slices], (cols, rows), flipped
    if r < 2:
        raise DataError(f"{rows}x{cols} is too small for a submatrix of aspect ratio {aspect}")
    row_starts = window_starts(rows, r, windows_per_dim=windows_per_dim, stride=stride)
    col_starts = window_starts(cols, c, windows_per_dim=windows_per_dim, stride=stride)
    with limit_threads(n_threads):
        grams = [_window_grams(A, r, c, row_starts, col_starts, K, xp) for A in slices]
        G = xp.concatenate(grams) if len(grams) > 1 else grams[0]
        _check_gram(G, W, np.dtype(np.float64), name)
        ev = np.sort(np.asarray(K.eigvalsh(G), dtype=np.float64).ravel())
    if normalize:
        ev /= c
    nonzero = ev[ev > numerical_zero_threshold(ev, r)]
    if nonzero.size < 4:
        raise DataError(f"FARMS ESD has {nonzero.size} non-zero eigenvalues")
    return FarmsESD(evals=ev, rows=c if tall else r, cols=r if tall else c,
                    n_windows=int(G.shape[0]), hill=alpha_hill(nonzero, xmin="median"))


def _farms(layer: LayerResult, W: Any) -> FarmsESD:
    opts = layer.options
    return farms_esd(W, normalize=opts.normalize, device=opts.device,
                     n_threads=opts.n_threads, name=layer.name)


#: Registered by rmt.analyses (opt-in ``farms=True``).
FARMS = Analysis("farms", _farms, (
    Column("alpha_farms", "FARMS alpha: Hill estimate (xmin at the median) of the pooled ESD "
           "of up to 10x10 evenly spaced 100x200 submatrices (Hu et al. 2025)", "",
           "rmt.farms.farms_esd", attribute("alpha")),
    Column("farms_windows", "submatrices pooled (all conv slices)", "count",
           "rmt.farms.farms_esd", attribute("n_windows")),
    Column("farms_shape", "rows x columns of each submatrix (smaller than 100x200 when W "
           "is)", "", "rmt.farms.farms_esd", lambda r, layer: f"{r.rows}x{r.cols}"),
), failure="no FARMS estimate", option="farms")

"""Eigenvector localisation of a weight (``rmt.analyze(vectors=True)``, ``rmt.eigenvectors``).

The eigenvectors of the Gram matrix of W on its smaller side (WᵀW for N ≥ M; W Wᵀ, the
outputs' side, for a square W, as WeightWatcher takes them) are W's unit singular vectors
on that side. A delocalised vector spreads over all M coordinates, as for a random matrix; a
localised one sits on a few (Martin & Mahoney 2021, §4.3 and Fig. 9). Per vector v:

- **localisation ratio** ‖v‖₁/‖v‖∞ (M for a flat vector, 1 for a coordinate vector;
  ‖v‖₁ ≈ √(2M/π) for a Gaussian unit vector);
- **participation ratio**, WeightWatcher's definition ‖v‖₂/‖v‖₄ = (Σvᵢ⁴)^(−1/4) for a unit
  vector ((3/M)^(−1/4) for a Gaussian one, 1 for a coordinate vector; the physicists'
  participation number is its fourth power, and the inverse participation ratio Σvᵢ⁴ its
  inverse fourth power);
- **vector entropy**, WeightWatcher's ``discrete_entropy``: the Shannon entropy of a
  100-bin histogram of |vᵢ| − mean|v| (each bin's density + 1e-10, renormalised).

WeightWatcher's 12 ``vectors=True`` columns are the mean and population variance of each
over the tail (eigenvalue ≥ the power-law fit's xmin) and over the bulk (below it), under
its names. The top spikes — the eigenvalues above the MP fit's Tracy–Widom edge — also get
their input and output coordinates: for W stored (out, in) (PyTorch's Linear), the right
singular vector lives on the inputs and the left one, u = Wv/σ, on the outputs.

Precision: float64 Gram (the ESD's accumulation) and LAPACK ``syevd`` with vectors;
metrics in float64. Cost: one Gram and one eigendecomposition with vectors per slice
(roughly twice ``eigvalsh``), plus O(M²) for the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt._device import is_cupy_array, kernels, resolve_device, to_host
from rmt._threads import limit_threads
from rmt.columns import Analysis, Column, LayerResult
from rmt.spectra import Conv, _check_gram, _slices, _validated

__all__ = ["METRICS", "VECTORS", "Eigendecomposition", "EigenvectorMetrics", "SpikeVector",
           "decompose", "discrete_entropy", "eigenvectors", "localisation", "localization_ratio",
           "participation_ratio"]

#: The per-vector metrics, in WeightWatcher's column order and names.
METRICS = ("vec_entropy", "loc_ratio", "part_ratio")

ENTROPY_BINS = 100
ENTROPY_EPSILON = 1e-10  # WeightWatcher's EPSILON


def localization_ratio(V: np.ndarray) -> np.ndarray:
    """‖v‖₁/‖v‖∞ of each column of V.

    Parameters
    ----------
    V : numpy.ndarray, shape (M, k)
        Vectors as columns.

    Returns
    -------
    numpy.ndarray, shape (k,)
    """
    a = np.abs(V)
    return a.sum(axis=0) / a.max(axis=0)


def participation_ratio(V: np.ndarray) -> np.ndarray:
    """‖v‖₂/‖v‖₄ of each column of V (WeightWatcher's ``participation_ratio``).

    Parameters
    ----------
    V : numpy.ndarray, shape (M, k)

    Returns
    -------
    numpy.ndarray, shape (k,)
    """
    sq = V * V
    return np.sqrt(sq.sum(axis=0)) / np.sqrt(np.sqrt((sq * sq).sum(axis=0)))


def discrete_entropy(V: np.ndarray, bins: int = ENTROPY_BINS) -> np.ndarray:
    """WeightWatcher's ``discrete_entropy`` of each column of V, all columns at once.

    Parameters
    ----------
    V : numpy.ndarray, shape (M, k)
    bins : int, default 100

    Returns
    -------
    numpy.ndarray, shape (k,)
        −Σ p ln p of the histogram of |v| − mean|v| over ``bins`` equal bins spanning its
        range (``numpy.histogram``'s binning, reproduced per column), p = density +
        1e-10, normalised.
    """
    a = np.abs(np.asarray(V, dtype=np.float64))
    a = (a - a.mean(axis=0)).T  # (k, M)
    k, m = a.shape
    first, last = a.min(axis=1), a.max(axis=1)
    flat = first == last
    first, last = np.where(flat, first - 0.5, first), np.where(flat, last + 0.5, last)
    edges = np.linspace(first, last, bins + 1, axis=1)
    # numpy.histogram's uniform-bin index, its two round-off corrections included
    idx = ((a - first[:, None]) / (last - first)[:, None] * bins).astype(np.intp)
    idx[idx == bins] -= 1
    rows = np.arange(k)[:, None]
    idx[a < edges[rows, idx]] -= 1
    idx[(a >= edges[rows, idx + 1]) & (idx != bins - 1)] += 1
    counts = np.bincount((idx + bins * rows).ravel(), minlength=k * bins).reshape(k, bins)
    density = counts / np.diff(edges, axis=1) / m
    p = (density + ENTROPY_EPSILON) / np.sqrt(2 * np.pi)
    p /= p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1)


@dataclass(frozen=True)
class SpikeVector:
    """Where one outlier eigenvalue of W lives.

    Attributes
    ----------
    eigenvalue : float
        Its eigenvalue (the ESD's units).
    slice : int
        Which matrix of the kernel (0 for a matrix; kh·kw slices in row-major order).
    ipr_in, ipr_out : float
        Inverse participation ratios Σvᵢ⁴ of its unit singular vectors on W's inputs
        (columns as stored) and outputs (rows): 1/n spread evenly, 1 on one coordinate.
    top_in, top_out : tuple of (int, float)
        The input (column) and output (row) coordinates carrying most of it, largest
        |component| first: (index, component).
    """

    eigenvalue: float
    slice: int
    ipr_in: float
    ipr_out: float
    top_in: tuple[tuple[int, float], ...]
    top_out: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class EigenvectorMetrics:
    """Localisation metrics of every eigenvector of a weight's ESD.

    Attributes
    ----------
    evals : numpy.ndarray
        The ESD, ascending (pooled over slices).
    vec_entropy, loc_ratio, part_ratio : numpy.ndarray
        Each eigenvector's metric, aligned with ``evals``.
    n_tail : int
        How many of the largest eigenvalues form the tail (the rest is the bulk).
    spikes : tuple of SpikeVector
        The top eigenvalues asked for, largest first.
    """

    evals: np.ndarray = field(repr=False)
    vec_entropy: np.ndarray = field(repr=False)
    loc_ratio: np.ndarray = field(repr=False)
    part_ratio: np.ndarray = field(repr=False)
    n_tail: int
    spikes: tuple[SpikeVector, ...]

    def stat(self, region: str, metric: str, how: str) -> float:
        """Mean or population variance of a metric over the tail or the bulk.

        Parameters
        ----------
        region : {"tail", "bulk"}
            The ``n_tail`` largest eigenvalues, or the others.
        metric : {"vec_entropy", "loc_ratio", "part_ratio"}
        how : {"mean", "var"}

        Returns
        -------
        float
            NaN over an empty region.
        """
        values = getattr(self, metric)
        cut = values.size - self.n_tail
        chosen = values[cut:] if region == "tail" else values[:cut]
        if chosen.size == 0:
            return float("nan")
        return float(np.mean(chosen) if how == "mean" else np.var(chosen))


def _float64(block: Any, buffer: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``block`` (2-D) as float64: itself when it is, else decoded into ``buffer`` (made,
    or grown, here); returns the array and the buffer to reuse."""
    block = np.asarray(block)
    if block.dtype == np.float64:
        return block, buffer
    rows, cols = block.shape
    if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != cols:
        buffer = np.empty((rows, cols))
    return kernels("cpu").decode(block, buffer[:rows]), buffer


def _times(A: Any, V: np.ndarray, block_rows: int = 4096) -> np.ndarray:
    """A V in float64, A (n × p) in any storage dtype (any strides: a transposed W is
    decoded in place), by row blocks decoded into one reused buffer (no full copy)."""
    A = to_host(A)
    out = np.empty((A.shape[0], V.shape[1]))
    buffer = None
    for start in range(0, A.shape[0], block_rows):
        block, buffer = _float64(A[start:start + block_rows], buffer)
        np.matmul(block, V, out=out[start:start + block_rows])
    return out


def _top(vec: np.ndarray, n: int) -> tuple[tuple[int, float], ...]:
    """The n largest |components| of vec, largest first (ties: lower index first)."""
    mag = np.abs(vec)
    if n < vec.size:  # the n-th largest magnitude, then every index at or above it
        cut = np.partition(mag, vec.size - n)[vec.size - n]
        candidates = np.flatnonzero(mag >= cut)
    else:
        candidates = np.arange(vec.size)
    order = candidates[np.argsort(-mag[candidates], kind="stable")][:n]
    return tuple((int(i), float(vec[i])) for i in order)


@dataclass(frozen=True)
class Eigendecomposition:
    """Every slice's eigenvalues and unit eigenvectors of WᵀW (the small side), pooled.

    Attributes
    ----------
    evals : numpy.ndarray
        The ESD, ascending (pooled over slices; /N when normalised).
    owner, column : numpy.ndarray
        For ``evals[i]``: its slice and its eigenvector's column in that slice's ``V``.
    vectors : list of numpy.ndarray
        Per slice, V (M × M, float64), eigenvectors as columns in ascending eigenvalue
        order of that slice.
    mats : list of array
        The oriented slices A (N × M, storage dtype) the Gram matrices came from.
    transpose : bool
        Whether A = Wᵀ (stored W is wide).
    unit : float
        N when normalised, else 1.
    gram : numpy.ndarray or None
        With ``decompose(top=k)`` or ``keep_gram=True``: the Gram matrix AᵀA (float64),
        kept; with ``top=k``, ``vectors`` holds only the top k eigenvectors (the last k
        columns of a full ``V``).
    """

    evals: np.ndarray = field(repr=False)
    owner: np.ndarray = field(repr=False)
    column: np.ndarray = field(repr=False)
    vectors: list[np.ndarray] = field(repr=False)
    mats: list[Any] = field(repr=False)
    transpose: bool
    unit: float
    gram: np.ndarray | None = field(default=None, repr=False)


def _symmetric(G: np.ndarray) -> np.ndarray:
    """G with its upper triangle copied from the lower one (``syrk`` fills only one half),
    in place (compiled: ``rmt.kernels.cpu.mirror_lower``)."""
    G = np.array(G, dtype=np.float64, order="C") if not G.flags.writeable else G
    return kernels("cpu").mirror_lower(G)


def decompose(W: Any, *, conv: Conv = "slices", normalize: bool = True, device: Any = "auto",
              n_threads: int | None = None, name: str | None = None,
              top: int | None = None, keep_gram: bool = False) -> Eigendecomposition:
    """Gram matrix and full eigendecomposition of each matrix W is read as.

    Parameters
    ----------
    W : array_like
        Matrix or conv kernel in its storage dtype (NumPy or CuPy).
    conv : {"slices", "flatten"}
        As in :func:`rmt.esd`.
    normalize : bool, default True
        Eigenvalues of WᵀW/N (False: of WᵀW).
    device : {"auto", "cpu", "gpu"}
        Where the Gram matrices and eigendecompositions run (vectors come back to the
        host).
    n_threads : int, optional
        As in :func:`rmt.esd`.
    name : str, optional
        Layer name for error messages.
    top : int, optional
        For a 2-D matrix: only the top ``top`` eigenvectors (``rmt.kernels`` ``eigh_top``:
        about the cost of ``eigvalsh``), every eigenvalue, and the Gram matrix kept.
    keep_gram : bool, default False
        For a 2-D matrix whose Gram matrix is W Wᵀ (wide or square): keep a copy of it
        with the full decomposition too (M × M float64 more; ``rmt.compare``'s CKA is then
        ⟨G₁, G₂⟩ instead of a product with every eigenvector).

    Returns
    -------
    Eigendecomposition
        Its ``evals`` are the ESD as :func:`rmt.esd` computes it, from ``syevd`` with
        vectors instead of without (they agree to ~M·eps·λmax, not bit for bit).

    Raises
    ------
    rmt.errors.ShapeError, rmt.errors.DTypeError, rmt.errors.NonFiniteError
        As :func:`rmt.esd`.
    """
    W, shape = _validated(W, conv, name)
    dev = resolve_device(device, W)
    if dev == "cpu" and is_cupy_array(W):
        W = to_host(W)
    K = kernels(dev)
    mats = [W.T if shape.transpose else W] if W.ndim == 2 else list(_slices(W, shape))
    # A square matrix's vectors are taken on its outputs (W Wᵀ), as WeightWatcher does:
    # the eigenvalues are the same either way, the eigenvectors are not
    square = shape.N == shape.M and not shape.transpose
    if square:
        mats = [A.T for A in mats]
    unit = float(shape.N) if normalize else 1.0
    partial = top is not None and W.ndim == 2
    evals, vectors, gram = [], [], None
    with limit_threads(n_threads):
        for A in mats:
            G = K.gram(A, dtype=np.float64) if W.ndim == 2 else K.gram_stack(A[None])[0]
            _check_gram(G, W, np.dtype(np.float64), name)
            if partial:
                gram = _symmetric(np.asarray(to_host(G), dtype=np.float64))
                del G  # one M × M copy kept, not two
                w, V = K.eigh_top(gram, int(top))  # type: ignore[arg-type]
            else:
                if keep_gram and W.ndim == 2 and (shape.transpose or square):
                    gram = _symmetric(np.array(to_host(G), dtype=np.float64))
                w, V = K.eigh(G)
            evals.append(np.asarray(w, dtype=np.float64) / unit)
            vectors.append(np.asarray(V, dtype=np.float64))
    ev = np.concatenate(evals)
    order = np.argsort(ev, kind="stable")
    columns = np.arange(shape.M) - (shape.M - vectors[0].shape[1] if partial else 0)
    return Eigendecomposition(evals=ev[order],
                              owner=np.repeat(np.arange(len(mats)), shape.M)[order],
                              column=np.tile(columns, len(mats))[order],
                              vectors=vectors, mats=mats, transpose=bool(shape.transpose or square),
                              unit=unit, gram=gram)


def localisation(dec: Eigendecomposition, *, n_tail: int = 0, n_spikes: int = 1,
                 n_entries: int = 5) -> EigenvectorMetrics:
    """The metrics of every eigenvector of a decomposition, and its top spikes' coordinates.

    Parameters
    ----------
    dec : Eigendecomposition
        From :func:`decompose`.
    n_tail : int, default 0
        How many of the largest eigenvalues form the tail.
    n_spikes : int, default 1
        How many of the largest eigenvalues to locate.
    n_entries : int, default 5
        Coordinates listed per spike and side.

    Returns
    -------
    EigenvectorMetrics
    """
    per_slice = [(discrete_entropy(V), localization_ratio(V), participation_ratio(V))
                 for V in dec.vectors]
    pooled = [np.concatenate([m[i] for m in per_slice]) for i in range(3)]
    m = dec.vectors[0].shape[0]
    flat_index = dec.owner * m + dec.column
    metrics = [p[flat_index] for p in pooled]
    chosen = range(1, min(int(n_spikes), dec.evals.size) + 1)  # the largest, first
    # every spike's u = A v / σ of one slice from one pass over that slice
    wanted: dict[int, list[int]] = {}
    for j in chosen:
        wanted.setdefault(int(dec.owner[-j]), []).append(int(dec.column[-j]))
    products = {k: _times(dec.mats[k], dec.vectors[k][:, cols]) for k, cols in wanted.items()}
    spikes = []
    for j in chosen:
        k, c = int(dec.owner[-j]), int(dec.column[-j])
        lam = float(dec.evals[-j])
        v = dec.vectors[k][:, c]
        s = np.sqrt(max(lam * dec.unit, 0.0))
        Av = products[k][:, wanted[k].index(c)]
        u = Av / s if s > 0 else np.zeros_like(Av)
        # A = W (out × in): v on the inputs, u on the outputs; A = Wᵀ: the other way round
        v_in, v_out = (u, v) if dec.transpose else (v, u)
        spikes.append(SpikeVector(eigenvalue=lam, slice=k, ipr_in=float(np.sum(v_in**4)),
                                  ipr_out=float(np.sum(v_out**4)),
                                  top_in=_top(v_in, n_entries), top_out=_top(v_out, n_entries)))
    return EigenvectorMetrics(evals=dec.evals, vec_entropy=metrics[0], loc_ratio=metrics[1],
                              part_ratio=metrics[2],
                              n_tail=int(min(max(n_tail, 0), dec.evals.size)),
                              spikes=tuple(spikes))


def eigenvectors(W: Any, *, xmin: float | None = None, n_tail: int | None = None,
                 n_spikes: int = 1, conv: Conv = "slices", normalize: bool = True,
                 device: Any = "auto", n_threads: int | None = None, n_entries: int = 5,
                 name: str | None = None) -> EigenvectorMetrics:
    """Localisation of every eigenvector of W's ESD, and where its top spikes live.

    Parameters
    ----------
    W : array_like
        Matrix or conv kernel in its storage dtype (NumPy or CuPy).
    xmin : float, optional
        Tail/bulk split: the tail is every eigenvalue ≥ xmin (the power-law fit's xmin, in
        the ESD's units), as WeightWatcher splits. Default: no tail.
    n_tail : int, optional
        The tail as the ``n_tail`` largest eigenvalues instead (the fit's ``n_tail``: the
        split then does not hinge on the last bit of an eigenvalue equal to xmin).
    n_spikes : int, default 1
        How many of the largest eigenvalues to locate (0: none).
    conv : {"slices", "flatten"}
        As in :func:`rmt.esd`.
    normalize : bool, default True
        Eigenvalues of WᵀW/N (False: of WᵀW).
    device : {"auto", "cpu", "gpu"}
        Where the Gram matrices and eigendecompositions run.
    n_threads : int, optional
        As in :func:`rmt.esd`.
    n_entries : int, default 5
        Coordinates listed per spike and side.
    name : str, optional
        Layer name for error messages.

    Returns
    -------
    EigenvectorMetrics
    """
    dec = decompose(W, conv=conv, normalize=normalize, device=device, n_threads=n_threads,
                    name=name)
    if n_tail is None:
        n_tail = 0 if xmin is None else int(np.sum(dec.evals >= xmin))
    return localisation(dec, n_tail=n_tail, n_spikes=n_spikes, n_entries=n_entries)


def _vectors(layer: LayerResult, W: Any) -> EigenvectorMetrics:
    opts = layer.options
    fit, mp = layer.results.get("powerlaw"), layer.results.get("mp")
    # the tail is the fit's: the eigenvalues >= xmin of the layer's ESD (none without a fit)
    n_tail = int(np.sum(layer.evals >= fit.xmin)) if fit is not None and np.isfinite(
        fit.alpha) else 0
    n_spikes = max(1, int(mp.n_spikes)) if mp is not None else 1
    dec = layer.eigen if layer.eigen is not None else decompose(
        W, conv=opts.conv, normalize=opts.normalize, device=opts.device,
        n_threads=opts.n_threads, name=layer.name)
    return localisation(dec, n_tail=n_tail, n_spikes=min(n_spikes, 10))


def _stat_column(region: str, metric: str, how: str) -> Column:
    word = {"mean": "mean", "var": "population variance"}[how]
    where = "tail (lambda >= xmin)" if region == "tail" else "bulk (lambda < xmin)"
    what = {"vec_entropy": "vector entropy (100-bin histogram)",
            "loc_ratio": "localization ratio ||v||_1/||v||_inf",
            "part_ratio": "participation ratio ||v||_2/||v||_4"}[metric]
    return Column(f"{region}_{how}_{metric}", f"{word} of the eigenvectors' {what} over the "
                  f"{where} (WeightWatcher's vectors=True)", "", "rmt.vectors.eigenvectors",
                  lambda r, layer: r.stat(region, metric, how))


def _spike(attr: str) -> Any:
    def value(r: EigenvectorMetrics, layer: LayerResult) -> Any:
        mp = layer.results.get("mp")
        if not r.spikes or mp is None or mp.n_spikes == 0:
            return float("nan")
        top = r.spikes[0]
        return getattr(top, attr) if attr.startswith("ipr") else getattr(top, attr)[0][0]
    return value


#: Registered by rmt.analyses, after the fits it reads (xmin, the MP spikes).
VECTORS = Analysis("vectors", _vectors, (
    *(_stat_column(region, metric, how) for region in ("bulk", "tail")
      for metric in METRICS for how in ("mean", "var")),
    Column("spike_ipr_in", "inverse participation ratio sum(v^4) of the largest spike's unit "
           "singular vector on W's inputs (stored columns); NaN without an MP spike", "",
           "rmt.vectors.eigenvectors", _spike("ipr_in")),
    Column("spike_ipr_out", "the same on W's outputs (stored rows)", "",
           "rmt.vectors.eigenvectors", _spike("ipr_out")),
    Column("spike_in", "input coordinate (stored column) carrying most of the largest spike",
           "index", "rmt.vectors.eigenvectors", _spike("top_in")),
    Column("spike_out", "output coordinate (stored row) carrying most of the largest spike",
           "index", "rmt.vectors.eigenvectors", _spike("top_out")),
), option="vectors")

"""Randomized ESDs and correlation traps (``rmt.analyze(randomize=True)``, ``rmt.traps``).

Shuffling a weight's entries keeps their distribution and destroys their correlations, so
the shuffled matrix's ESD is what the layer's entries would give with no learned structure
(Martin & Mahoney, JMLR 2021, §5.4). Its Marchenko–Pastur bulk should then hold every
eigenvalue: an eigenvalue of the *shuffled* matrix above the Tracy–Widom edge is a
**correlation trap**, made by a few entries far larger than the rest (Martin & Mahoney
call them traps; WeightWatcher counts them as ``num_traps``). Each conv slice is shuffled
on its own, as WeightWatcher does. Generators are seeded: the same seed gives the same
shuffle of the same layer in any run, serial or parallel (docs/science.md §10).

Two distances between the ESD and the shuffled ESD are reported: ``rand_distance``, the
Wasserstein-1 distance between their log10 eigenvalue distributions (in decades), and
``rand_distance_ww``, WeightWatcher's Jensen–Shannon distance between the two *sorted
eigenvalue vectors* read as probability vectors (its definition, kept for comparison; it
measures how the mass is spread over eigenvalue ranks, not a distance between
distributions of eigenvalues).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse.linalg

from rmt._device import array_namespace, is_cupy_array, kernels, to_host
from rmt.columns import Analysis, Column, Companion, LayerResult, attribute, entry_std, layer_rng
from rmt.hessian.slq import wasserstein
from rmt.metrics import numerical_zero_threshold
from rmt.mp import MPFit, fit_mp, tw_z
from rmt.mp_ww import WWMPFit, fit_mp_ww
from rmt.spectra import Conv, esd, stored_matrices, weight_shape

__all__ = ["RANDOMIZE", "RandomizedESD", "Trap", "TrapResult", "jensen_shannon_ww",
           "randomized_esd", "shuffled", "traps"]


def shuffled(W: Any, rng: np.random.Generator, conv: Conv = "slices", *,
             permutations: bool = False) -> tuple[Any, list[np.ndarray]]:
    """W with the entries of each matrix it is read as permuted at random.

    Parameters
    ----------
    W : array_like
        A matrix or conv kernel (NumPy or CuPy, any storage dtype; the dtype is kept).
    rng : numpy.random.Generator
        Draws one seed per slice for the kernels' shuffle (``rmt.kernels.cpu.permuted``).
    conv : {"slices", "flatten"}
        Each kh·kw slice shuffled on its own, or the flattened kernel at once.
    permutations : bool, default False
        Also return the permutations (permutes an index array and gathers: slower).

    Returns
    -------
    shuffled : array
        Same shape and dtype as W, each slice's entries permuted.
    permutations : list of numpy.ndarray
        Per slice, ``shuffled_slice.ravel() == slice.ravel()[perm]`` (the same shuffle
        either way); empty unless asked for.
    """
    xp = array_namespace(W)
    K = kernels("gpu" if is_cupy_array(W) else "cpu")
    mats = stored_matrices(W, conv)
    seeds = [int(s) for s in rng.integers(0, 2**63, size=len(mats))]
    out, perms = [], []
    for A, seed in zip(mats, seeds, strict=True):
        if permutations:
            perm = kernels("cpu").permuted(np.arange(A.size, dtype=np.int64), seed)
            out.append(A.reshape(-1)[xp.asarray(perm)].reshape(A.shape))
            perms.append(perm)
        else:  # the same shuffle, on the entries themselves
            out.append(K.permuted(A.reshape(-1), seed).reshape(A.shape))
    if W.ndim == 2:
        return out[0], perms
    if conv == "flatten":
        return out[0].reshape(W.shape), perms
    return xp.stack(out, axis=-1).reshape(W.shape), perms


def jensen_shannon_ww(p: Any, q: Any) -> float:
    """WeightWatcher 0.7.7's ``jensen_shannon_distance`` of two eigenvalue vectors.

    Parameters
    ----------
    p, q : array_like
        Sorted eigenvalue vectors of equal length, read as (unnormalised) probability
        vectors over ranks.

    Returns
    -------
    float
        √((KL(p‖m) + KL(q‖m))/2) with m = (p + q)/2 (natural logarithms).
    """
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    m = (p + q) / 2
    return float(np.sqrt((_kl(p, m) + _kl(q, m)) / 2))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """scipy.stats.entropy(p, q): KL divergence of the normalised vectors (0·log 0 = 0)."""
    p, q = p / p.sum(), q / q.sum()
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


def _w1(x: np.ndarray, y: np.ndarray) -> float:
    """Wasserstein-1 distance between two samples (equal weights within each)."""
    return wasserstein(x, np.full(x.size, 1.0 / x.size), y, np.full(y.size, 1.0 / y.size))


@dataclass(frozen=True)
class RandomizedESD:
    """The ESD of a layer with its entries shuffled, and what it says about the layer.

    Attributes
    ----------
    evals : numpy.ndarray
        The shuffled matrix's ESD, ascending (same units as the layer's).
    mp_fit : MPFit or None
        Marchenko–Pastur fit of its non-zero eigenvalues, spikes by Tracy–Widom at the
        run's ``fpr``: the spikes are correlation traps.
    lambda_max : float
        Its largest eigenvalue (WeightWatcher's ``max_rand_eval``).
    distance : float
        Wasserstein-1 distance between the log10 non-zero eigenvalues of the layer's ESD
        and of this one (decades).
    distance_ww : float
        WeightWatcher's Jensen–Shannon distance between the sorted eigenvalue vectors.
    ww_fit : WWMPFit or None
        WeightWatcher's MP fit of the same shuffled ESD (``rmt.mp_ww.fit_mp_ww``): its
        spikes are WeightWatcher's ``num_traps``. Below ``WW_POOL_BELOW`` eigenvalues
        per matrix it is fitted, as WeightWatcher does, to ``WW_REPLICAS`` pooled
        shuffles (this one and four more), so its count is over all of them.
    """

    evals: np.ndarray = field(repr=False)
    mp_fit: MPFit | None
    lambda_max: float
    distance: float
    distance_ww: float
    ww_fit: WWMPFit | None = None

    @property
    def n_traps(self) -> int:
        """Eigenvalues of the shuffled ESD above its Tracy–Widom edge."""
        return 0 if self.mp_fit is None else int(self.mp_fit.n_spikes)

    @property
    def n_traps_ww(self) -> int:
        """Eigenvalues of the shuffled ESD above WeightWatcher's cut (−1: no fit, as it)."""
        return -1 if self.ww_fit is None else int(self.ww_fit.n_spikes)


#: WeightWatcher fits the MP law to five pooled shuffles when a layer has fewer than 100
#: eigenvalues per matrix ("to improve the random estimator"); ``num_traps_ww`` does too.
WW_POOL_BELOW = 100
WW_REPLICAS = 5


def randomized_esd(W: Any, ev: np.ndarray, *, rng: np.random.Generator, conv: Conv = "slices",
                   normalize: bool = True, fpr: float = 0.01, device: Any = "auto",
                   n_threads: int | None = None) -> RandomizedESD:
    """Shuffle W, compute its ESD and fit it, and compare it with the layer's ESD.

    Parameters
    ----------
    W : array_like
        The matrix or conv kernel.
    ev : numpy.ndarray
        Its own ESD (``rmt.esd(W, normalize=normalize, conv=conv)``).
    rng : numpy.random.Generator
        Draws the shuffle.
    conv : {"slices", "flatten"}
        As in :func:`rmt.esd`.
    normalize : bool, default True
        As in :func:`rmt.esd`.
    fpr : float, default 0.01
        False-positive rate of the trap (spike) test.
    device : {"auto", "cpu", "gpu"}
        Where the ESD runs.
    n_threads : int, optional
        As in :func:`rmt.esd`.

    Returns
    -------
    RandomizedESD
    """
    Ws, _ = shuffled(W, rng, conv)
    rand = esd(Ws, normalize=normalize, conv=conv, device=device, n_threads=n_threads)
    del Ws
    return _compared(W, ev, rand, rng=rng, conv=conv, normalize=normalize, fpr=fpr,
                     device=device, n_threads=n_threads)


def _compared(W: Any, ev: np.ndarray, rand: np.ndarray, *, rng: np.random.Generator,
              conv: Conv, normalize: bool, fpr: float, device: Any,
              n_threads: int | None) -> RandomizedESD:
    """The fits and distances of :func:`randomized_esd`, given the shuffled ESD ``rand``
    (``rng`` as left by the shuffle: small layers draw more shuffles from it)."""
    shape = weight_shape(W.shape, conv)
    nonzero = rand[rand > numerical_zero_threshold(rand, shape.M)]
    mpf = (fit_mp(nonzero, N=shape.N, M=shape.M, fpr=fpr, normalized=normalize)
           if nonzero.size >= 2 else None)
    own = ev[ev > numerical_zero_threshold(ev, shape.M)]
    distance = (_w1(np.log10(own), np.log10(nonzero)) if own.size and nonzero.size
                else float("nan"))
    pooled = rand
    if shape.M < WW_POOL_BELOW:  # WeightWatcher pools shuffles of small layers for its fit
        extra = [esd(shuffled(W, rng, conv)[0], normalize=normalize, conv=conv, device=device,
                     n_threads=n_threads) for _ in range(WW_REPLICAS - 1)]
        pooled = np.sort(np.concatenate([rand, *extra]))
    try:
        ww_fit = fit_mp_ww(np.maximum(pooled, 0), shape.N, shape.M)
    except ValueError:
        ww_fit = None
    return RandomizedESD(evals=rand, mp_fit=mpf, lambda_max=float(rand[-1]),
                         distance=distance,
                         distance_ww=jensen_shannon_ww(np.maximum(ev, 0), np.maximum(rand, 0)),
                         ww_fit=ww_fit)


@dataclass(frozen=True)
class Trap:
    """One correlation trap: an outlier of the shuffled matrix and the weights behind it.

    Attributes
    ----------
    eigenvalue : float
        Its eigenvalue in the shuffled ESD (the layer's units).
    tw_z : float
        Tracy–Widom z-score against the shuffled ESD's MP bulk.
    strength : float
        δ = (λ − λ₊)/λ₊.
    slice : int
        Which matrix of the kernel it comes from (0 for a matrix).
    energy_fraction : float
        Share of ‖W‖²_F (all slices) its rank-one component s·u·vᵀ carries.
    ipr_left, ipr_right : float
        Inverse participation ratios Σuᵢ⁴ and Σvⱼ⁴ of its singular vectors: 1/n for a
        vector spread evenly over n coordinates, 1 for one concentrated on a single one.
    entries : tuple of (int, int, float)
        The weights that carry it, largest first: (row, column, value) of the original,
        un-shuffled slice, at the positions where its component is largest.
    """

    eigenvalue: float
    tw_z: float
    strength: float
    slice: int
    energy_fraction: float
    ipr_left: float
    ipr_right: float
    entries: tuple[tuple[int, int, float], ...]


@dataclass(frozen=True)
class TrapResult:
    """The correlation traps of one weight.

    Attributes
    ----------
    traps : tuple of Trap
        Largest eigenvalue first.
    mp_fit : MPFit or None
        The MP fit of the shuffled ESD.
    rand_evals : numpy.ndarray
        The shuffled ESD, ascending.
    """

    traps: tuple[Trap, ...]
    mp_fit: MPFit | None
    rand_evals: np.ndarray = field(repr=False)

    @property
    def n_traps(self) -> int:
        """How many traps."""
        return len(self.traps)


def traps(W: Any, *, rng: Any = None, fpr: float = 0.01, conv: Conv = "slices",
          normalize: bool = True, n_entries: int = 10) -> TrapResult:
    """Find the correlation traps of a weight and the entries that make them.

    The entries of each matrix W is read as are shuffled (seeded), the shuffled ESD is fitted
    by Marchenko–Pastur with Tracy–Widom spikes at ``fpr``, and each spike's singular
    triplet (s, u, v) of its shuffled slice is mapped back through the permutation to the
    original weight's coordinates. On a matrix without traps the expected number found is
    ``fpr`` (the test's false-positive rate).

    Parameters
    ----------
    W : array_like
        A matrix or conv kernel (host or device; decomposed on the host in float64).
    rng : int or numpy.random.Generator, optional
        Seed of the shuffle.
    fpr : float, default 0.01
        False-positive rate of the spike test.
    conv : {"slices", "flatten"}
        As in :func:`rmt.esd`.
    normalize : bool, default True
        Eigenvalues of X = WᵀW/N (False: of WᵀW).
    n_entries : int, default 10
        Entries listed per trap.

    Returns
    -------
    TrapResult
    """
    rng = np.random.default_rng(rng)
    W = to_host(W)
    shape = weight_shape(W.shape, conv)
    unit = float(shape.N) if normalize else 1.0
    Ws, perms = shuffled(W, rng, conv, permutations=True)
    rand = esd(Ws, normalize=normalize, conv=conv, device="cpu")
    nonzero = rand[rand > numerical_zero_threshold(rand, shape.M)]
    mpf = (fit_mp(nonzero, N=shape.N, M=shape.M, fpr=fpr, normalized=normalize)
           if nonzero.size >= 2 else None)
    if mpf is None or mpf.n_spikes == 0:
        return TrapResult((), mpf, rand)
    originals = [np.asarray(A, dtype=np.float64) for A in stored_matrices(W, conv)]
    mats = [np.asarray(A, dtype=np.float64) for A in stored_matrices(Ws, conv)]
    total = float(sum(np.sum(A * A) for A in originals))
    candidates = []  # (eigenvalue, slice, s, u, v) of every slice's top triplets
    for k, A in enumerate(mats):
        s, u, vt = _top_triplets(A, mpf.n_spikes)
        for j in range(s.size):
            candidates.append((s[j] ** 2 / unit, k, s[j], u[:, j], vt[j]))
    candidates.sort(key=lambda c: -c[0])
    found = []
    for lam, k, s, u, v in candidates[:mpf.n_spikes]:
        if lam <= mpf.threshold:
            break
        component = np.abs(np.outer(u, v)).ravel()
        top = np.argsort(component)[::-1][:n_entries]
        cols = originals[k].shape[1]
        entries = tuple((int(p // cols), int(p % cols), float(originals[k].ravel()[p]))
                        for p in perms[k][top])
        found.append(Trap(eigenvalue=float(lam), tw_z=_tw_z(lam, mpf),
                          strength=float((lam - mpf.lambda_plus) / mpf.lambda_plus),
                          slice=int(k), energy_fraction=float(s * s / total),
                          ipr_left=float(np.sum(u**4)), ipr_right=float(np.sum(v**4)),
                          entries=entries))
    return TrapResult(tuple(found), mpf, rand)


def _top_triplets(A: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k largest singular triplets, descending (dense SVD for small or nearly full k)."""
    k = min(k, min(A.shape))
    if k >= min(A.shape) - 1 or min(A.shape) <= 256:
        u, s, vt = np.linalg.svd(A, full_matrices=False)
        return s[:k], u[:, :k], vt[:k]
    u, s, vt = scipy.sparse.linalg.svds(A, k=k, random_state=0)
    order = np.argsort(s)[::-1]
    return s[order], u[:, order], vt[order]


def _tw_z(lam: float, fit: MPFit) -> float:
    # λ·N/σ² is unit-free: the same in X = WᵀW/N units and in WᵀW units
    return tw_z(lam, fit.sigma2, fit.N, fit.M)


def _shuffle_first(W: Any, opts: Any, name: str) -> Companion:
    # The shuffle randomized_esd would draw, drawn before the layer's ESD so that both
    # ESDs are solved together (rmt.spectra.esds_together); the generator goes with it.
    rng = layer_rng(opts.seed, name)
    return Companion(shuffled(W, rng, opts.conv)[0], state=rng)


def _randomize(layer: LayerResult, W: Any) -> RandomizedESD:
    opts = layer.options
    kw = {"conv": opts.conv, "normalize": opts.normalize, "fpr": opts.thresholds.fpr,
          "device": opts.device, "n_threads": opts.n_threads}
    if "randomize" in layer.companions:  # shuffled and solved with the layer's own ESD
        rng, rand = layer.companions["randomize"]
        return _compared(W, layer.evals, rand, rng=rng, **kw)
    return randomized_esd(W, layer.evals, rng=layer_rng(opts.seed, layer.name), **kw)



def _lam_max(layer: LayerResult) -> float:
    return float(layer.evals[-1])


#: Registered by rmt.analyses, after the analyses it reads.
RANDOMIZE = Analysis("randomize", _randomize, (
    Column("rand_lambda_max", "largest eigenvalue of the ESD of W with its entries shuffled "
           "(WeightWatcher's max_rand_eval)", "eigenvalue", "rmt.randomized.randomized_esd",
           attribute("lambda_max")),
    Column("ww_softrank", "rand_lambda_max / lambda_max", "", "rmt.randomized.randomized_esd",
           lambda r, layer: r.lambda_max / _lam_max(layer)),
    Column("ww_maxdist", "lambda_max - rand_lambda_max", "eigenvalue",
           "rmt.randomized.randomized_esd", lambda r, layer: _lam_max(layer) - r.lambda_max),
    Column("rand_sigma_mp", "entry std of the shuffled ESD's MP fit", "entry",
           "rmt.randomized.randomized_esd", lambda r, layer: entry_std(r.mp_fit, layer)),
    Column("rand_bulk_max", "upper edge lambda_plus of the shuffled ESD's MP fit", "eigenvalue",
           "rmt.randomized.randomized_esd",
           lambda r, layer: r.mp_fit.lambda_plus if r.mp_fit is not None else float("nan")),
    Column("rand_mp_softrank", "lambda_plus / lambda_max of the shuffled ESD's MP fit", "",
           "rmt.randomized.randomized_esd",
           lambda r, layer: r.mp_fit.mp_softrank if r.mp_fit is not None else float("nan")),
    Column("num_traps", "correlation traps: eigenvalues of the shuffled ESD above its "
           "Tracy-Widom edge at fpr", "count", "rmt.randomized.randomized_esd",
           attribute("n_traps")),
    Column("num_traps_ww", "WeightWatcher's num_traps: shuffled-ESD eigenvalues above its "
           "KDE MP fit's cut bulk_max + sqrt(Q^-1/2 bulk_max^2/3 M^-2/3) (no stated "
           "false-positive rate; five pooled shuffles below 100 eigenvalues, as it; -1 without "
           "a fit)", "count", "rmt.mp_ww.fit_mp_ww",
           attribute("n_traps_ww")),
    Column("rand_distance", "Wasserstein-1 distance between the log10 eigenvalue "
           "distributions of the ESD and the shuffled ESD", "decades",
           "rmt.randomized.randomized_esd", attribute("distance")),
    Column("rand_distance_ww", "WeightWatcher's rand_distance: Jensen-Shannon distance "
           "between the sorted eigenvalue vectors", "", "rmt.randomized.jensen_shannon_ww",
           attribute("distance_ww")),
), option="randomize", companion=_shuffle_first)

"""Slow, obviously-correct reference implementations for the tests.

Everything here upcasts to float64 and uses LAPACK through ``numpy.linalg``; none of
it shares code with :mod:`rmt`.
"""

from __future__ import annotations

import numpy as np


def matrices(W: np.ndarray, conv: str = "slices") -> list[np.ndarray]:
    """The float64 matrices a weight is read as (before orientation)."""
    W = np.asarray(W).astype(np.float64)
    if W.ndim == 2:
        return [W]
    if conv == "flatten":
        return [W.reshape(W.shape[0], -1)]
    k = int(np.prod(W.shape[2:]))
    flat = W.reshape(W.shape[0], W.shape[1], k)
    return [flat[:, :, i] for i in range(k)]


def esd_svd(W: np.ndarray, normalize: bool = True, conv: str = "slices") -> np.ndarray:
    """ESD from float64 singular values: ν²/N per oriented matrix, pooled, ascending."""
    out = []
    for A in matrices(W, conv):
        s = np.linalg.svd(A, compute_uv=False)
        n = max(A.shape)
        out.append(s**2 / n if normalize else s**2)
    return np.sort(np.concatenate(out))


def eig_tolerance(N: int, M: int, lam_max: float, eps: float = np.finfo(np.float64).eps) -> float:
    """Expected absolute eigenvalue error of a Gram + symmetric-eigensolver ESD.

    Backward stability of syrk (error ∝ √N·eps per entry, random rounding) and of the
    eigensolver (∝ M·eps·‖G‖) gives |Δλ| ≲ c·(√N + M)·eps·λmax; c = 4 covers the
    reference's own SVD error as well.
    """
    return 4.0 * (np.sqrt(N) + M) * eps * lam_max


def entropy(ev: np.ndarray, rank: int) -> float:
    """Matrix entropy −Σ p ln p / ln R straight from the definition."""
    p = ev[ev > 0] / ev[ev > 0].sum()
    return float(-(p * np.log(p)).sum() / np.log(rank))


def powerlaw_scan(x: np.ndarray, alpha_range=(1.0, None)):
    """powerlaw 2.0's xmin scan, one candidate at a time, straight from its definitions.

    Returns (alpha, xmin, D, n_tail) of the least-D valid candidate and the arrays of all
    candidates (xmins, alphas, Ds, valid).
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[x > 0]
    n = x.size
    uniq = np.unique(x)
    cdf_at = np.searchsorted(x, uniq, side="left") / n
    cands = uniq[uniq < x.max()][:-1]
    lo, hi = alpha_range
    xmins, alphas, Ds, valid = [], [], [], []
    for xm in cands:
        tail = x[x >= xm]
        a = 1.0 + tail.size / np.sum(np.log(tail / xm))
        keep = uniq >= xm
        emp = (cdf_at[keep] - cdf_at[keep][0]) / (1.0 - cdf_at[keep][0])
        theo = 1.0 - (uniq[keep] / xm) ** (1.0 - a)
        ok = ((lo is None or (a > lo and a - 0.01 >= lo))
              and (hi is None or (a < hi and a + 0.01 <= hi)))
        if 1.5 < a <= 3.0 and (lo is None or a > lo) and (hi is None or a < hi):
            ok = True
        xmins.append(xm)
        alphas.append(a)
        Ds.append(np.max(np.abs(theo - emp)))
        valid.append(ok)
    xmins, alphas, Ds, valid = map(np.asarray, (xmins, alphas, Ds, valid))
    k = int(np.argmin(np.where(valid, Ds, np.inf)))
    return (alphas[k], xmins[k], Ds[k], int((x >= xmins[k]).sum())), (xmins, alphas, Ds, valid)


def ww_scan(x: np.ndarray):
    """WeightWatcher's WWFit.fit_power_law, transcribed: (alpha, xmin, D)."""
    data = np.sort(np.asarray(x, dtype=np.float64))
    log_data = np.log(data)
    N = data.size
    alphas = np.zeros(N - 1)
    Ds = np.ones(N - 1)
    for i, xmin in enumerate(data[:-1]):
        n = float(N - i)
        alpha = 1 + n / (np.sum(log_data[i:]) - n * log_data[i])
        alphas[i] = alpha
        if alpha > 1:
            Ds[i] = np.max(np.abs(1 - (data[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    i = int(np.argmin(Ds))
    return alphas[i], data[i], Ds[i]


def heavy_tailed_esd(n: int, m: int, mu: float, seed: int) -> np.ndarray:
    """ESD of an n×m matrix with Gaussian entries and 1 + Lomax(mu) column variances."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, m)) * np.sqrt(1.0 + rng.pareto(mu, size=m))
    return np.linalg.eigvalsh(W.T @ W / n)


def mp_trimmed_trace(ev: np.ndarray, N: int, M: int, edge_factor: float,
                     max_iter: int = 100) -> tuple[float, int]:
    """The MP fit's trimmed-trace iteration, one full pass over the ESD per step.

    ``edge_factor`` is (μ_TW + q·s_TW)/N: an eigenvalue is a spike when it exceeds
    σ²·edge_factor. Start from the mean; σ² ← mean of the non-spikes; stop when the set
    stops changing. Returns (σ², number of spikes).
    """
    lam = np.sort(np.asarray(ev, dtype=np.float64))
    sigma2 = float(lam.mean())
    spikes = np.zeros(lam.size, dtype=bool)
    for _ in range(max_iter):
        new = lam > sigma2 * edge_factor
        if new.all():
            break
        sigma2 = float(lam[~new].mean())
        if np.array_equal(new, spikes):
            break
        spikes = new
    return sigma2, int(np.count_nonzero(lam > sigma2 * edge_factor))


def mp_ks_distance(bulk: np.ndarray, Q: float, sigma2: float) -> float:
    """KS distance of eigenvalues to the MP law, its CDF integrated numerically (quad)."""
    import scipy.integrate

    lo, hi = sigma2 * (1 - Q**-0.5) ** 2, sigma2 * (1 + Q**-0.5) ** 2

    def pdf(x: float) -> float:
        return Q * np.sqrt(max((hi - x) * (x - lo), 0.0)) / (2 * np.pi * sigma2 * x)

    x = np.sort(np.asarray(bulk, dtype=np.float64))
    F = np.array([0.0 if v <= lo else 1.0 if v >= hi else
                  scipy.integrate.quad(pdf, lo, v, limit=200, epsabs=1e-13)[0] for v in x])
    n = x.size
    i = np.arange(n)
    return float(max(np.max(F - i / n), np.max((i + 1) / n - F)))


def log10_sum_power(x: np.ndarray, alpha: float) -> float:
    """log10 Σ xᵢ^α in arbitrary precision (mpmath): no overflow at any α."""
    import mpmath

    with mpmath.workdps(40):
        return float(mpmath.log10(mpmath.fsum(mpmath.mpf(float(v)) ** alpha for v in x)))


def largest_gap(ev: np.ndarray, zero: float, fraction: float) -> float:
    """Widest gap in log10 λ with ≥ ``fraction`` of the ESD on each side, by trying every
    split point; eigenvalues ≤ ``zero`` stand at ``zero``."""
    lam = np.sort(np.maximum(np.asarray(ev, dtype=np.float64), zero))
    n = lam.size
    best = 0.0
    for k in range(1, n):  # k eigenvalues below the split
        if k >= fraction * n and n - k >= fraction * n and lam[k - 1] > 0:
            best = max(best, float(np.log10(lam[k]) - np.log10(lam[k - 1])))
    return best


def ww_detx(evals: np.ndarray) -> tuple[int, int, float]:
    """WeightWatcher 0.7.7's ``apply_detX`` (``rescale_eigenvalues`` + ``detX_constraint``),
    transcribed: (detX_num, detX_idx, detX_val in the input's units)."""
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    n = len(evals)
    scale2 = n / np.sum(evals)          # Wscale² = (√N / √Σλ)²
    rescaled = scale2 * evals
    num_evals, idx = n, 0
    for idx in range(n - 1, 0, -1):
        if np.prod(rescaled[idx:]) < 1.0:
            num_evals = n - idx
            break
    return num_evals, idx, float(rescaled[idx] / scale2)


def ww_fit(data: np.ndarray) -> tuple[float, float, float]:
    """WeightWatcher 0.7.7's WWFit (WW_powerlaw.py), transcribed with its small-n branch:
    (alpha, xmin, D). For n < 20 ``fit_powerlaw_smallN`` runs, then ``__init__`` takes the
    argmin of Ds regardless of the J objective it computed."""
    data = np.asarray(np.sort(data), dtype=np.float64)
    N = len(data)
    log_data = np.log(data)
    if N >= 20:
        return ww_scan(data)
    alphas = np.zeros(N - 1)
    Ds = np.ones(N - 1)
    Js = np.full(N - 1, np.inf)
    for i, xmin in enumerate(data[:-1]):
        n_int = N - i
        if n_int < 8:
            continue
        n = float(n_int)
        s = np.sum(log_data[i:]) - n * log_data[i]
        if s <= 1e-12:
            continue
        alpha_bc = 1.0 + (n - 1.0) / s
        alphas[i] = alpha_bc
        if alpha_bc <= 1.0:
            continue
        F_fit = 1.0 - (data[i:] / xmin) ** (1.0 - alpha_bc)
        Ds[i] = float(np.max(np.abs(np.arange(n_int) / n - F_fit)))
        Js[i] = Ds[i] - 0.868 / np.sqrt(n)
    if not np.isfinite(Js).any():
        n = float(N)
        s = np.sum(log_data) - n * log_data[0]
        if s > 1e-12:
            alphas[0] = 1.0 + (n - 1.0) / s
            F_fit = 1.0 - (data / data[0]) ** (1.0 - alphas[0])
            Ds[0] = float(np.max(np.abs(np.arange(N) / n - F_fit)))
    i = int(np.argmin(Ds))   # WWFit.__init__
    return alphas[i], data[i], Ds[i]


def ww_mp_fit(evals: np.ndarray, N: int, M: int) -> tuple[float, int]:
    """WeightWatcher 0.7.7's ``mp_fit`` (rescale, ``fit_density_with_range``, ``resid_mp``
    with scikit-learn's KernelDensity, the spike cut), transcribed: (sigma_mp, num_spikes)."""
    import scipy.optimize
    from sklearn.neighbors import KernelDensity

    evals = np.asarray(evals, dtype=np.float64)
    Q = N / M
    wscale = np.sqrt(evals.shape[0]) / np.sqrt(np.sum(evals))
    to_plot = wscale * wscale * evals

    def resid(p, ev, Q, bw):
        sigma = p
        kde = KernelDensity(kernel="linear", bandwidth=bw).fit(ev.reshape(-1, 1))
        xde = np.linspace(0, np.max(ev) + 0.5, 1000)
        yde = np.exp(kde.score_samples(xde[:, np.newaxis]))
        bad_ids = np.where(yde < 0.01)[0]
        good_ids = np.where(yde > 0.01)[0]
        xde, yde = xde[good_ids], yde[good_ids]
        if Q == 1:
            with np.errstate(invalid="ignore"):
                ymp = np.nan_to_num(1 / (np.pi * sigma * sigma) * np.sqrt(4 - xde**2))
            r = ymp - yde
        else:
            y = 1 / Q
            b = np.power(sigma * (1 + np.sqrt(1 / Q)), 2)
            a = np.power(sigma * (1 - np.sqrt(1 / Q)), 2)
            with np.errstate(invalid="ignore", divide="ignore"):
                ymp = np.nan_to_num((1 / (2 * np.pi * sigma * sigma * xde * y))
                                    * np.sqrt((b - xde) * (xde - a)))
            mode = xde[np.where(yde == max(yde))][0]
            if (b < mode) | (b > max(xde)) | (a > mode):
                r = np.zeros(len(yde)) + 1000
            else:
                r = ymp - yde
        r = np.concatenate((r, np.zeros(len(bad_ids))))
        return np.sum(r**2)

    s0 = np.sqrt(np.max(to_plot) / np.square(1 + 1.0 / np.sqrt(Q)))
    rng = (slice(0.05 * s0, 2.0 * s0, 0.01 * s0),)
    to_fit = np.sqrt(to_plot) if Q == 1 else to_plot
    out = scipy.optimize.brute(resid, rng, args=(to_fit, Q, 0.1), full_output=True)
    s1 = float(np.ravel(out[0])[0])
    bulk_max = (s1 * (1 + 1 / np.sqrt(Q))) ** 2
    tw = 1 / np.sqrt(Q) * np.power(bulk_max, 2 / 3) * np.power(M, -2 / 3)
    return s1, len(to_plot[to_plot > bulk_max + np.sqrt(tw)])


def ww_clip_xmax(evals: np.ndarray, max_fingers: int = 10, finger_thresh: float = 1.0,
                 min_alpha: float = 2.0) -> tuple[float, int, float]:
    """WeightWatcher 0.7.7's ``fit_clipped_powerlaw`` (xmax=None, its own power-law fit
    ``ww_fit``), transcribed: (alpha, num_fingers, raw_alpha)."""
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    first = ww_fit(evals)[0]
    best, num_fingers = first, 0
    for idx in range(2, max_fingers):
        alpha = ww_fit(evals[:-idx])[0]
        if alpha + finger_thresh < first:
            best, num_fingers = alpha, idx - 1
            break
        if alpha <= min_alpha:
            break
    return best, num_fingers, first


def ww_vector_columns(W: np.ndarray, xmin: float, normalize: bool = True) -> dict[str, float]:
    """WeightWatcher 0.7.7's ``apply_analyze_eigenvectors`` (np.linalg.eig of the small
    Gram matrix, one numpy.histogram per vector), transcribed: its 12 columns. ``xmin`` is
    in the units of WᵀW/N (``normalize``) or WᵀW."""
    def discrete_entropy(vec, num_bins=100):
        vec = np.absolute(vec)
        vec = vec - np.mean(vec)
        p = np.histogram(vec, density=True, bins=num_bins)[0] + 1e-10
        p = p / np.sqrt(2 * np.pi)
        p = p / np.sum(p)
        return -np.sum(p * np.log(p))

    all_evals, ent, loc, part = [], [], [], []
    for A in matrices(W):
        X = A @ A.T if A.shape[0] <= A.shape[1] else A.T @ A
        evals, V = np.linalg.eig(X)
        evals, V = evals.real, V.real
        all_evals.extend(evals / (max(A.shape) if normalize else 1))
        for col in range(min(A.shape)):
            v = V[:, col]
            ent.append(discrete_entropy(v))
            loc.append(np.linalg.norm(v, ord=1) / np.linalg.norm(v, ord=np.inf))
            part.append(np.linalg.norm(v, ord=2) / np.linalg.norm(v, ord=4))
    sort_ids = np.argsort(all_evals)
    sorted_evals = np.array(all_evals)[sort_ids]
    bulk_ids = np.where(sorted_evals < xmin)[0]
    tail_ids = np.where(sorted_evals >= xmin)[0]
    out = {}
    for name, arr in zip(("vec_entropy", "loc_ratio", "part_ratio"), (ent, loc, part),
                         strict=True):
        data = np.array(arr)[sort_ids]
        out[f"bulk_mean_{name}"] = float(np.mean(data[bulk_ids]))
        out[f"bulk_var_{name}"] = float(np.var(data[bulk_ids]))
        out[f"tail_mean_{name}"] = float(np.mean(data[tail_ids]))
        out[f"tail_var_{name}"] = float(np.var(data[tail_ids]))
    return out


def farms_alpha(W: np.ndarray, num_row_samples: int = 100, Q_ratio: float = 2.0,
                sampling_ops_per_dim: int | None = 10, step_size: int = 10) -> float:
    """FARMS (Hu et al. 2025, its LLM code's ``sampled_eigs`` for a Linear weight and
    ``analysis_esd`` with ``fix_fingers='xmin_mid'``), transcribed with NumPy's SVD:
    windows of the stored matrix, eigenvalues σ², Hill estimate at the median."""
    rows, cols = W.shape
    W = np.asarray(W, dtype=np.float64)
    if sampling_ops_per_dim is None:
        nc = int(num_row_samples * Q_ratio)
        starts_r = [i * step_size for i in range(max(1, (rows - num_row_samples) // step_size + 1))]
        starts_c = [j * step_size for j in range(max(1, (cols - nc) // step_size + 1))]
        nr = num_row_samples
    else:
        nr = min(num_row_samples, min(rows, cols))
        nc = int(nr * Q_ratio)
        ops = sampling_ops_per_dim
        row_step = max(1, (rows - nr) // (ops - 1))
        col_step = max(1, (cols - nc) // (ops - 1))
        n_r = min(ops, max(1, (rows - nr) // row_step + 1))
        n_c = min(ops, max(1, (cols - nc) // col_step + 1))
        starts_r = [min(i * row_step, rows - nr) for i in range(n_r)]
        starts_c = [min(j * col_step, cols - nc) for j in range(n_c)]
    eigs = np.sort(np.concatenate([np.linalg.svd(W[i:i + nr, j:j + nc], compute_uv=False) ** 2
                                   for i in starts_r for j in starts_c]))
    i = int(len(eigs) / 2)
    n = float(len(eigs) - i)
    return float(1 + n / (np.sum(np.log(eigs[i:])) - n * np.log(eigs[i])))


def intruders_official(W_base: np.ndarray, W_tuned: np.ndarray, threshold: float,
                       k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Shuttleworth et al.'s count (their find_number_of_intruder_dimensions, per matrix),
    transcribed to NumPy: thin SVDs, |U_tunedᵀ U_base|, max over the base's vectors.
    Returns (indices among the top k below the threshold, the max cosines of the top k)."""
    U_base = np.linalg.svd(W_base.astype(np.float64), full_matrices=False)[0]
    U_tuned = np.linalg.svd(W_tuned.astype(np.float64), full_matrices=False)[0]
    best = np.abs(U_tuned.T @ U_base).max(axis=1)[:k]
    return np.flatnonzero(best < threshold), best


def ww_cka_distance(W1: np.ndarray, W2: np.ndarray) -> float:
    """WeightWatcher 0.7.7 matrix_distance(method='cka'), transcribed."""
    dist = np.linalg.norm(np.dot(W1.T, W2))
    norm1 = np.linalg.norm(np.dot(W1.T, W1))
    norm2 = np.linalg.norm(np.dot(W2, W2.T))
    norm = np.sqrt(norm1 * norm2)
    if norm < 0.000001:
        norm = norm + 0.000001
    return float(dist / norm)

"""Hessian spectra: Lanczos, SLQ, extreme eigenvalues, index, trace, the NumPy MLP, torch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import scipy.sparse.linalg as spla
from hypothesis import given
from hypothesis import strategies as st

from rmt import mp
from rmt.hessian import (
    MLP,
    CountingOperator,
    TanhMLP,
    extreme_eigs,
    index,
    lanczos,
    slq,
    to_dense,
    trace,
)


def _spectral_operator(eigenvalues: np.ndarray, seed: int) -> spla.LinearOperator:
    """S·IDCT·diag(d)·DCT·S: an orthogonal similarity of diag(d), O(n log n) per product."""
    s = np.random.default_rng(seed).choice([-1.0, 1.0], size=eigenvalues.size)

    def mv(v):
        return s * scipy.fft.idct(eigenvalues * scipy.fft.dct(s * np.ravel(v), norm="ortho"),
                                  norm="ortho")

    n = eigenvalues.size
    return spla.LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=np.float64)


def _hessian_like(n: int = 10_000) -> np.ndarray:
    """A bulk near 0 (shifted MP quantiles, 2.1% negative) and outliers at 6, 8, 10."""
    lo, hi = mp.edges(2.0)
    grid = np.linspace(lo, hi, 20001)
    bulk = np.interp((np.arange(n - 3) + 0.5) / (n - 3), mp.cdf(grid, 2.0), grid) - 0.12
    return np.sort(np.concatenate([bulk, [6.0, 8.0, 10.0]]))


def _wishart(n=200, seed=0):
    G = np.random.default_rng(seed).standard_normal((2 * n, n))
    return G.T @ G / (2 * n)


# --- Lanczos -----------------------------------------------------------------------------

@pytest.mark.parametrize("orthogonalize", ["full", "partial"])
def test_lanczos_extremes_and_orthogonality(orthogonalize):
    A = _wishart()
    exact = np.linalg.eigvalsh(A)
    res = lanczos(A, 60, orthogonalize=orthogonalize, rng=1, return_basis=True)
    assert res.alpha.shape == (60,) and res.beta.shape == (59,) and res.n_matvecs == 60
    theta, tau = res.ritz()
    np.testing.assert_allclose(theta[-1], exact[-1], rtol=1e-10)
    np.testing.assert_allclose(theta[0], exact[0], rtol=1e-4)
    assert tau.sum() == pytest.approx(1.0)
    Q = res.basis
    loss = np.abs(Q @ Q.T - np.eye(60)).max()
    assert loss < (1e-13 if orthogonalize == "full" else 1e-7)
    T = np.diag(res.alpha) + np.diag(res.beta, 1) + np.diag(res.beta, -1)
    # QAQᵀ = T up to the loss of orthogonality (√eps-level for partial) times ‖A‖
    np.testing.assert_allclose(Q @ A @ Q.T, T, atol=1e-12 if orthogonalize == "full" else 1e-8)


def test_ghost_eigenvalues_without_reorthogonalisation():
    d = _hessian_like(2000)
    op = _spectral_operator(d, seed=3)
    counts = {}
    for orth in ("none", "partial", "full"):
        theta, _ = lanczos(op, 100, orthogonalize=orth, rng=4).ritz()
        counts[orth] = int(np.sum(np.abs(theta - 10.0) < 1e-6))
    assert counts["none"] > 1  # ghost copies of the top eigenvalue
    assert counts["full"] == counts["partial"] == 1


def test_breakdown_restarts_on_an_invariant_subspace():
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((50, 3)))
    A = (U * np.array([3.0, 2.0, 1.0])) @ U.T  # rank 3: Krylov space closes after 4 steps
    theta, _ = lanczos(A, 10, rng=6).ritz()
    assert np.sum(np.abs(theta - 3.0) < 1e-10) == 1 and np.sum(np.abs(theta) < 1e-10) >= 6


@pytest.mark.parametrize("scale", [1e-8, 1e-30, 1e12])
def test_breakdown_is_relative_to_the_operator_norm(scale):
    # regression: the test was absolute, so an operator of norm 1e-8 "broke down" at every
    # step, gave a wrong top eigenvalue and an index of 0
    rng = np.random.default_rng(7)
    U, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    w = np.concatenate([-np.linspace(0.1, 1.0, 60), np.linspace(0.05, 3.0, 240)])
    A = (U * w) @ U.T
    ref = lanczos(A, 40, rng=3)
    small = lanczos(scale * A, 40, rng=3)
    np.testing.assert_allclose(small.alpha, scale * ref.alpha, rtol=1e-9,
                               atol=1e-9 * scale)
    np.testing.assert_allclose(small.beta, scale * ref.beta, rtol=1e-9, atol=1e-9 * scale)
    top = extreme_eigs(scale * A, k=1, which="LA", rng=0)[0]
    assert top == pytest.approx(3.0 * scale, rel=1e-8)
    assert index(scale * A) == pytest.approx(60 / 300)


@pytest.mark.parametrize("n", [5, 200])  # the dense branch and ARPACK's
def test_extreme_eigs_return_their_eigenvectors(n):
    rng = np.random.default_rng(12)
    A = rng.standard_normal((n, n))
    A = (A + A.T) / 2
    exact, vectors = np.linalg.eigh(A)
    for which, part in (("LA", slice(n - 2, n)), ("SA", slice(0, 2))):
        ev, V = extreme_eigs(A, k=2, which=which, rng=0, return_vectors=True)
        np.testing.assert_allclose(ev, exact[part], rtol=1e-8)
        assert V.shape == (n, 2)
        np.testing.assert_allclose(np.abs(np.sum(V * vectors[:, part], axis=0)), 1.0,
                                   atol=1e-6)  # the same unit vectors up to sign
        residual = np.linalg.norm(A @ V - V * ev, axis=0)
        assert residual.max() <= 1e-6 * np.abs(exact).max()


def test_lanczos_bad_arguments():
    with pytest.raises(ValueError, match="orthogonalize"):
        lanczos(np.eye(3), 2, orthogonalize="some")
    with pytest.raises(ValueError, match="lanczos_degree"):
        lanczos(np.eye(3), 5)
    with pytest.raises(ValueError, match="v0"):
        lanczos(np.eye(3), 2, v0=np.zeros(3))


# --- SLQ ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hessian_like():
    d = _hessian_like()
    return d, _spectral_operator(d, seed=12345)


def test_slq_accuracy_goals(hessian_like):
    # Goal (docs/science.md §7): W1 <= 5e-3·width at 320 matvecs and |Δindex| <= 0.005.
    # Measured over 6 seeds: W1/width 1.2e-3, |Δindex| <= 0.0020 (the step CDF, kept inside
    # the Gauss–Radau interval).
    d, op = hessian_like
    width, true_index = d[-1] - d[0], float(np.mean(d < 0))
    for seed in range(3):
        sd = slq(op, lanczos_degree=80, n_probes=4, rng=seed)
        assert sd.n_matvecs == 320
        assert sd.weights.sum() == pytest.approx(1.0)
        assert sd.wasserstein(d) <= 5e-3 * width
        assert abs(sd.negative_fraction() - true_index) <= 0.005
    more = slq(op, lanczos_degree=160, n_probes=16, rng=9)
    assert more.wasserstein(d) <= 2e-3 * width  # the note's second goal


def _probe_mass_below(ev: np.ndarray, U: np.ndarray, v: np.ndarray, xi: float) -> float:
    """The exact μ_v((−∞, ξ)) of a unit probe v: Σ over eigenvalues below ξ of (u_iᵀv)²."""
    c = (U.T @ (v / np.linalg.norm(v))) ** 2
    return float(c[ev < xi].sum())


@pytest.mark.parametrize("kind", ["smooth", "zero_cluster", "tight_cluster", "few_distinct"])
def test_radau_bounds_bracket_every_probes_exact_mass(kind):
    # the Chebyshev–Markov–Stieltjes bounds hold for the probe's own measure at every ξ,
    # against an exact eigendecomposition; ξ on a cluster, inside gaps and at exact zeros
    rng = np.random.default_rng(11)
    n = 400
    if kind == "smooth":
        ev = np.sort(rng.standard_normal(n))
    elif kind == "zero_cluster":  # 40% exact zeros (flat directions), a few negatives
        ev = np.concatenate([np.zeros(160), -rng.uniform(1e-3, 0.1, 20), rng.exponential(1, 220)])
    elif kind == "tight_cluster":  # a trained network's Hessian: ±1e-7 around 0
        ev = np.concatenate([rng.normal(0, 1e-7, 200), -rng.uniform(0, 1e-3, 20),
                             rng.exponential(1, 180)])
    else:  # the Krylov space is invariant after 6 steps: bounds collapse onto the truth
        ev = np.repeat([-2.0, -0.5, 0.0, 1.0, 3.0, 7.0], [50, 80, 70, 100, 60, 40]) + 0.0
    ev = np.sort(ev)
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (U * ev) @ U.T
    from rmt.hessian.quadrature import radau_bounds

    for k in (5, 20, 60):
        v = rng.choice([-1.0, 1.0], size=n)
        res = lanczos(A, k, v0=v, rng=0)
        for xi in (-1.0, -1e-4, -1e-12, 0.0, 1e-9, 0.3, 2.0):
            lower, upper = radau_bounds(res.alpha, res.beta, res.beta_last, xi)
            exact = _probe_mass_below(ev, U, v, xi)
            assert lower - 1e-9 <= exact <= upper + 1e-9, (k, xi, lower, exact, upper)
            if kind == "few_distinct" and k >= 6 and xi not in ev:
                assert upper - lower <= 1e-9 and lower == pytest.approx(exact, abs=1e-9)


@pytest.fixture(scope="module")
def digits_hessians():
    """Exact Hessians of two MLPs trained on scikit-learn's digits (tanh P = 1184, relu
    P = 1776; 200 L-BFGS steps, 98–99% train accuracy): about half the eigenvalues
    within 1e-3·λ_max of 0 and 1.5–4% negative ones, all within 3e-3·λ_max of 0."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    Y = np.eye(10)[y]
    out = {}
    for activation, hidden in (("tanh", 16), ("relu", 24)):
        net = MLP(64, hidden, 10, activation)
        theta = net.fit(X, Y, maxiter=200, rng=0)
        start = net.init(0)
        assert net.loss(theta, X, Y) < 0.1 * net.loss(start, X, Y)  # it trained
        H = net.hessian(theta, X, Y)
        out[activation] = (H, *np.linalg.eigh(H))
    return out


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_slq_index_interval_on_trained_networks(digits_hessians, activation):
    # issue 19, bug 1: on a trained network's Hessian the index interval holds the
    # probes' exact mean and the exact index, the estimate sits inside it, and the
    # interval narrows as the degree grows (the old interpolated CDF was off by 0.06–0.25)
    from rmt.hessian.extreme import negative_fraction

    H, ev, U = digits_hessians[activation]
    exact = negative_fraction(ev)
    assert exact > 0.01 and np.mean(np.abs(ev) < 1e-3 * ev[-1]) > 0.4  # the hard case
    widths = []
    for k, n_probes in ((80, 4), (320, 1)):
        sd = slq(H, lanczos_degree=k, n_probes=n_probes, rng=0)
        lower, upper = sd.index_bounds()
        probes = np.random.default_rng(0)
        xi = sd._threshold(None)  # the exact count's tolerance, -n·eps·λmax
        probe_means = np.mean([_probe_mass_below(ev, U, probes.choice([-1.0, 1.0], size=ev.size),
                                                 xi) for _ in range(n_probes)])
        assert lower - 1e-9 <= probe_means <= upper + 1e-9
        # the Hutchinson noise of the probes' mean: sd <= sqrt(2·index/(n·probes)) ≈ 0.005
        noise = 4 * np.sqrt(2 * exact / (ev.size * n_probes))
        assert lower - noise <= exact <= upper + noise
        assert lower <= sd.negative_fraction() <= upper
        widths.append(upper - lower)
    assert widths[1] < 0.75 * widths[0]


def test_slq_without_reorthogonalisation_keeps_no_basis_and_the_density(hessian_like,
                                                                         monkeypatch):
    # issue 19: "none" keeps a few vectors, not the k×n basis, with the same density; "auto"
    # switches to it when the basis would pass BASIS_BYTES, and says so in the result
    import importlib
    import tracemalloc

    slq_module = importlib.import_module("rmt.hessian.slq")  # the name is also the function's

    d, op = hessian_like
    width, n, k = d[-1] - d[0], d.size, 80
    peaks, w1 = {}, {}
    for scheme in ("full", "none"):
        tracemalloc.start()
        sd = slq(op, lanczos_degree=k, n_probes=2, orthogonalize=scheme, rng=3)
        peaks[scheme] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        w1[scheme] = sd.wasserstein(d) / width
        assert sd.orthogonalize == scheme
    assert peaks["full"] >= k * n * 8 and peaks["none"] < 12 * n * 8, peaks
    assert w1["none"] <= 5e-3 and w1["none"] <= 1.2 * w1["full"], w1
    assert slq(op, lanczos_degree=k, n_probes=1, rng=0).orthogonalize == "full"
    monkeypatch.setattr(slq_module, "BASIS_BYTES", k * n * 8 - 1)
    assert slq(op, lanczos_degree=k, n_probes=1, rng=0).orthogonalize == "none"


def _smoothed_w1(sd, exact, bandwidth):
    """W1 between the smoothed density (its CDF on a fine grid) and exact eigenvalues."""
    lo, hi = min(sd.nodes[0], exact[0]), max(sd.nodes[-1], exact[-1])
    x = np.linspace(lo - 0.2 * (hi - lo), hi + 0.2 * (hi - lo), 40001)
    step = np.searchsorted(exact, x, side="right") / exact.size
    return np.trapezoid(np.abs(sd.smoothed_cdf(x, bandwidth) - step), x)


def test_default_smoothing_keeps_the_quadratures_accuracy_on_a_trained_network(
        digits_hessians):
    # issue 19: the default kernel follows the nodes' spacing, so on a Hessian whose mass
    # crowds at 0 smoothing adds nothing to W1; width/k (the old default) quadrupled it
    H, ev, _ = digits_hessians["tanh"]
    sd = slq(H, lanczos_degree=80, n_probes=4, rng=0)
    raw = sd.wasserstein(ev)
    adaptive = _smoothed_w1(sd, ev, None)
    assert adaptive <= 1.15 * raw, (adaptive, raw)
    assert adaptive < 0.75 * _smoothed_w1(sd, ev, "papyan")
    assert _smoothed_w1(sd, ev, sd.width / 80) > 2.5 * raw  # what the default fixed
    xs = np.linspace(ev[0], ev[-1], 40)  # the pdf is the smoothed CDF's derivative
    fd = (sd.smoothed_cdf(xs + 1e-7) - sd.smoothed_cdf(xs - 1e-7)) / 2e-7
    np.testing.assert_allclose(fd, sd.pdf(xs), rtol=0, atol=1e-5 * sd.pdf(xs).max())


def test_density_and_log_density_against_the_marchenko_pastur_law():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 1500)) / np.sqrt(3000)
    sd = slq(X.T @ X, lanczos_degree=80, n_probes=4, rng=1)
    lo, hi = mp.edges(2.0)
    x = np.linspace(lo + 0.02, hi - 0.02, 2001)
    l1 = np.trapezoid(np.abs(sd.pdf(x) - mp.pdf(x, 2.0)), x)
    assert l1 < 0.1, l1  # measured 0.070; Papyan's narrower width gives 0.22 here
    # the log-spectrum: the density of u = ln(λ + ε) is p_MP(e^u − ε)·e^u
    eps = 1e-5
    u = np.linspace(np.log(lo) + 0.05, np.log(hi) - 0.02, 2001)
    reference = mp.pdf(np.exp(u) - eps, 2.0) * np.exp(u)
    for bandwidth in (None, "papyan"):
        density = sd.log_pdf(u, bandwidth, epsilon=eps)
        assert np.trapezoid(np.abs(density - reference), u) < 0.12, bandwidth
    wide = np.linspace(np.log(eps) - 5, np.log(hi) + 5, 200001)
    assert np.trapezoid(sd.log_pdf(wide), wide) == pytest.approx(1.0, abs=1e-6)
    assert sd.smoothed_cdf(-1e3) == 0.0 and sd.smoothed_cdf(1e3) == pytest.approx(1.0)
    for bad in ({"bandwidth": -1.0}, {"bandwidth": "wide"}, {"kappa": 1.0}):
        with pytest.raises(ValueError):
            sd.pdf(x, **bad)
    with pytest.raises(ValueError, match="epsilon"):
        sd.log_pdf(u, epsilon=0.0)


# --- the top eigenvalues' power law (Tang et al.) --------------------------------------

def test_top_powerlaw_recovers_the_rank_exponent():
    from rmt.hessian.top_powerlaw import top_powerlaw

    for s in (0.5, 0.9, 1.3):
        exact = top_powerlaw(4.0 * np.arange(1, 1001, dtype=float) ** -s)
        assert exact.s_lsq == pytest.approx(s, abs=1e-12) and exact.r2_lsq > 1 - 1e-12
        assert exact.lambda1_lsq == pytest.approx(4.0, rel=1e-12)
        assert abs(exact.s - s) < min(0.03 * s, 2 * exact.s_sigma) and exact.D < 0.01
    # i.i.d. Pareto samples: α = 1 + 1/s, the MLE unbiased with a calibrated error bar
    for alpha in (2.0, 3.0):
        fits = [top_powerlaw((1 - np.random.default_rng(seed).random(300)) ** (-1 / (alpha - 1)))
                for seed in range(200)]
        values = np.array([f.s for f in fits])
        assert abs(values.mean() - 1 / (alpha - 1)) < 3 * values.std() / np.sqrt(200)
        assert np.mean([f.s_sigma for f in fits]) == pytest.approx(values.std(), rel=0.15)
    # no power law (the top of a Marchenko–Pastur spectrum): the KS distance says so
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 2000)) / np.sqrt(4000)
    assert top_powerlaw(np.linalg.eigvalsh(X.T @ X), 100).D > 5 * exact.D


def test_top_powerlaw_of_an_operator_equals_the_exact_eigenvalues_fit(digits_hessians):
    from rmt.hessian.top_powerlaw import top_powerlaw

    H, ev, _ = digits_hessians["relu"]
    from_operator = top_powerlaw(H, k=60, rng=0)
    exact = top_powerlaw(ev, 60)
    np.testing.assert_allclose(from_operator.eigenvalues, ev[::-1][:60], rtol=1e-6)
    assert from_operator.s == pytest.approx(exact.s, rel=1e-6)
    assert from_operator.s_lsq == pytest.approx(exact.s_lsq, rel=1e-6)
    with pytest.raises(ValueError, match=r"k \(how many"):
        top_powerlaw(H)
    with pytest.raises(ValueError, match="positive"):
        top_powerlaw(np.array([1.0, 0.5, -1.0, -2.0]))
    with pytest.raises(ValueError, match="xmin"):
        top_powerlaw(ev, 10, xmin="median")


def test_slq_moments_outliers_and_density(hessian_like):
    d, op = hessian_like
    sd = slq(op, lanczos_degree=40, n_probes=8, rng=1)
    # Gauss quadrature with k nodes is exact for polynomials of degree < 2k, so moments are
    # unbiased estimates of tr(A^p)/n with Rademacher-probe noise only
    for p in (1, 2, 3):
        est = float(np.sum(sd.weights * sd.nodes**p))
        assert est == pytest.approx(np.mean(d**p), rel=0.03)
    for theta, _ in sd.probes:  # outliers converge fast: every probe finds them
        np.testing.assert_allclose(theta[-3:], [6.0, 8.0, 10.0], rtol=1e-10)
    xs = np.linspace(d[0] - 1, d[-1] + 1, 20001)
    assert np.trapezoid(sd.pdf(xs), xs) == pytest.approx(1.0, abs=1e-3)
    assert sd.wasserstein(sd) == 0.0
    other = slq(op, lanczos_degree=40, n_probes=8, rng=2)
    assert sd.wasserstein(other) == pytest.approx(other.wasserstein(sd))


def test_slq_plot(hessian_like):
    import matplotlib

    matplotlib.use("Agg")
    ax = slq(hessian_like[1], lanczos_degree=20, n_probes=2, rng=0).plot()
    assert ax.get_yscale() == "log"


# --- extreme eigenvalues, index, trace ---------------------------------------------------

@pytest.mark.parametrize("which", ["LA", "SA"])
def test_extreme_eigs_match_dense(which):
    A = _wishart(300, seed=2) - 0.5 * np.eye(300)
    exact = np.linalg.eigvalsh(A)
    got = extreme_eigs(A, k=3, which=which, tol=1e-10, rng=0)
    ref = exact[-3:] if which == "LA" else exact[:3]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8 * np.abs(exact).max())
    np.testing.assert_allclose(extreme_eigs(A[:5, :5], k=2, which=which),
                               np.linalg.eigvalsh(A[:5, :5])[-2:] if which == "LA"
                               else np.linalg.eigvalsh(A[:5, :5])[:2], atol=1e-12)


def test_index_exact_and_slq(hessian_like):
    A = _wishart(200, seed=3) - 0.6 * np.eye(200)
    assert index(A) == np.mean(np.linalg.eigvalsh(A) < 0)
    d, op = hessian_like
    assert abs(index(op, method="slq", lanczos_degree=80, n_probes=4, rng=0)
               - np.mean(d < 0)) <= 0.005
    # exact zeros (flat directions) are not negative
    Z = np.zeros((10, 10))
    Z[0, 0] = 1.0
    assert index(Z) == 0.0


@pytest.mark.parametrize("method", ["xtrace", "hutch++"])
def test_stochastic_trace(method):
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    A = (U * (1.0 / np.arange(1, 401) ** 1.5)) @ U.T  # decaying spectrum
    exact = np.trace(A)
    errs = [abs(trace(A, 60, method=method, rng=s) - exact) / exact for s in range(5)]
    assert max(errs) < 0.02
    assert trace(np.diag(np.arange(5.0)), 10, method=method) == pytest.approx(10.0)
    low_rank = U[:, :5] @ np.diag([5.0, 4.0, 3.0, 2.0, 1.0]) @ U[:, :5].T
    if method == "xtrace":  # rank below m = b/2: each leave-one-out sketch holds it all
        assert trace(low_rank, 12, rng=0) == pytest.approx(15.0, rel=1e-10)


def _xtrace_by_definition(A, omega):
    """XTrace written out: for each probe, the exact trace on the other probes' sketch
    plus its Hutchinson term off that sketch, rescaled to the complement's dimension."""
    n, m = omega.shape
    Y = A @ omega
    estimates = []
    for i in range(m):
        Q, _ = np.linalg.qr(np.delete(Y, i, axis=1))
        w = omega[:, i] - Q @ (Q.T @ omega[:, i])
        estimates.append(np.trace(Q.T @ A @ Q) + (n - m + 1) / (w @ w) * (w @ A @ w))
    return np.mean(estimates)


def _xdiag_by_definition(A, omega):
    m = omega.shape[1]
    Y = A @ omega
    estimates = []
    for i in range(m):
        Q, _ = np.linalg.qr(np.delete(Y, i, axis=1))
        P = Q @ Q.T
        estimates.append(np.diag(P @ A) + omega[:, i] * ((A - P @ A) @ omega[:, i]))
    return np.mean(estimates, axis=0)


def test_xtrace_and_xdiag_are_their_leave_one_out_definitions():
    from rmt.hessian.diagonal import diagonal

    A = _wishart(n=120, seed=3)
    omega = np.random.default_rng(9).standard_normal((120, 8))  # trace's first draw
    omega *= np.sqrt(120) / np.linalg.norm(omega, axis=0)
    assert trace(A, 16, rng=9) == pytest.approx(_xtrace_by_definition(A, omega), rel=1e-12)
    signs = np.random.default_rng(9).choice([-1.0, 1.0], size=(120, 8))
    np.testing.assert_allclose(diagonal(A, 16, rng=9), _xdiag_by_definition(A, signs),
                               atol=1e-12 * np.abs(A).max())
    U = np.linalg.qr(np.random.default_rng(1).standard_normal((120, 4)))[0]
    low_rank = (U * [4.0, 3.0, 2.0, 1.0]) @ U.T
    np.testing.assert_allclose(diagonal(low_rank, 10, rng=0), np.diag(low_rank), atol=1e-12)


def test_estimators_on_trained_networks(digits_hessians):
    # at 300 products on the trained digits MLPs: XTrace no worse than Hutch++ (measured
    # 1.3e-3 against 1.5-1.7e-3 rms over 20 seeds), XDiag 4-7 times better than Hutchinson
    from rmt.hessian.diagonal import diagonal

    for H, ev, _ in digits_hessians.values():
        exact, d = ev.sum(), np.diag(H)

        def rms(method, H=H, exact=exact):
            return np.sqrt(np.mean([(trace(H, 300, method=method, rng=s) / exact - 1) ** 2
                                    for s in range(10)]))

        assert rms("xtrace") <= rms("hutch++") and rms("xtrace") < 3e-3
        err = {m: np.mean([np.linalg.norm(diagonal(H, 300, method=m, rng=s) - d)
                           for s in range(3)]) / np.linalg.norm(d)
               for m in ("xdiag", "hutchinson")}
        assert err["xdiag"] < 0.03 and err["xdiag"] < err["hutchinson"] / 3, err
        np.testing.assert_allclose(diagonal(H, method="exact"), d, atol=1e-12)


@pytest.mark.parametrize(("method", "budget"), [("hutch++", b) for b in (3, 4, 5, 99, 100, 101)]
                         + [("xtrace", b) for b in (2, 4, 100)])
def test_trace_spends_exactly_the_budget(method, budget):
    # regression: the budget was rounded to a multiple of 3 (1 or 2 -> 3, 100 -> 99)
    A = np.diag(np.linspace(1.0, 2.0, 400))
    counted = CountingOperator(A)
    estimate = trace(counted, budget, method=method, rng=1)
    assert counted.n_matvecs == budget and np.isfinite(estimate)


def test_budgets_an_estimator_cannot_spend_are_errors():
    from rmt.hessian.diagonal import diagonal

    A = np.diag(np.linspace(1.0, 2.0, 400))
    for budget in (0, 1, 2):
        with pytest.raises(ValueError, match="at least 3"):
            trace(A, budget, method="hutch++")
    for budget in (0, 1, 99):
        with pytest.raises(ValueError, match="in pairs"):
            trace(A, budget)
        with pytest.raises(ValueError, match="in pairs"):
            diagonal(A, budget)
    counted = CountingOperator(A)
    assert diagonal(counted, 7, method="hutchinson", rng=0).shape == (400,)
    assert counted.n_matvecs == 7


# --- NumPy MLP ---------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_mlp_grad_and_hvp_against_finite_differences(activation):
    rng = np.random.default_rng(7)
    net = MLP(4, 6, 3, activation)
    theta, X, Y = net.init(rng), rng.standard_normal((25, 4)), rng.standard_normal((25, 3))
    h = 1e-6
    fd = np.array([(net.loss(theta + h * e, X, Y) - net.loss(theta - h * e, X, Y)) / (2 * h)
                   for e in np.eye(net.n_params)])
    np.testing.assert_allclose(net.grad(theta, X, Y), fd, rtol=0, atol=1e-8)
    for _ in range(3):
        v = rng.standard_normal(net.n_params)
        fd_hv = (net.grad(theta + h * v, X, Y) - net.grad(theta - h * v, X, Y)) / (2 * h)
        np.testing.assert_allclose(net.hvp(theta, X, Y, v), fd_hv, rtol=0,
                                   atol=1e-7 * np.abs(fd_hv).max())


def test_mlp_hessian_parts():
    rng = np.random.default_rng(8)
    net = TanhMLP(5, 7, 3)
    theta, X, Y = net.init(rng), rng.standard_normal((30, 5)), rng.standard_normal((30, 3))
    cols = np.column_stack([net.hvp(theta, X, Y, e) for e in np.eye(net.n_params)])
    assert np.abs(cols - cols.T).max() <= 1e-12 * np.abs(cols).max()  # HVPs are symmetric
    H, H0 = net.hessian(theta, X, Y), net.gauss_newton(theta, X)
    np.testing.assert_allclose(H, H0 + net.residual_hessian(theta, X, Y), atol=1e-14)
    assert np.linalg.eigvalsh(H0).min() >= -1e-12  # Gauss–Newton is PSD
    v = rng.standard_normal(net.n_params)
    np.testing.assert_allclose(net.gauss_newton_vp(theta, X, v), H0 @ v, atol=1e-13)
    np.testing.assert_allclose(to_dense(net.operator(theta, X, Y)), H, atol=1e-12)
    # at zero residual the Hessian is its Gauss–Newton part
    Yfit = net.predict(theta, X)
    np.testing.assert_allclose(net.hessian(theta, X, Yfit), H0, atol=1e-14)


def test_rescale_refuses_tanh():
    net = TanhMLP(3, 4, 2)
    with pytest.raises(ValueError, match="positively homogeneous"):
        net.rescale(net.init(0), 2.0)


@given(log_a=st.floats(min_value=-2.0, max_value=2.0), seed=st.integers(0, 2**31 - 1))
def test_dinh_rescaling_property(log_a, seed):
    rng = np.random.default_rng(seed)
    net = MLP(5, 7, 3, "relu")
    theta, X, Y = net.init(rng), rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    a = 10.0**log_a
    theta_a = net.rescale(theta, a)
    np.testing.assert_allclose(net.predict(theta_a, X), net.predict(theta, X), rtol=1e-12,
                               atol=1e-12)
    H, Ha = net.hessian(theta, X, Y), net.hessian(theta_a, X, Y)
    k = net.n_hidden * net.n_in
    D_inv = np.concatenate([np.full(k, 1 / a), np.full(net.n_params - k, a)])
    np.testing.assert_allclose(Ha, D_inv[:, None] * H * D_inv[None, :],
                               atol=1e-10 * np.abs(Ha).max())
    # Sylvester's law of inertia: the congruence keeps the index (θ is not a minimum)
    assert index(Ha) == index(H)


def test_dinh_sharpness_is_not_invariant():
    rng = np.random.default_rng(9)
    net = MLP(5, 7, 3, "relu")
    theta, X, Y = net.init(rng), rng.standard_normal((40, 5)), rng.standard_normal((40, 3))
    lam = np.linalg.eigvalsh(net.hessian(theta, X, Y))[-1]
    lam_a = np.linalg.eigvalsh(net.hessian(net.rescale(theta, 0.05), X, Y))[-1]
    assert lam_a > 50 * lam  # λmax grows like 1/a² for small a


# --- torch adapter -----------------------------------------------------------------------

def test_torch_operator_matches_numpy_mlp():
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    from rmt.hessian.torch import gauss_newton_operator, hessian_operator

    rng = np.random.default_rng(10)
    net = TanhMLP(4, 5, 3)
    theta, X, Y = net.init(rng), rng.standard_normal((20, 4)), rng.standard_normal((20, 3))
    W1, W2 = net.unpack(theta)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5, bias=False), torch.nn.Tanh(),
                                torch.nn.Linear(5, 3, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W1))
        model[2].weight.copy_(torch.tensor(W2))

    def loss(out, y):
        return ((out - y) ** 2).mean() / 2

    batches = [(X[:12], Y[:12]), (X[12:], Y[12:])]
    H = to_dense(hessian_operator(model, loss, batches))
    np.testing.assert_allclose(H, net.hessian(theta, X, Y), atol=1e-12)
    G = to_dense(gauss_newton_operator(model, loss, batches))
    np.testing.assert_allclose(G, net.gauss_newton(theta, X), atol=1e-12)


def test_torch_operators_keep_token_inputs_integer_and_take_dict_inputs():
    # regression: every input was cast to float64, so an nn.Embedding failed at once
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    from torch.func import functional_call

    from rmt.hessian.torch import gauss_newton_operator, hessian_operator

    class Tokens(torch.nn.Module):  # Hugging Face style: keyword inputs, an attention mask
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(11, 4)
            self.head = torch.nn.Linear(4, 3)

        def forward(self, input_ids, attention_mask):
            h = self.embed(input_ids) * attention_mask[..., None]
            return self.head(torch.tanh(h.sum(1)))

    torch.manual_seed(0)
    model = Tokens().double()
    gen = np.random.default_rng(1)
    batches = []
    for size in (5, 3):  # unequal batches
        ids = torch.as_tensor(gen.integers(0, 11, (size, 6)))
        mask = torch.as_tensor((gen.random((size, 6)) > 0.2).astype(np.int64))
        batches.append(({"input_ids": ids, "attention_mask": mask},
                        torch.as_tensor(gen.integers(0, 3, size))))
    loss = torch.nn.functional.cross_entropy
    H = to_dense(hessian_operator(model, loss, batches))
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def total(theta):  # the batch-size-weighted mean loss, as a function of all parameters
        params, start = {}, 0
        for name, p in model.named_parameters():
            params[name] = theta[start:start + p.numel()].view_as(p)
            start += p.numel()
        return sum(loss(functional_call(model, params, (), x), y) * len(y)
                   for x, y in batches) / 8

    exact = torch.autograd.functional.hessian(total, flat).numpy()
    np.testing.assert_allclose(H, exact, atol=1e-12)
    G = to_dense(gauss_newton_operator(model, loss, batches))
    assert np.allclose(G, G.T, atol=1e-12) and np.linalg.eigvalsh(G).min() > -1e-10


def test_torch_operators_run_on_the_models_device():
    # regression: the vectors were built on the CPU, so a CUDA model failed
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the device placement is untested here")
    from rmt.hessian.torch import hessian_operator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    X, Y = torch.randn(10, 4), torch.randn(10, 2)

    def loss(out, y):
        return ((out - y) ** 2).mean()

    cpu = to_dense(hessian_operator(model, loss, [(X, Y)]))
    gpu = to_dense(hessian_operator(model.cuda(), loss, [(X, Y)]))
    np.testing.assert_allclose(gpu, cpu, atol=1e-10)


# --- blocks of a torch model (issue 19) ---------------------------------------------------

def _small_torch_net(torch):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(7, 5, generator=gen), torch.randint(0, 3, (7,), generator=gen)),
               (torch.randn(4, 5, generator=gen), torch.randint(0, 3, (4,), generator=gen))]
    return model, batches


def _exact_hessian(torch, model, loss, batches):
    from torch.func import functional_call

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    total = sum(len(y) for _, y in batches)

    def f(theta):
        params, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            size = int(np.prod(shape))
            params[name] = theta[start:start + size].view(shape)
            start += size
        return sum(loss(functional_call(model, params, (x.double(),)), y) * len(y)
                   for x, y in batches) / total

    return torch.autograd.functional.hessian(f, flat).numpy()


def test_block_operators_are_the_diagonal_blocks_and_leave_the_model_alone():
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    import re

    from rmt.hessian.torch import gauss_newton_operator, hessian_operator, select_parameters

    model, batches = _small_torch_net(torch)  # float32, in train mode
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy
    H = _exact_hessian(torch, model, loss, batches)
    sizes = [p.numel() for p in model.parameters()]  # 20, 4, 12, 3
    edges = np.cumsum([0, *sizes])
    layer0 = slice(edges[0], edges[2])
    np.testing.assert_allclose(to_dense(hessian_operator(model, loss, batches, params="0.*")),
                               H[layer0, layer0], atol=1e-12)
    bias2 = slice(edges[3], edges[4])
    for spec in (re.compile(r"^2\.bias$"), ["2.bias"], [model[2].bias]):
        np.testing.assert_allclose(to_dense(hessian_operator(model, loss, batches, params=spec)),
                                   H[bias2, bias2], atol=1e-12)
    full_ggn = to_dense(gauss_newton_operator(model, loss, batches))
    block_ggn = to_dense(gauss_newton_operator(model, loss, batches, params="2.*"))
    np.testing.assert_allclose(block_ggn, full_ggn[edges[2]:, edges[2]:], atol=1e-12)
    # the caller's model: same dtype, parameters, mode and no .grad
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="matches no trainable parameter"):
        select_parameters(model, "nothing.*")
    with pytest.raises(ValueError, match="not a trainable parameter"):
        select_parameters(model, ["0.weight", "missing"])


def test_train_mode_is_applied_during_products_and_restored():
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    from rmt.hessian.torch import hessian_operator

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(self.training)
            return x

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), Spy())
    batches = [(torch.randn(4, 3), torch.randn(4, 2))]

    def loss(out, y):
        return ((out - y) ** 2).mean()

    model.train()
    hessian_operator(model, loss, batches, train=False).matvec(np.ones(8))
    assert seen == [False] and model.training and model[1].training
    seen.clear()
    model.eval()
    hessian_operator(model, loss, batches).matvec(np.ones(8))  # default: the model's mode
    assert seen == [False] and not model.training
    # train-mode BatchNorm updates its running statistics: on the operator's copies only
    norm = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).double()
    stats = [b.clone() for b in norm.buffers()]
    hessian_operator(norm, loss, batches, train=True).matvec(np.ones(12))
    assert all(torch.equal(a, b) for a, b in zip(norm.buffers(), stats, strict=True))


def test_block_spectra_are_exact_at_full_degree_and_measure_heterogeneity():
    torch = pytest.importorskip("torch", reason="the 'torch' extra is not installed")
    from rmt.hessian import block_spectra, default_groups, js_distances

    model, batches = _small_torch_net(torch)
    loss = torch.nn.functional.cross_entropy
    H = _exact_hessian(torch, model, loss, batches)
    assert default_groups(model) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}
    res = block_spectra(model, loss, batches, lanczos_degree=50, n_probes=1, rng=0)
    edges = {"0": slice(0, 24), "2": slice(24, 39)}
    for name, part in edges.items():  # degree >= block size: the quadrature is the spectrum
        exact = np.linalg.eigvalsh(H[part, part])
        sd = res.densities[name]
        nodes = sd.nodes[sd.weights > 1e-10]  # every node that carries mass is an eigenvalue
        assert np.abs(nodes[:, None] - exact[None, :]).min(axis=1).max() < 1e-9
        row = res.table.set_index("block").loc[name]
        assert row.n_params == exact.size and row.precision == "float64"
        assert row.lambda_max == pytest.approx(exact[-1], abs=1e-9)
        assert row.lambda_min == pytest.approx(exact[0], abs=1e-9)
    d = res.distances
    assert d.loc["0", "0"] == 0.0 and d.loc["0", "2"] == d.loc["2", "0"] > 0
    assert res.heterogeneity == pytest.approx(d.loc["0", "2"])
    # the same spectrum twice is at distance 0; a rescaled copy is far
    same = js_distances({"a": res.densities["0"], "b": res.densities["0"]})
    assert same.loc["a", "b"] == pytest.approx(0.0, abs=1e-12)
    labels = block_spectra(model, loss, batches, curvature="ggn", lanczos_degree=8, n_probes=2,
                           groups={"weights": "*.weight", "biases": "*.bias"}, rng=1)
    assert list(labels.table.block) == ["weights", "biases"]
    assert (labels.table.lambda_min > -1e-10).all()  # the GGN of cross-entropy is PSD
    assert (labels.table.n_matvecs == [16, 14]).all()  # degree capped at the 7 biases

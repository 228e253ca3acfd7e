"""Pennington & Bahri's theory (docs/science.md §8) against closed forms
and sampled Wishart + Wigner matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize

from rmt import energy as E

PHIS = (0.25, 0.5, 0.75)


@pytest.mark.parametrize("phi", PHIS)
@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0, 4.0])
def test_t1_density_against_sampled_matrices(phi, ratio):
    # W = AAᵀ/M (Wishart, ratio ϕ, scale 1) plus S = √(2ε)(G + Gᵀ)/√(2N) (Wigner, variance
    # 2ε). At N = 1000 the tolerances are the note's N = 2000 ones scaled by √2.
    N = 1000
    rng = np.random.default_rng(int(100 * phi + 10 * ratio))
    eps = ratio * E.critical_energy(phi)
    M = round(N / phi)
    A = rng.standard_normal((N, M))
    G = rng.standard_normal((N, N))
    ev = np.linalg.eigvalsh(A @ A.T / M + np.sqrt(2 * eps) * (G + G.T) / np.sqrt(2 * N))
    left, right = E.edges(eps, phi)
    grid = np.linspace(left, right, 4001)
    cdf = scipy.integrate.cumulative_trapezoid(E.density(grid, eps, phi), grid, initial=0.0)
    cdf /= cdf[-1]
    model = np.interp(ev, grid, cdf, left=0.0, right=1.0)
    i = np.arange(N)
    ks = max(np.max(model - i / N), np.max((i + 1) / N - model))
    assert ks <= 0.005 * np.sqrt(2)
    slack = 1 / N if ratio == 1 else 0.0  # at ε = ε_c the edge touches 0
    assert abs(np.mean(ev < 0) - E.index(eps, phi)) <= 0.002 * np.sqrt(2) + slack


@pytest.mark.parametrize("phi", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9])
def test_t2_critical_energy_is_where_the_left_edge_reaches_zero(phi):
    ec = E.critical_energy(phi)
    assert abs(E.edges(ec, phi)[0]) <= 1e-10
    assert E.edges(0.5 * ec, phi)[0] > 0 and E.edges(2 * ec, phi)[0] < 0
    # and the closed form agrees with a root-find of the left edge
    root = scipy.optimize.brentq(lambda e: E.edges(e, phi)[0], 0.5 * ec, 2 * ec, xtol=1e-16)
    assert root == pytest.approx(ec, rel=1e-10)


def test_t2_known_values():
    for phi, ec in ((0.0, 0.125), (0.1, 0.08343), (0.25, 0.04351), (0.5, 0.01127),
                    (0.75, 1.266e-3), (0.9, 7.67e-5), (1.0, 0.0), (2.0, 0.0)):
        assert E.critical_energy(phi) == pytest.approx(ec, rel=2e-3, abs=1e-12)


def test_edges_limits():
    for phi in PHIS:  # ε → 0: Marchenko–Pastur edges
        np.testing.assert_allclose(E.edges(0.0, phi), ((1 - np.sqrt(phi)) ** 2,
                                                       (1 + np.sqrt(phi)) ** 2))
    eps = 0.02  # ϕ → 0: a semicircle at 1 of radius 2√(2ε)
    np.testing.assert_allclose(E.edges(eps, 0.0), (1 - 2 * np.sqrt(2 * eps),
                                                   1 + 2 * np.sqrt(2 * eps)), rtol=1e-12)


@pytest.mark.parametrize("phi", [0.0, *PHIS])
def test_density_is_normalised(phi):
    eps = 1.5 * max(E.critical_energy(phi), 1e-3)
    left, right = E.edges(eps, phi)
    mass, _ = scipy.integrate.quad(lambda t: float(E.density(t, eps, phi)), left, right, limit=300)
    assert mass == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize(("phi", "alpha0"), [(0.0, 2 / (3 * np.pi)), (0.25, 0.0748),
                                             (0.5, 0.0335), (0.75, 0.0127)])
def test_t3_three_halves_law(phi, alpha0):
    ec = E.critical_energy(phi)
    x = np.logspace(-3, -2, 6)
    alpha = np.array([E.index(ec * (1 + xi), phi) for xi in x])
    slope = np.polyfit(np.log(x), np.log(alpha), 1)[0]
    assert slope == pytest.approx(1.5, abs=0.02)
    assert E.index_prefactor(phi) == pytest.approx(alpha0, rel=0.02)


@pytest.mark.parametrize("phi", [1.5, 2.0])
def test_t4_atom_splits_for_phi_above_one(phi):
    limit = (1 - 1 / phi) / 2
    assert limit <= E.index(1e-4, phi) <= limit + 0.01
    assert E.critical_energy(phi) == 0.0


def test_predicted_minimizer_energy():
    assert E.predicted_minimizer_energy(0.0) == 0.5
    assert E.predicted_minimizer_energy(0.5) == 0.125
    assert E.predicted_minimizer_energy(1.5) == 0.0
    with pytest.raises(ValueError):
        E.density(0.5, -1.0, 0.5)


# --- the experiment (T5–T7) --------------------------------------------------------------

def _check_t5(df):
    for phi, grp in df.groupby("phi"):
        target = grp["predicted"].iloc[0]
        mean = grp["energy"].mean()
        assert abs(mean - target) <= 0.035, (phi, mean, target)
        assert abs(mean - target) < abs(mean - grp["linear_baseline"].iloc[0])
        assert (grp["hessian_index"] == 0).all()  # true minima


def test_t5_minimizer_energy_fast():
    from rmt.energy import memorization_experiment

    df = memorization_experiment(n=6, phis=(0.25, 0.5), n_seeds=3, rng=0, max_iter=1500)
    assert set(df.columns) >= {"phi", "phi_actual", "m", "seed", "energy", "predicted",
                               "linear_baseline", "hessian_index", "grad_norm"}
    assert (df["phi_actual"] == 2 * 6 * 6 / (6 * df["m"])).all()
    # converged runs reached the tolerance; the others are flagged, not hidden
    assert df["converged"].any()
    assert (df.loc[df["converged"], "grad_norm"] < 1e-10).all()
    assert (df.loc[~df["converged"], "grad_norm"] >= 1e-10).all()
    _check_t5(df)


@pytest.mark.slow
def test_t5_minimizer_energy_full():
    from rmt.energy import memorization_experiment

    # measured: 0.275 ± 0.016, 0.130 ± 0.010, 0.036 ± 0.010 against 0.281, 0.125, 0.028
    _check_t5(memorization_experiment(n=8, n_seeds=6, rng=0))


def test_t6_freeness_holds_at_random_points_and_fails_at_minima():
    from rmt.energy import freeness_diagnostic, levenberg_marquardt
    from rmt.hessian import TanhMLP

    rng = np.random.default_rng(3)
    net = TanhMLP(8, 8, 8)
    X, Y = rng.standard_normal((32, 8)), rng.standard_normal((32, 8))
    theta = net.init(rng)
    generic = freeness_diagnostic(net, theta, X, Y, n_rotations=10, rng=0)
    assert generic["ks"] < 0.08 and abs(generic["index"] - generic["free_index"]) < 0.05
    minimum, _ = levenberg_marquardt(net, theta, X, Y, max_iter=800)
    at_min = freeness_diagnostic(net, minimum, X, Y, n_rotations=10, rng=0)
    assert at_min["index"] == 0.0 and at_min["free_index"] > 0.02
    assert at_min["ks"] > generic["ks"]


def test_t7_index_vs_energy_reports_flatness():
    from rmt.energy import index_vs_energy

    df = index_vs_energy(n=6, phi=0.5, n_runs=2, rng=0, gd_steps=(0, 100), max_iter=200)
    assert list(df.columns) == ["run", "gd_steps", "energy", "index", "grad_norm",
                                "flat_fraction"]
    assert len(df) == 4 and (df["grad_norm"] > 0).all()
    assert ((df["flat_fraction"] >= 0) & (df["flat_fraction"] <= 1)).all()

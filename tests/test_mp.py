"""Marchenko–Pastur law and the MP fit against closed forms and samples."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate

import rmt
from rmt import mp
from rmt.errors import DataError


def _spiked(N, M, thetas, seed, sigma=1.0):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((N, M))
    U, _ = np.linalg.qr(rng.standard_normal((N, len(thetas))))
    V, _ = np.linalg.qr(rng.standard_normal((M, len(thetas))))
    return sigma * (G + np.sqrt(N) * (U * np.asarray(thetas)) @ V.T)


@pytest.mark.parametrize("Q", [1.0, 1.5, 4.0, 10.0])
@pytest.mark.parametrize("sigma2", [1.0, 0.03])
def test_pdf_integrates_to_one_and_cdf_is_its_integral(Q, sigma2):
    lo, hi = mp.edges(Q, sigma2)
    np.testing.assert_allclose(lo, sigma2 * (1 - Q**-0.5) ** 2)
    np.testing.assert_allclose(hi, sigma2 * (1 + Q**-0.5) ** 2)
    total = scipy.integrate.quad(lambda x: mp.pdf(x, Q, sigma2), lo, hi, limit=400)[0]
    assert total == pytest.approx(1.0, abs=1e-9)
    for frac in (0.05, 0.3, 0.7, 0.95):
        x = lo + frac * (hi - lo)
        ref = scipy.integrate.quad(lambda t: mp.pdf(t, Q, sigma2), lo, x, limit=400)[0]
        assert mp.cdf(x, Q, sigma2) == pytest.approx(ref, abs=1e-9)
    assert mp.cdf(lo, Q, sigma2) == 0.0 and mp.cdf(hi * 1.01, Q, sigma2) == 1.0
    mean = scipy.integrate.quad(lambda x: x * mp.pdf(x, Q, sigma2), lo, hi, limit=400)[0]
    assert mean == pytest.approx(sigma2, rel=1e-8)  # the MP mean is σ²


def test_cdf_matches_a_sampled_wishart_esd():
    N, M = 4000, 1000
    ev = rmt.esd(np.random.default_rng(0).standard_normal((N, M)) * 0.5)
    F = mp.cdf(ev, N / M, 0.25)
    i = np.arange(M)
    D = max(np.max(F - i / M), np.max((i + 1) / M - F))
    assert D < 0.01  # eigenvalues are far more rigid than iid draws (1.36/√M = 0.043)


def test_pure_noise_fit():
    N, M, sigma = 2000, 1000, 0.7
    fit = rmt.fit_mp(rmt.esd(sigma * np.random.default_rng(1).standard_normal((N, M))), N=N)
    assert fit.n_spikes == 0 and fit.spikes.size == 0
    # σ² relative SD is √(2/(NM)); 5 SDs (false-failure probability 6e-7)
    assert abs(fit.sigma2 / sigma**2 - 1) < 5 * np.sqrt(2 / (N * M))
    assert fit.D < 0.01
    assert -5 < fit.tw_z < 3
    assert fit.mp_softrank == pytest.approx(fit.lambda_plus / fit.evals.max())
    assert (fit.lambda_minus, fit.lambda_plus) == pytest.approx(mp.edges(2.0, fit.sigma2))


def test_false_positive_rate_of_the_spike_test():
    # 300 Gaussian 400×200 matrices at nominal 5%: the number with ≥ 1 spike is
    # Binomial(300, ~0.05); [4, 29] has false-failure probability ~1e-3.
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(300):
        W = rng.standard_normal((400, 200))
        ev = np.linalg.eigvalsh(W.T @ W / 400)
        hits += rmt.fit_mp(ev, N=400, fpr=0.05).n_spikes > 0
    assert 4 <= hits <= 29


def test_spikes_at_bbp_locations_and_theta_recovered():
    # Outliers fluctuate by O(N^-1/2) around the BBP location: measured SD ≈ 2.7% for θ = 2
    # at 2000×1000. The mean over 8 seeds has SD ≈ 1%, so 3% is a ~3-SD tolerance.
    N, M = 2000, 1000
    thetas = np.array([2.0, 2.5, 3.0, 3.5, 4.0])
    fits = [rmt.fit_mp(rmt.esd(_spiked(N, M, thetas, seed=s)), N=N) for s in range(8)]
    assert all(f.n_spikes == 5 for f in fits)
    predicted = mp.bbp_location(thetas[::-1], 2.0)
    np.testing.assert_allclose(np.mean([f.spikes for f in fits], axis=0), predicted, rtol=0.03)
    np.testing.assert_allclose(np.mean([f.theta for f in fits], axis=0), thetas[::-1], rtol=0.03)
    assert fits[0].theta_c == pytest.approx(2.0**-0.25)
    assert min(f.tw_z for f in fits) > 100


def test_bbp_inverse_is_the_inverse():
    theta = np.linspace(0.9, 6, 30)
    for Q in (1.0, 2.0, 7.5):
        ok = theta > Q**-0.25
        np.testing.assert_allclose(mp.bbp_inverse(mp.bbp_location(theta[ok], Q, 0.3), Q, 0.3),
                                   theta[ok], rtol=1e-10)
        assert mp.bbp_location(Q**-0.25 * 0.9, Q) == pytest.approx(mp.edges(Q)[1])


def test_weak_spike_below_threshold_is_not_detected():
    fit = rmt.fit_mp(rmt.esd(_spiked(2000, 1000, [0.5], seed=4)), N=2000)
    assert fit.n_spikes == 0


def test_unnormalized_eigenvalues_give_the_same_fit_in_their_units():
    W = _spiked(1500, 500, [3.0], seed=5)
    a = rmt.fit_mp(rmt.esd(W), N=1500)
    b = rmt.fit_mp(rmt.esd(W, normalize=False), N=1500, normalized=False)
    assert b.n_spikes == a.n_spikes == 1
    np.testing.assert_allclose([b.sigma2, b.lambda_plus, b.spikes[0]],
                               [1500 * a.sigma2, 1500 * a.lambda_plus, 1500 * a.spikes[0]],
                               rtol=1e-10)
    assert b.tw_z == pytest.approx(a.tw_z) and b.D == pytest.approx(a.D)


def test_square_matrices_q_equal_one():
    fit = rmt.fit_mp(rmt.esd(np.random.default_rng(6).standard_normal((800, 800))), N=800)
    assert fit.Q == 1.0 and fit.lambda_minus == 0.0 and fit.n_spikes == 0 and fit.D < 0.02


def test_bad_input():
    with pytest.raises(DataError):
        rmt.fit_mp([], N=10)
    with pytest.raises(DataError):
        rmt.fit_mp([1.0, np.nan], N=10)
    with pytest.raises(ValueError, match="N >= M"):
        rmt.fit_mp(np.ones(10), N=5)
    with pytest.raises(ValueError, match="fpr"):
        rmt.fit_mp(np.ones(10), N=20, fpr=1.5)
    with pytest.raises(ValueError, match="Q"):
        mp.edges(0.5)


def test_collapsed_spectrum_is_guarded():
    fit = rmt.fit_mp(np.zeros(50), N=100)
    assert "sigma2" in fit.warning and fit.sigma2 > 0


def test_plot():
    import matplotlib

    matplotlib.use("Agg")
    ax = rmt.fit_mp(rmt.esd(_spiked(1000, 500, [3.0], seed=7)), N=1000).plot()
    assert len(ax.lines) >= 3

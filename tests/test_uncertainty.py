"""rmt.uncertainty: bootstrap intervals cover the true exponent; the xmin band brackets the
fit and is computed from KS distances exact within its margin."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.uncertainty import alpha_uncertainty
from tests.reference import powerlaw_scan


def test_bootstrap_interval_covers_the_true_alpha():
    # 20 Pareto samples (alpha = 2.5, n = 1000): a 95% interval misses the truth in about
    # 1 of 20; more than 4 misses has probability < 2e-3
    misses = 0
    for seed in range(20):
        x = (1 - np.random.default_rng(seed).random(1000)) ** (-1 / 1.5)
        u = alpha_uncertainty(rmt.fit_powerlaw(x), n_boot=100, rng=seed)
        assert u.ci_low < u.alpha < u.ci_high and u.n_boot == 100
        misses += not u.ci_low <= 2.5 <= u.ci_high
    assert misses <= 4


def test_xmin_band_from_every_candidate():
    x = rmt.esd(rmt.synthetic.phase_matrix("heavy-tailed", 600, 300, rng=81))
    x = x[x > 0]
    fit = rmt.fit_powerlaw(x)
    u = alpha_uncertainty(fit, n_boot=10, rng=0, xmin_margin=0.2)
    _, (_xmins, alphas, Ds, valid) = powerlaw_scan(x)  # slow reference: every candidate
    near = valid & (Ds <= 1.2 * fit.D)
    assert u.xmin_low == pytest.approx(alphas[near].min(), rel=1e-10)
    assert u.xmin_high == pytest.approx(alphas[near].max(), rel=1e-10)
    assert u.xmin_low <= fit.alpha <= u.xmin_high
    with pytest.raises(ValueError):
        alpha_uncertainty(fit, level=1.5)


def test_columns_seeded():
    W = rmt.synthetic.phase_matrix("heavy-tailed", 400, 200, rng=82)
    a = rmt.analyze({"w": W}, uncertainty=True, rng=1, progress=False).iloc[0]
    b = rmt.analyze({"w": W}, uncertainty=True, rng=1, progress=False).iloc[0]
    assert a["alpha_ci_low"] == b["alpha_ci_low"] and a["alpha_ci_low"] < a["alpha"]
    assert a["alpha_xmin_low"] <= a["alpha"] <= a["alpha_xmin_high"]

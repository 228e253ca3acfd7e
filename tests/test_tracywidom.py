"""Tracy–Widom₁ law and Johnstone's scaling against published values and the formula."""

from __future__ import annotations

import numpy as np
import pytest

from rmt.tracywidom import johnstone, tw1_cdf, tw1_ppf, tw1_sf


def test_tracy_widom_against_published_values():
    assert tw1_ppf(0.95) == pytest.approx(0.9793, abs=1e-4)
    assert tw1_ppf(0.99) == pytest.approx(2.0234, abs=1e-4)
    s = np.linspace(-11.5, 11.5, 40001)
    density = np.gradient(tw1_cdf(s), s)
    mean = np.trapezoid(s * density, s)
    sd = np.sqrt(np.trapezoid((s - mean) ** 2 * density, s))
    assert mean == pytest.approx(-1.2065, abs=2e-4)
    assert sd == pytest.approx(1.2680, abs=2e-4)
    assert tw1_sf(3.0) == pytest.approx(1 - tw1_cdf(3.0), rel=1e-8)
    assert np.all(np.diff(tw1_cdf(s)) >= 0)


def test_johnstone_scaling_formula():
    mu, s = johnstone(2000, 1000)
    a, b = np.sqrt(1999), np.sqrt(1000)
    assert mu == pytest.approx((a + b) ** 2)
    assert s == pytest.approx((a + b) * (1 / a + 1 / b) ** (1 / 3))
    # σ_TW at 2000×1000 in X = WᵀW/N units is 0.01443 (docs/science.md §5)
    assert s / 2000 == pytest.approx(0.01443, rel=2e-3)

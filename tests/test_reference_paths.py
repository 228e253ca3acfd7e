"""Fast paths against the slow references of tests/reference.py (one test per path)."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt import synthetic
from rmt.analyses import _log10_sum_power
from rmt.metrics import numerical_zero_threshold
from rmt.phases import _largest_gap
from rmt.tracywidom import johnstone, tw1_ppf
from tests import reference


@pytest.mark.parametrize("phase", ["random-like", "bulk+spikes", "heavy-tailed"])
def test_mp_fit_prefix_sum_iteration_is_the_trimmed_trace(phase):
    N, M = 1200, 600
    W = synthetic.phase_matrix(phase, N, M, rng=21)
    ev = rmt.esd(W)
    fit = rmt.fit_mp(ev, N=N, fpr=0.01)
    mu, s = johnstone(N, M)
    sigma2, n_spikes = reference.mp_trimmed_trace(ev, N, M, (mu + tw1_ppf(0.99) * s) / N)
    assert fit.sigma2 == pytest.approx(sigma2, rel=1e-12)
    assert fit.n_spikes == n_spikes


def test_mp_ks_distance_matches_numerical_integration():
    W = synthetic.phase_matrix("bulk+spikes", 800, 200, rng=22)
    ev = rmt.esd(W)
    fit = rmt.fit_mp(ev, N=800)
    bulk = ev[ev <= fit.threshold]
    # quad's error is ~1e-13 per point; the closed-form CDF is exact to round-off
    assert fit.D == pytest.approx(reference.mp_ks_distance(bulk, fit.Q, fit.sigma2), abs=1e-9)


@pytest.mark.parametrize("alpha", [1.5, 4.0, 80.0, 400.0])
def test_log_alpha_norm_in_log_space(alpha):
    x = np.random.default_rng(23).lognormal(3.0, 2.0, 500)  # x**400 overflows float64
    assert _log10_sum_power(x, alpha) == pytest.approx(reference.log10_sum_power(x, alpha),
                                                      rel=1e-12)


@pytest.mark.parametrize("kind", ["weight-decay", "low-rank"])
def test_largest_gap_against_every_split(kind):
    W = synthetic.phase_matrix("rank-collapse", 400, 200, kind=kind, rng=24)
    ev = rmt.esd(W.astype(np.float32))
    zero = numerical_zero_threshold(ev, 200)
    pos = ev[ev > zero]
    fast = _largest_gap(pos, ev.size - pos.size, zero, ev.size, 0.05)
    assert fast == pytest.approx(reference.largest_gap(ev, zero, 0.05), rel=1e-12)
    assert fast > 1.0  # a real gap, not the trivial 0

"""rmt.config: engine constants change how results are computed, never the results."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import rmt
from rmt import config
from rmt.hessian import negative_fraction


def test_reset_restores_every_default():
    config.GRAM_BLOCK_BYTES = 1
    config.INDEX_REL_TOL = 0.5
    config.reset()
    assert {k: getattr(config, k) for k in config.DEFAULTS} == config.DEFAULTS


@pytest.mark.parametrize("block_bytes, batch_bytes", [(4096, 1), (2**24, 2**30)])
def test_block_and_batch_sizes_do_not_change_the_esd(monkeypatch, block_bytes, batch_bytes):
    rng = np.random.default_rng(3)
    W = rng.standard_normal((700, 300)).astype(ml_dtypes.bfloat16)
    K = rng.standard_normal((32, 16, 3, 3))
    reference = (rmt.esd(W), rmt.esd(K))
    monkeypatch.setattr(config, "GRAM_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(config, "GRAM_MIN_BLOCK_ROWS", 16)
    monkeypatch.setattr(config, "ESD_BATCH_BYTES", batch_bytes)
    # float64 accumulation: only the order of summation changes
    np.testing.assert_allclose(rmt.esd(W), reference[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rmt.esd(K), reference[1], rtol=1e-12, atol=1e-14)


def test_scan_stride_does_not_change_the_fit(monkeypatch):
    x = np.random.default_rng(4).pareto(2.0, 3000) + 1
    reference = rmt.fit_powerlaw(x)
    for stride in (2, 1000):
        monkeypatch.setattr(config, "KS_COARSE_STRIDE", stride)
        fit = rmt.fit_powerlaw(x)
        assert (fit.alpha, fit.xmin, fit.D) == (reference.alpha, reference.xmin, reference.D)


def test_index_tolerances():
    ev = np.array([-1e-3, -1e-12, 0.0, 1e-12, 2.0, 3.0])
    # the default is round-off of a dense eigensolve (n*eps*max|lambda|): -1e-12 counts
    assert negative_fraction(ev) == pytest.approx(2 / 6)
    assert negative_fraction(ev, rel_tol=config.INDEX_REL_TOL) == pytest.approx(1 / 6)
    assert negative_fraction(ev, zero_tol=1e-2) == 0
    with pytest.raises(ValueError, match="not both"):
        negative_fraction(ev, zero_tol=1.0, rel_tol=1.0)

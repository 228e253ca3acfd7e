"""rmt.erg: the detX / ERG condition against WeightWatcher 0.7.7's definition, transcribed."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt import synthetic
from rmt.erg import detx
from tests.reference import ww_detx


@pytest.mark.parametrize("phase", synthetic.PHASES)
@pytest.mark.parametrize("normalize", [True, False])
def test_detx_is_weightwatchers_on_the_same_eigenvalues(phase, normalize):
    W = synthetic.phase_matrix(phase, 600, 300, rng=31)
    ev = np.maximum(rmt.esd(W, normalize=normalize), 0.0)
    ours = detx(ev)
    num, idx, val = ww_detx(ev)
    assert (ours.detX_num, ours.detX_idx) == (num, idx)
    assert ours.detX_val == pytest.approx(val, rel=1e-12)


def test_detx_does_not_depend_on_scale_and_survives_products_that_overflow():
    ev = np.random.default_rng(32).pareto(0.8, 5000) + 1e-3  # products of the top overflow
    a, b = detx(ev), detx(ev * 1e12)
    assert (a.detX_num, a.detX_idx) == (b.detX_num, b.detX_idx)
    assert b.detX_val == pytest.approx(a.detX_val * 1e12, rel=1e-12)
    assert 1 < a.detX_num < ev.size


def test_flat_spectrum_and_bad_input():
    # all eigenvalues equal: every rescaled value is 1, no product falls below 1
    res = detx(np.ones(10))
    assert res.detX_num == 10 and (res.detX_num, res.detX_idx) == ww_detx(np.ones(10))[:2]
    with pytest.raises(ValueError):
        detx([1.0])
    with pytest.raises(ValueError):
        detx(np.zeros(5))


def test_columns_in_the_table():
    W = synthetic.phase_matrix("heavy-tailed", 800, 400, rng=33)
    row = rmt.analyze({"w": W}, progress=False).iloc[0]
    res = detx(rmt.esd(W))
    assert row["detX_num"] == res.detX_num
    assert row["detX_val"] == pytest.approx(res.detX_val, rel=1e-12)
    assert row["ERG_gap"] == res.detX_num - row["num_pl_spikes"]
    # WeightWatcher's detX_val_unrescaled is the value in the mean-1 ESD (its names swap)
    ev = rmt.esd(W)
    assert row["detX_val_unrescaled"] == pytest.approx(res.detX_val * ev.size / ev.sum(),
                                                       rel=1e-12)
    # the MP bulk's edges
    fit = rmt.fit_mp(ev[ev > 0], N=800, M=400)
    assert (row["bulk_max"], row["bulk_min"]) == (pytest.approx(fit.lambda_plus),
                                                  pytest.approx(fit.lambda_minus))

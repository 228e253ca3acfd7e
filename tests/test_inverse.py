"""rmt.inverse: the inverse ESD's tail exponent against the quarter-circle law's 3/2 and
against the powerlaw package's definitions; numerical zeros left out and flagged."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.inverse import inverse_esd
from tests.reference import powerlaw_scan


@pytest.mark.parametrize("seed", [0, 1])
def test_square_gaussian_inverse_esd_has_alpha_three_halves(seed):
    # quarter-circle law: singular-value density finite at 0, so p(1/lambda) ~ x^(-3/2)
    W = np.random.default_rng(seed).standard_normal((1200, 1200))
    res = inverse_esd(rmt.esd(W), 1200)
    assert abs(res.fit.alpha - 1.5) < 3 * res.fit.sigma + 0.01
    assert res.n_zero == 0 and res.n_inexact == 0 and res.warning == ""
    # the fit is the CSN fit of 1/lambda by powerlaw's definitions
    alpha, xmin, _, n_tail = powerlaw_scan(np.sort(1 / rmt.esd(W)))[0]
    assert (res.fit.alpha, res.fit.xmin, res.fit.n_tail) == (pytest.approx(alpha, rel=1e-9),
                                                            pytest.approx(xmin), n_tail)


def test_zeros_are_left_out_and_near_zeros_flagged():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((400, 50)) @ rng.standard_normal((50, 200))  # rank 50 of 200
    ev = rmt.esd(W)
    res = inverse_esd(ev, 200)
    assert res.n_zero == 150 and res.evals.size == 50
    assert res.lambda_max == pytest.approx(1 / ev[150], rel=1e-9)
    near = np.concatenate([[1e-12], np.linspace(1, 2, 60)])  # one within 100x of zero level
    flagged = inverse_esd(near, 60)
    assert flagged.n_inexact == 1 and "1%" in flagged.warning


def test_analyze_inverse_columns():
    W = np.random.default_rng(3).standard_normal((600, 600))
    df = rmt.analyze({"w": W}, inverse=True, progress=False)
    assert df["inv_alpha"].iloc[0] == pytest.approx(inverse_esd(rmt.esd(W), 600).fit.alpha)
    assert df["inv_lambda_max"].iloc[0] == pytest.approx(1 / rmt.esd(W)[0], rel=1e-9)
    assert "inv_alpha" not in rmt.analyze({"w": W}, progress=False).columns

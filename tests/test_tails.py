"""rmt.tails (tpl=True): truncated power law and best_fit against the powerlaw package."""

from __future__ import annotations

import warnings

import numpy as np
import powerlaw
import pytest

import rmt
from rmt.tails import compare_tails


def _reference(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return powerlaw.Fit(x, verbose=False, parameter_ranges={"alpha": [1, None]})


def test_truncated_power_law_on_a_cut_off_tail_matches_powerlaw():
    # a power law with an exponential cut-off: the TPL wins, with powerlaw's parameters
    rng = np.random.default_rng(71)
    x = (1 - rng.random(4000)) ** (-1 / 1.5)
    x = x[rng.random(x.size) < np.exp(-0.02 * x)]
    fit = rmt.fit_powerlaw(x)
    res = compare_tails(fit)
    ref = _reference(x)
    assert fit.xmin == ref.xmin
    assert res.tpl_alpha == pytest.approx(ref.truncated_power_law.alpha, rel=1e-3)
    assert res.tpl_lambda == pytest.approx(ref.truncated_power_law.Lambda, rel=1e-2)
    R, p = ref.distribution_compare("power_law", "truncated_power_law")
    assert R < 0 and p < 0.05 and res.best_fit == "truncated_power_law"


def test_a_pure_power_law_stays_a_power_law():
    rng = np.random.default_rng(72)
    x = (1 - rng.random(3000)) ** (-1 / 1.5)
    assert compare_tails(rmt.fit_powerlaw(x)).best_fit == "power_law"


def test_columns_only_when_asked():
    W = rmt.synthetic.phase_matrix("heavy-tailed", 800, 400, rng=73)
    plain = rmt.analyze({"w": W}, progress=False)
    assert "tpl_alpha" not in plain.columns
    row = rmt.analyze({"w": W}, tpl=True, progress=False).iloc[0]
    expected = compare_tails(rmt.fit_powerlaw(rmt.esd(W)))
    assert row["tpl_alpha"] == pytest.approx(expected.tpl_alpha, rel=1e-9)
    assert row["best_fit"] == expected.best_fit

"""rmt.fingers: the Dragon-King test is calibrated on clean Pareto tails, finds planted
outliers, and the fit without them is the plain fit of the rest; clip_xmax is
WeightWatcher's rule."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import rmt
from rmt.fingers import dk_pvalues, find_fingers
from tests.reference import ww_clip_xmax


def _pareto(seed: int, n: int = 500, shape: float = 2.0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).pareto(shape, n) + 1.0)


def test_dk_pvalues_are_uniform_on_a_pareto_tail():
    # exact Pareto data: every block's p-value is U(0, 1) (the F law holds for any alpha)
    for r, shape in ((1, 1.5), (3, 3.0)):
        p = [dk_pvalues(_pareto(s, 200, shape), 3)[r - 1] for s in range(400)]
        assert scipy.stats.kstest(p, "uniform").pvalue > 1e-3


def test_clean_tails_have_fingers_at_the_stated_rate():
    # 400 fitted Pareto samples at 1% family-wise: P(more than 10 flagged) < 0.003
    flagged = sum(find_fingers(rmt.fit_powerlaw(_pareto(s, 300, 1.5))).n_fingers > 0
                  for s in range(400))
    assert flagged <= 10
    # and heavy-tailed ESDs of the synthetic generator have none either
    for s in range(10):
        ev = rmt.esd(rmt.synthetic.phase_matrix("heavy-tailed", 400, 200, rng=s))
        assert find_fingers(rmt.fit_powerlaw(ev)).n_fingers == 0


def test_planted_fingers_are_found_and_removed():
    hits = 0
    for s in range(20):
        x = _pareto(s)
        x[-2:] *= 30.0  # two eigenvalues far above the tail
        f = find_fingers(rmt.fit_powerlaw(x))
        hits += f.n_fingers == 2
        assert f.n_fingers >= 2 and f.p_value < 0.01 and f.raw_alpha == rmt.fit_powerlaw(x).alpha
        assert f.fit.alpha == rmt.fit_powerlaw(x[:x.size - f.n_removed]).alpha
    assert hits >= 15  # the block size is the most significant one (17 of 20 measured)
    with pytest.raises(ValueError, match="method"):
        find_fingers(rmt.fit_powerlaw(_pareto(0)), method="peak")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(6))
def test_clip_xmax_is_weightwatchers_rule(seed):
    x = _pareto(seed, 300, 1.2)
    if seed % 2:
        x[-3:] *= 8.0
    f = find_fingers(rmt.fit_powerlaw(x, candidates="ww"), method="clip_xmax")
    alpha, n, raw = ww_clip_xmax(x)
    assert (f.n_fingers, f.fit.alpha, f.raw_alpha) == (n, pytest.approx(alpha, rel=1e-9),
                                                       pytest.approx(raw, rel=1e-9))
    assert f.n_removed == (n + 1 if n else 0)


def test_analyze_fingers_columns():
    rng = np.random.default_rng(4)
    W = rmt.synthetic.phase_matrix("heavy-tailed", 500, 250, rng=4)
    u = rng.standard_normal(500)
    v = rng.standard_normal(250)
    # a rank-one spike 200x the spectral norm: its eigenvalue is ~4e4 x the tail's largest
    # (with alpha ~ 2.1 the tail's own largest gaps reach 100x, so smaller ones are not
    # significant at 1%)
    spiked = W + 200 * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v)) * np.linalg.norm(W, 2)
    weights = {"clean": W, "spiked": spiked}
    plain = rmt.analyze(weights, progress=False).set_index("name")
    assert "num_fingers" not in plain.columns
    df = rmt.analyze(weights, fingers="dk", progress=False).set_index("name")
    assert df.loc["clean", "num_fingers"] == 0
    assert df.loc["clean", "alpha"] == df.loc["clean", "raw_alpha"] == plain.loc["clean", "alpha"]
    assert df.loc["spiked", "num_fingers"] >= 1 and df.loc["spiked", "finger_p"] < 0.01
    assert df.loc["spiked", "raw_alpha"] == plain.loc["spiked", "alpha"]
    ev = rmt.esd(spiked)
    k = int(df.loc["spiked", "num_fingers"])
    assert df.loc["spiked", "alpha"] == pytest.approx(rmt.fit_powerlaw(ev[:ev.size - k]).alpha)
    assert df.loc["spiked", "xmax"] == pytest.approx(ev[-1 - k])
    ww = rmt.analyze(weights, fingers="clip_xmax", candidates="ww", progress=False)
    assert ww["finger_p"].isna().all()
    with pytest.raises(ValueError, match="fingers"):
        rmt.analyze(weights, fingers="yes")

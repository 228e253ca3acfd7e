"""rmt.hill: the fixed-xmin Hill estimator against its closed form and against samples."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.errors import DataError
from rmt.hill import alpha_hill


def _papers_alpha_hill(eigs: np.ndarray) -> float:
    """PL_Alpha_Hill as AlphaPruning/TempBalance compute it (xmin_mid, xmin_pos = 2)."""
    eigs = np.sort(eigs)
    log = np.log(eigs)
    i = len(eigs) // 2
    n = float(len(eigs) - i)
    return 1 + n / (np.sum(log[i:]) - n * log[i])


def test_median_xmin_is_the_papers_pl_alpha_hill():
    ev = rmt.esd(rmt.synthetic.phase_matrix("heavy-tailed", 1000, 500, rng=41))
    fit = alpha_hill(ev)
    assert fit.alpha == pytest.approx(_papers_alpha_hill(ev[ev > 0]), rel=1e-13)
    assert fit.n_tail == 500 - 250 and fit.xmin == np.sort(ev)[250]


def test_recovers_a_pareto_exponent():
    # x ~ Pareto with density ∝ x^-(alpha) for x >= 1: the MLE over the top half (whose xmin
    # is the median) estimates alpha with standard error (alpha - 1)/sqrt(n_tail)
    rng = np.random.default_rng(42)
    alpha = 2.5
    x = (1 - rng.random(200_000)) ** (-1 / (alpha - 1))
    fit = alpha_hill(x)
    assert abs(fit.alpha - alpha) < 4 * (alpha - 1) / np.sqrt(fit.n_tail)
    assert fit.D < 0.01


def test_peak_and_explicit_xmin():
    rng = np.random.default_rng(43)
    x = np.concatenate([rng.lognormal(0, 0.3, 5000), (1 - rng.random(500)) ** -1.0 * 3])
    peak = alpha_hill(x, xmin="peak")
    counts, edges = np.histogram(np.log10(x), bins=100)
    assert peak.xmin >= 10 ** edges[np.argmax(counts)] and peak.xmin < 10 ** edges[
        np.argmax(counts) + 1]
    at = alpha_hill(x, xmin=3.0)
    assert at.xmin >= 3.0 and at.n_tail == int(np.sum(x >= 3.0))


def test_bad_input():
    with pytest.raises(DataError):
        alpha_hill([1.0])
    with pytest.raises(DataError):
        alpha_hill([2.0, 2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="median"):
        alpha_hill([1.0, 2.0, 3.0], xmin="middle")


def test_column_in_the_table():
    W = rmt.synthetic.phase_matrix("bulk-decay", 600, 300, rng=44)
    row = rmt.analyze({"w": W}, progress=False).iloc[0]
    ev = rmt.esd(W)
    assert row["alpha_hill"] == pytest.approx(alpha_hill(ev[ev > 0]).alpha, rel=1e-12)

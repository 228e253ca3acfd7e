"""Per-layer ESD metrics against their definitions computed independently with LAPACK."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import rmt
from rmt.metrics import svd_rank_loss
from tests.reference import entropy


def _low_rank(n, m, r, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, r)) @ rng.standard_normal((r, m))).astype(dtype)


def test_metrics_match_norm_definitions():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((400, 150)) * np.linspace(0.1, 3, 150)
    N = 400
    m = rmt.esd_metrics(rmt.esd(W), W=W)
    fro2 = np.linalg.norm(W, "fro") ** 2
    spec2 = np.linalg.norm(W, 2) ** 2
    assert m.num_evals == 150
    np.testing.assert_allclose(m.lambda_max, spec2 / N, rtol=1e-12)
    np.testing.assert_allclose(m.stable_rank, fro2 / spec2, rtol=1e-12)
    np.testing.assert_allclose(m.log_norm, np.log10(fro2 / N), rtol=1e-12)
    np.testing.assert_allclose(m.log_spectral_norm, np.log10(spec2 / N), rtol=1e-12)
    s2 = np.linalg.svd(W, compute_uv=False) ** 2
    np.testing.assert_allclose(m.entropy, entropy(s2, 150), rtol=1e-10)
    assert m.rank_loss == 0


def test_unnormalized_metrics_are_weightwatchers():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((300, 100))
    m = rmt.esd_metrics(rmt.esd(W, normalize=False), W=W)
    np.testing.assert_allclose(m.log_norm, np.log10(np.sum(W**2)), rtol=1e-12)
    np.testing.assert_allclose(m.lambda_max, np.linalg.norm(W, 2) ** 2, rtol=1e-12)


def test_scale_free_metrics_do_not_depend_on_scale_or_normalisation():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((256, 64))
    a = rmt.esd_metrics(rmt.esd(W), W=W)
    b = rmt.esd_metrics(rmt.esd(1e-3 * W, normalize=False), W=1e-3 * W)
    np.testing.assert_allclose(a.stable_rank, b.stable_rank, rtol=1e-10)
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=1e-10)


@pytest.mark.parametrize(("n", "m", "r"), [(400, 100, 30), (100, 400, 30), (128, 128, 64),
                                           (500, 200, 1)])
def test_rank_loss_matches_numpy_matrix_rank(n, m, r):
    W = _low_rank(n, m, r, seed=n + m + r)
    metrics = rmt.esd_metrics(rmt.esd(W), W=W)
    assert metrics.rank_loss == min(n, m) - np.linalg.matrix_rank(W) == min(n, m) - r
    assert metrics.rank_loss_method == "svd"
    # the entropy uses the hard rank R = M - rank_loss
    s2 = np.linalg.svd(W, compute_uv=False) ** 2
    expected = entropy(s2, r) if r > 1 else 0.0  # one nonzero p = 1 has entropy 0
    np.testing.assert_allclose(metrics.entropy, expected, rtol=1e-6, atol=1e-12)


def test_gram_screen_counts_numerical_zeros_without_w():
    W = _low_rank(600, 200, 50, seed=3)
    m = rmt.esd_metrics(rmt.esd(W), M=200)
    assert m.rank_loss_method == "gram"
    assert m.rank_loss == 150  # all 150 exact zeros sit below M·eps·λmax


def test_low_precision_storage_uses_float64_epsilon():
    # With eps(float16) the NumPy rule would flag every singular value below
    # σmax·max(N,M)·eps16 ≈ 0.5σmax: a full-rank Gaussian would look rank-deficient.
    rng = np.random.default_rng(4)
    W = rng.standard_normal((1024, 256)).astype(np.float16)
    assert rmt.esd_metrics(rmt.esd(W), W=W).rank_loss == 0
    Wb = rng.standard_normal((1024, 256)).astype(ml_dtypes.bfloat16)
    assert svd_rank_loss(Wb) == 0


def test_heavy_tailed_tiny_singular_values_are_not_rank_loss():
    # Tiny but real singular values (ratio ~1e-9) are numerical zeros of the Gram matrix
    # but not of W: the SVD confirmation must keep them.
    rng = np.random.default_rng(5)
    U, _ = np.linalg.qr(rng.standard_normal((300, 100)))
    V, _ = np.linalg.qr(rng.standard_normal((100, 100)))
    s = np.ones(100)
    s[:10] = 1e-9
    W = (U * s) @ V.T
    m = rmt.esd_metrics(rmt.esd(W), W=W)
    assert m.rank_loss == 0 and m.rank_loss_method == "svd"
    assert rmt.esd_metrics(rmt.esd(W), M=100).rank_loss == 10  # the Gram screen alone


def test_conv_rank_loss_sums_over_slices():
    rng = np.random.default_rng(6)
    W = rng.standard_normal((16, 8, 2, 2))
    W[:, 5:, 0, 1] = 0.0  # slice (0, 1) loses 3 columns
    m = rmt.esd_metrics(rmt.esd(W), W=W)
    assert m.num_evals == 32
    assert m.rank_loss == 3


def test_all_zero_weight_gives_undefined_logs_not_crashes():
    W = np.zeros((20, 10))
    m = rmt.esd_metrics(rmt.esd(W), W=W)
    assert m.lambda_max == 0 and m.log_norm == -np.inf and np.isnan(m.stable_rank)
    assert m.rank_loss == 10


def test_metrics_to_dict_and_input_checks():
    d = rmt.esd_metrics(np.array([1.0, 2.0, 3.0])).to_dict()
    assert d["num_evals"] == 3 and d["stable_rank"] == 2.0
    with pytest.raises(ValueError, match="non-empty"):
        rmt.esd_metrics(np.array([]))

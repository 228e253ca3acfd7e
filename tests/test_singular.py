"""rmt.singular: singular-value columns against a float64 SVD."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.singular import singular_values


@pytest.mark.parametrize("normalize", [True, False])
def test_against_svd(normalize):
    rng = np.random.default_rng(51)
    W = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 120)) * 1e-4  # rank 5
    W[:, :3] += rng.standard_normal((300, 3))
    s = np.linalg.svd(W, compute_uv=False)
    row = rmt.analyze({"w": W}, normalize=normalize, progress=False).iloc[0]
    assert row["sv_max"] == pytest.approx(s.max(), rel=1e-10)
    assert row["matrix_rank"] == np.linalg.matrix_rank(W)
    # eigenvalues of WᵀW below 1e-6 in WeightWatcher's units, whatever the normalisation
    assert row["weak_rank_loss"] == np.count_nonzero(s**2 < 1e-6)
    assert row["sv_min"] == pytest.approx(s.min(), abs=1e-6 * s.max())


def test_conv_slices_pool_and_sv_min_is_the_global_minimum():
    K = np.random.default_rng(52).standard_normal((40, 30, 3, 3))
    K[:, :, 1, 1] *= 1e-3  # one slice much smaller than the others
    per_slice = [np.linalg.svd(K[:, :, i, j], compute_uv=False) for i in range(3)
                 for j in range(3)]
    res = singular_values(rmt.esd(K), 40)
    assert res.sv_max == pytest.approx(max(s.max() for s in per_slice), rel=1e-10)
    assert res.sv_min == pytest.approx(min(s.min() for s in per_slice), rel=1e-6)

"""rmt.farms: FARMS's alpha reproduced from its own procedure, the aspect-ratio bias it
exists to remove measured on Gaussian matrices, and the edge cases of the window grid."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.errors import DataError
from rmt.farms import farms_esd, window_starts
from tests.reference import farms_alpha


@pytest.mark.parametrize("shape", [(384, 384), (1536, 384), (384, 1536), (300, 700)])
def test_farms_alpha_is_the_papers_procedure(shape):
    W = np.random.default_rng(sum(shape)).standard_t(4, size=shape).astype(np.float32)
    res = farms_esd(W)
    assert res.alpha == pytest.approx(farms_alpha(W), rel=1e-9)
    assert (res.rows, res.cols) == (100, 200) and res.n_windows <= 100
    # its sliding-window mode
    slide = farms_esd(W, windows_per_dim=None, stride=40)
    assert slide.alpha == pytest.approx(farms_alpha(W, sampling_ops_per_dim=None,
                                                    step_size=40), rel=1e-9)


def test_farms_removes_the_aspect_ratio_bias():
    # i.i.d. Gaussian matrices of five aspect ratios: the Hill alpha of the full ESD moves
    # with Q (the MP bulk's width), FARMS's does not (every window is 100 x 200)
    shapes = [(2000, 200), (1000, 250), (600, 600), (250, 1000), (4000, 400)]
    full, farms = [], []
    for k, shape in enumerate(shapes):
        G = np.random.default_rng(k).standard_normal(shape)
        full.append(rmt.alpha_hill(rmt.esd(G)).alpha)
        farms.append(farms_esd(G).alpha)
    assert max(full) - min(full) > 2.0      # 2.1 ... 5.0 measured
    assert max(farms) - min(farms) < 0.05   # 2.69 ... 2.71 measured


def test_window_grid_and_small_matrices():
    assert window_starts(1536, 100) == [0, 159, 318, 477, 636, 795, 954, 1113, 1272, 1431]
    assert window_starts(384, 200)[-1] == 180 and window_starts(200, 200) == [0]
    assert window_starts(100, 20, stride=40) == [0, 40, 80]
    small = farms_esd(np.random.default_rng(0).standard_normal((150, 160)))
    assert (small.rows, small.cols) == (80, 160)          # largest 1:2 window that fits
    tall = farms_esd(np.random.default_rng(0).standard_normal((500, 120)))
    assert (tall.rows, tall.cols) == (200, 100)           # laid along the long axis
    with pytest.raises(DataError, match="too small"):
        farms_esd(np.ones((3, 3)))
    with pytest.raises(ValueError, match="aspect"):
        farms_esd(np.ones((300, 300)), aspect=0.5)


def test_conv_slices_are_pooled_and_bad_entries_named():
    K = np.random.default_rng(1).standard_normal((256, 220, 3, 3))
    res = farms_esd(K)
    assert res.n_windows == 9 * farms_esd(K[:, :, 0, 0]).n_windows
    pooled = np.sort(np.concatenate([farms_esd(K[:, :, i, j], normalize=False).evals
                                     for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(farms_esd(K, normalize=False).evals, pooled, rtol=1e-12)
    bad = np.ones((300, 300))
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match=r"layer\.w"):
        farms_esd(bad, name="layer.w")


def test_analyze_farms_and_the_gpu_twin(numpy_as_cupy):
    W = np.random.default_rng(2).standard_normal((400, 300)).astype(np.float32)
    df = rmt.analyze({"w": W}, farms=True, progress=False, device="cpu")
    assert df["alpha_farms"].iloc[0] == pytest.approx(farms_alpha(W), rel=1e-9)
    assert df["farms_shape"].iloc[0] == "100x200" and df["farms_windows"].iloc[0] == 100
    gpu = farms_esd(W, device="gpu")
    np.testing.assert_allclose(gpu.evals, farms_esd(W, device="cpu").evals, rtol=1e-12)
    assert numpy_as_cupy.get("eigvalsh", 0) >= 1

"""rmt.vectors: WeightWatcher's 12 eigenvector columns reproduced, the metrics' closed
forms on coordinate and random vectors, planted spikes located in the right coordinates."""

from __future__ import annotations

import numpy as np
import pytest

import rmt
from rmt.vectors import discrete_entropy, eigenvectors, localization_ratio, participation_ratio
from tests.reference import ww_vector_columns


@pytest.mark.parametrize("shape", [(300, 120), (80, 200), (150, 150), (16, 12, 3, 3),
                                   (12, 12, 3, 3)])
def test_weightwatchers_vector_columns_are_reproduced(shape):
    W = np.random.default_rng(len(shape)).standard_t(3, size=shape)  # heavy-tailed entries
    ev = rmt.esd(W)
    xmin = float(np.quantile(ev, 0.8))
    df = rmt.analyze({"w": W}, vectors=True, progress=False)
    ref = ww_vector_columns(W, xmin)
    got = eigenvectors(W, xmin=xmin)
    for col, value in ref.items():
        region, how, metric = col.split("_", 2)
        assert got.stat(region, metric, how) == pytest.approx(value, rel=1e-9, abs=1e-12), col
    # the table's tail is the power-law fit's (its num_pl_spikes largest eigenvalues), and
    # its ESD comes from the same decomposition (syevd with vectors): equal to esd's to
    # rounding
    by_rank = eigenvectors(W, n_tail=int(df["num_pl_spikes"].iloc[0]))
    np.testing.assert_allclose(by_rank.evals, ev, rtol=0, atol=1e-12 * ev[-1])
    for col in ref:
        region, how, metric = col.split("_", 2)
        assert df[col].iloc[0] == by_rank.stat(region, metric, how), col


def test_metric_closed_forms():
    M = 400
    coord = np.eye(M)[:, :3]
    flat = np.full((M, 1), 1 / np.sqrt(M))
    assert np.allclose(localization_ratio(coord), 1) and np.allclose(participation_ratio(coord), 1)
    assert localization_ratio(flat)[0] == pytest.approx(M)
    assert participation_ratio(flat)[0] == pytest.approx(M**0.25)
    g = np.random.default_rng(0).standard_normal((M, 2000))
    g /= np.linalg.norm(g, axis=0)
    # Gaussian unit vectors: E|g|/max... ‖v‖₁ ≈ √(2M/π); Σv⁴ ≈ 3/M
    assert np.mean(np.abs(g).sum(axis=0)) == pytest.approx(np.sqrt(2 * M / np.pi), rel=0.01)
    assert np.mean(participation_ratio(g) ** -4) == pytest.approx(3 / M, rel=0.02)
    # the vectorised histogram entropy is numpy.histogram's, column by column
    for j in range(0, 2000, 97):
        a = np.abs(g[:, j]) - np.abs(g[:, j]).mean()
        p = np.histogram(a, bins=100, density=True)[0] + 1e-10
        p = p / np.sqrt(2 * np.pi) / np.sum(p / np.sqrt(2 * np.pi))
        assert discrete_entropy(g[:, [j]])[0] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-12)


@pytest.mark.parametrize("wide", [False, True])
def test_a_planted_spike_is_located(wide):
    rng = np.random.default_rng(3)
    out_dim, in_dim = (200, 500) if wide else (500, 200)
    W = rng.standard_normal((out_dim, in_dim))
    u, v = np.zeros(out_dim), np.zeros(in_dim)
    u[[11, 42]] = [0.8, 0.6]          # the spike lives on outputs 11, 42 and inputs 7, 150
    v[[7, 150]] = [0.6, -0.8]
    W += 100 * np.outer(u, v)
    res = eigenvectors(W, n_spikes=1)
    top = res.spikes[0]
    assert {i for i, _ in top.top_out[:2]} == {11, 42}
    assert {i for i, _ in top.top_in[:2]} == {7, 150}
    assert top.ipr_in > 0.3 and top.ipr_out > 0.3
    assert top.eigenvalue == pytest.approx(rmt.esd(W)[-1], rel=1e-10)
    df = rmt.analyze({"w": W}, vectors=True, progress=False)
    assert df["spike_out"].iloc[0] in (11, 42) and df["spike_in"].iloc[0] in (7, 150)
    # a pure-noise layer has no MP spike, so no spike columns
    noise = rmt.analyze({"n": rng.standard_normal((300, 100))}, vectors=True, progress=False)
    assert noise["num_spikes"].iloc[0] == 0 and np.isnan(noise["spike_ipr_in"].iloc[0])


def test_vectors_through_the_gpu_twin(numpy_as_cupy):
    W = np.random.default_rng(5).standard_normal((150, 60)).astype(np.float32)
    cpu, gpu = eigenvectors(W, xmin=1.0, device="cpu"), eigenvectors(W, xmin=1.0, device="gpu")
    np.testing.assert_allclose(gpu.evals, cpu.evals, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu.loc_ratio, cpu.loc_ratio, rtol=1e-9)
    assert numpy_as_cupy.get("eigh", 0) >= 1


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float8_e4m3fn"])
@pytest.mark.parametrize("transposed", [False, True])
def test_products_decode_any_dtype_and_strides_exactly(dtype, transposed):
    import ml_dtypes

    from rmt.vectors import _times

    rng = np.random.default_rng(21)
    stored = rng.standard_normal((300, 70)).astype(getattr(ml_dtypes, dtype, dtype))
    A = stored.T if transposed else stored
    V = rng.standard_normal((A.shape[1], 3))
    expected = A.astype(np.float64) @ V
    np.testing.assert_allclose(_times(A, V, block_rows=64), expected, rtol=1e-12, atol=1e-12)


def test_top_coordinates_are_the_largest_first_ties_by_index():
    from rmt.vectors import _top

    vec = np.array([0.5, -2.0, 2.0, 0.1, -0.5, 2.0, 0.0])
    order = np.argsort(-np.abs(vec), kind="stable")
    for n in range(1, vec.size + 2):
        assert _top(vec, n) == tuple((int(i), float(vec[i])) for i in order[:n])

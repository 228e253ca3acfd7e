"""rmt.subspaces against dense SVDs: intruder dimensions as Shuttleworth et al.'s code counts
them, principal angles as scipy computes them, WeightWatcher's CKA as it computes it."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import scipy.linalg

from rmt.subspaces import compare_subspaces, intruder_dimensions, singular_vectors, ww_cka
from tests.reference import intruders_official, ww_cka_distance

SHAPES = [(300, 120), (90, 250), (140, 140)]  # tall (out > in), wide, square


def _fine_tune(shape, seed, rank_one=0.0):
    """A base matrix with a decaying spectrum, and a fine-tune of it: a small dense update,
    plus (optionally) a strong rank-one update in new directions."""
    rng = np.random.default_rng(seed)
    out, inp = shape
    U = np.linalg.qr(rng.standard_normal((out, min(shape))))[0]
    V = np.linalg.qr(rng.standard_normal((inp, min(shape))))[0]
    s = 10.0 * np.arange(1, min(shape) + 1) ** -0.7
    W0 = (U * s) @ V.T
    W1 = W0 + 0.02 * rng.standard_normal(shape)
    if rank_one:
        u, v = rng.standard_normal(out), rng.standard_normal(inp)
        W1 += rank_one * np.outer(u / np.linalg.norm(u), v / np.linalg.norm(v))
    return W0, W1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.3, 0.5, 0.9])
def test_intruders_are_counted_as_the_papers_code_counts_them(shape, eps):
    W0, W1 = _fine_tune(shape, seed=shape[0], rank_one=6.0)
    got = intruder_dimensions(W0, W1, k=10, epsilon=eps)
    want, best = intruders_official(W0, W1, eps, k=10)
    # the decision is the same wherever the cosine is not within rounding of eps
    assert np.min(np.abs(best - eps)) > 1e-9
    assert got.intruder_index == tuple(int(i) for i in want)
    want_sv = np.linalg.svd(W1, compute_uv=False)[want]
    np.testing.assert_allclose(got.intruder_sv, want_sv, rtol=1e-10)
    np.testing.assert_allclose(got.intruder_max_cos, best[want], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_planted_rank_one_update_is_an_intruder_and_noise_is_not(shape):
    W0, W1 = _fine_tune(shape, seed=7, rank_one=20.0)  # σ = 20 > every σ of W0: index 0
    res = intruder_dimensions(W0, W1, k=10, epsilon=0.5)
    assert res.intruder_index == (0,)
    assert res.intruder_sv[0] == pytest.approx(np.linalg.svd(W1, compute_uv=False)[0])
    W0, W1 = _fine_tune(shape, seed=7)
    assert intruder_dimensions(W0, W1, k=10, epsilon=0.5).n_intruders == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_principal_angles_match_scipy_on_dense_svds(shape):
    W0, W1 = _fine_tune(shape, seed=3, rank_one=4.0)
    k = 8
    got = compare_subspaces(singular_vectors(W0), singular_vectors(W1), k=k)
    U0, _, V0t = np.linalg.svd(W0, full_matrices=False)
    U1, _, V1t = np.linalg.svd(W1, full_matrices=False)
    for side, X, Y in (("left", U0[:, :k], U1[:, :k]), ("right", V0t[:k].T, V1t[:k].T)):
        theta = scipy.linalg.subspace_angles(X, Y)
        assert getattr(got, f"{side}_overlap") == pytest.approx(np.mean(np.cos(theta) ** 2),
                                                                 abs=1e-10)
        assert getattr(got, f"{side}_angle_max") == pytest.approx(np.degrees(theta.max()),
                                                                   abs=1e-6)
    same = compare_subspaces(singular_vectors(W0), singular_vectors(W0), k=k)
    assert same.left_overlap == pytest.approx(1) and same.right_overlap == pytest.approx(1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float64, ml_dtypes.bfloat16])
def test_ww_cka_is_weightwatchers_formula(shape, dtype):
    W0, W1 = _fine_tune(shape, seed=11, rank_one=3.0)
    A, B = W0.astype(dtype), W1.astype(dtype)
    want = ww_cka_distance(A.astype(np.float64), B.astype(np.float64))
    assert ww_cka(singular_vectors(A), singular_vectors(B)) == pytest.approx(want, rel=1e-10)


def test_rank_deficient_base_uses_its_nonzero_singular_vectors_only():
    rng = np.random.default_rng(5)
    W0 = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 60))  # rank 5, tall
    W1 = W0 + 0.01 * rng.standard_normal(W0.shape)
    res = intruder_dimensions(W0, W1, k=10)
    assert res.k == 5  # capped by the base's rank
    assert res.n_intruders == 0
    with pytest.raises(ValueError, match="epsilon"):
        intruder_dimensions(W0, W1, epsilon=0)
    with pytest.raises(ValueError, match="shapes differ"):
        intruder_dimensions(W0, W1.T)


@pytest.mark.parametrize("M, k", [(2, 1), (3, 3), (60, 5), (257, 10)])
def test_eigh_top_matches_a_full_eigendecomposition(M, k):
    from rmt.kernels import cpu

    A = np.random.default_rng(M).standard_normal((2 * M, M))
    G = A.T @ A
    w, V = cpu.eigh_top(G, k)
    w0, V0 = np.linalg.eigh(G)
    np.testing.assert_allclose(w, w0, rtol=0, atol=1e-13 * w0[-1])
    assert V.shape == (M, k)
    # the same vectors up to sign
    np.testing.assert_allclose(np.abs(np.sum(V * V0[:, -k:], axis=0)), 1, atol=1e-10)

"""The batched small-matrix eigensolver against LAPACK (``numpy.linalg.eigvalsh``)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from rmt import config
from rmt.kernels import cpu
from rmt.kernels._small_eigvalsh import LANES, eigvalsh_stack

TOL = 1e-13  # of max |λ| per matrix; LAPACK's own error is ~n·eps·‖G‖


def _assert_matches_lapack(G: np.ndarray) -> None:
    got = eigvalsh_stack(G)
    ref = np.linalg.eigvalsh(G, UPLO="L")
    assert got.shape == ref.shape
    assert np.all(np.diff(got, axis=1) >= 0)
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), np.finfo(float).tiny)
    np.testing.assert_array_less(np.abs(got - ref) / scale, TOL)


def _grams(rng: np.random.Generator, count: int, n: int, cols: int) -> np.ndarray:
    X = rng.standard_normal((count, n, cols))
    X[1::2] *= rng.pareto(1.5, (count // 2, n, 1))  # heavy-tailed rows: wide spectra
    return X @ X.transpose(0, 2, 1)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 33, 100, 200, 301])
def test_random_grams_match_lapack(n):
    rng = np.random.default_rng(n)
    _assert_matches_lapack(_grams(rng, 2 * LANES + 3, n, 2 * n))  # a partial last group


def test_indefinite_and_structured_matrices_match_lapack():
    rng = np.random.default_rng(7)
    n = 40
    S = rng.standard_normal((6, n, n))
    cases = [
        S + S.transpose(0, 2, 1),                                   # indefinite
        np.stack([np.diag(rng.standard_normal(n))] * 3),            # diagonal: e = 0
        np.stack([np.eye(n) * 3.0, np.zeros((n, n))]),              # repeated, zero
        np.stack([np.diag(10.0 ** -np.arange(n, dtype=float))]),    # graded
        # Wilkinson W⁺: pairs of eigenvalues agreeing to many digits
        np.stack([np.diag(np.abs(np.arange(n) - (n - 1) / 2)) + np.eye(n, k=1)
                  + np.eye(n, k=-1)]),
    ]
    X = rng.standard_normal((4, n, 2 * n))
    X[:, n // 2:] = 0.0                                             # rank n/2: half zero
    cases.append(X @ X.transpose(0, 2, 1))
    X = rng.standard_normal((4, n, 3)) @ rng.standard_normal((4, 3, 2 * n))
    cases.append(X @ X.transpose(0, 2, 1))                          # rank 3
    for G in cases:
        _assert_matches_lapack(np.ascontiguousarray(G, dtype=np.float64))


@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1e30, 1e200])
def test_extreme_scales_are_exact_up_to_rounding(scale):
    # squared entries would under- or overflow without the power-of-two scaling
    rng = np.random.default_rng(3)
    G = _grams(rng, 5, 30, 60)
    _assert_matches_lapack(G * scale)


def test_only_the_lower_triangle_is_read_and_the_input_is_kept():
    rng = np.random.default_rng(4)
    G = _grams(rng, 9, 25, 50)
    ref = np.linalg.eigvalsh(G)
    garbage = G.copy()
    upper = np.triu_indices(25, 1)
    garbage[:, upper[0], upper[1]] = np.nan
    before = garbage.copy()
    np.testing.assert_allclose(eigvalsh_stack(garbage), ref, rtol=0,
                               atol=TOL * np.abs(ref).max())
    np.testing.assert_array_equal(garbage, before)


def test_a_non_finite_matrix_is_lapacks_to_reject():
    # handed to LAPACK, which refuses it as it did before this solver existed (callers
    # check finiteness first and name the layer)
    rng = np.random.default_rng(5)
    G = _grams(rng, 10, 12, 24)
    G[3, 5, 2] = np.nan
    G[7, 0, 0] = np.inf
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.eigvalsh(G[[3, 7]], UPLO="L")
    with pytest.raises(np.linalg.LinAlgError):
        eigvalsh_stack(G)


def test_thread_count_does_not_change_the_bits():
    rng = np.random.default_rng(6)
    G = _grams(rng, 4 * LANES, 64, 128)
    import numba

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = eigvalsh_stack(G)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = eigvalsh_stack(G)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def test_cpu_eigvalsh_uses_it_for_small_float64_stacks_only(monkeypatch):
    from rmt.kernels import _small_eigvalsh

    calls = []
    real = _small_eigvalsh.eigvalsh_stack
    monkeypatch.setattr(_small_eigvalsh, "eigvalsh_stack",
                        lambda G: calls.append(G.shape) or real(G))
    rng = np.random.default_rng(8)
    small = _grams(rng, 3, config.SMALL_EIGVALSH_MAX_N, 8)
    with threadpool_limits(1):
        np.testing.assert_allclose(cpu.eigvalsh(small), np.linalg.eigvalsh(small), rtol=0,
                                   atol=TOL * np.abs(small).max())
        cpu.eigvalsh(_grams(rng, 2, config.SMALL_EIGVALSH_MAX_N + 1, 4))
        cpu.eigvalsh(small.astype(np.float32))
    assert calls == [small.shape]


def test_rejects_what_it_cannot_solve():
    with pytest.raises(ValueError, match="float64"):
        eigvalsh_stack(np.zeros((2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="stack"):
        eigvalsh_stack(np.zeros((3, 3)))
    assert eigvalsh_stack(np.zeros((0, 4, 4))).shape == (0, 4)


def test_unconverged_lanes_are_reported():
    # the solver hands a lane back to LAPACK when its QL iteration runs out of sweeps
    from rmt.kernels._small_eigvalsh import _ql_lanes

    rng = np.random.default_rng(9)
    d = rng.standard_normal((30, LANES))
    e2 = rng.random((30, LANES)) + 0.5
    assert _ql_lanes(d.copy(), e2.copy(), 1).all()
    assert not _ql_lanes(d, e2, 30 * 30).any()


def test_tridiagonal_lanes_match_lapack_and_refuse_non_finite():
    from scipy.linalg import eigvalsh_tridiagonal

    from rmt.kernels._small_eigvalsh import tridiagonal_eigvalsh

    rng = np.random.default_rng(10)
    d = rng.standard_normal((LANES + 3, 60)) * 10.0 ** rng.integers(-100, 100, (LANES + 3, 1))
    e = rng.standard_normal((LANES + 3, 59)) * np.abs(d[:, :1])
    got = tridiagonal_eigvalsh(d, e)  # two groups, every scale
    for k in range(d.shape[0]):
        ref = eigvalsh_tridiagonal(d[k], e[k])
        np.testing.assert_array_less(np.abs(got[k] - ref), TOL * np.abs(ref).max())
    d[2, 7] = np.nan  # handed to LAPACK, which refuses it
    with pytest.raises(ValueError, match="NaN"):
        tridiagonal_eigvalsh(d, e)

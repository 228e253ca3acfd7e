"""rmt.kernels._lapack: SciPy's own BLAS/LAPACK routines called without the GIL — the same
bits as SciPy's wrappers, and another thread runs while they do."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import scipy.linalg
from scipy.linalg import blas
from threadpoolctl import threadpool_limits

from rmt.kernels import _lapack, cpu


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(700, 90), (90, 700), (7, 3), (1, 1)])
def test_gram_and_eigensolvers_equal_scipys_wrappers_bit_for_bit(dtype, shape):
    W = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    syrk = blas.dsyrk if dtype == np.float64 else blas.ssyrk
    for transpose in (False, True):
        A = W.T if transpose else W
        reference = np.tril(syrk(1.0, np.asfortranarray(A), trans=1, lower=1))
        np.testing.assert_array_equal(np.tril(cpu.gram(W, transpose=transpose, dtype=dtype)),
                                      reference)
        G = np.asfortranarray(reference)
        np.testing.assert_array_equal(
            cpu.eigvalsh(G.copy(order="F")),
            scipy.linalg.eigvalsh(G.copy(order="F"), driver="evd", check_finite=False))
        w, V = cpu.eigh(G.copy(order="F"))
        w_ref, V_ref = scipy.linalg.eigh(G.copy(order="F"), driver="evd", check_finite=False)
        np.testing.assert_array_equal(w, w_ref)
        np.testing.assert_array_equal(V, V_ref)
        full = reference + np.tril(reference, -1).T  # C order: its upper triangle is read
        np.testing.assert_array_equal(  # (both overwrite what they are given: copies)
            cpu.eigvalsh(np.array(full, order="C")),
            scipy.linalg.eigvalsh(np.array(full, order="C").T, lower=False, driver="evd",
                                  check_finite=False))


def test_blocked_gram_accumulates_like_one_call():
    W = np.random.default_rng(1).standard_normal((1000, 60)).astype(np.float32)
    whole = np.tril(cpu.gram(W.astype(np.float64)))
    np.testing.assert_allclose(np.tril(cpu.gram(W, block_rows=64)), whole, rtol=1e-13,
                               atol=1e-12)


def test_empty_and_unconverged_inputs():
    w, V = _lapack.syevd(np.zeros((0, 0), order="F"), True, vectors=True)
    assert w.shape == (0,) and V is not None and V.shape == (0, 0)
    with pytest.raises(ValueError, match="Fortran"):
        _lapack.syevd(np.zeros((3, 4)), True, vectors=False)
    with pytest.raises(ValueError, match="Fortran"):
        _lapack.syrk(np.zeros((3, 4)), True, np.zeros((4, 4), order="F"), 0.0)


@pytest.mark.parametrize("solve_one", [cpu.eigvalsh, lambda G: cpu.eigh_top(G, 10)],
                         ids=["syevd", "eigh_top"])
def test_other_threads_run_while_lapack_does(solve_one):
    # A thread holding the GIL for a whole eigensolve stalls this loop for about as long
    # (SciPy's own wrapper: 58 ms of a 70 ms solve); with the GIL released the loop's
    # longest pause stays far below one solve. One BLAS thread, so that the solve and the
    # loop need two cores, not three (on a loaded machine the scheduler's own pauses grow
    # with the threads waiting).
    G = np.asfortranarray(np.random.default_rng(2).standard_normal((900, 900)))
    G = np.asfortranarray(G @ G.T)
    one_solve = np.inf
    with threadpool_limits(1):
        for _ in range(3):
            start = time.perf_counter()
            solve_one(G.copy(order="F"))
            one_solve = min(one_solve, time.perf_counter() - start)
        done = threading.Event()

        def solve() -> None:
            for _ in range(3):
                solve_one(G.copy(order="F"))
            done.set()

        worker = threading.Thread(target=solve)
        worker.start()
        longest, last = 0.0, time.perf_counter()
        while not done.is_set():
            now = time.perf_counter()
            longest, last = max(longest, now - last), now
        worker.join()
    assert one_solve > 0.02  # long enough to tell the two cases apart
    assert longest < one_solve / 3, (longest, one_solve)


def _eigh_top_through_scipys_wrappers(G: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same routines through SciPy's f2py wrappers (sytrd, sterf and stemr by
    eigh_tridiagonal, ormqr): the reference the GIL-free ``eigh_top`` must equal."""
    lapack = scipy.linalg.lapack
    M = G.shape[0]
    lwork = int(lapack.dsytrd_lwork(M, lower=1)[0])
    c, d, e, tau, _ = lapack.dsytrd(np.array(G, order="F"), lower=1, lwork=max(1, lwork))
    w = scipy.linalg.eigh_tridiagonal(d, e, eigvals_only=True, lapack_driver="sterf")
    _, Z = scipy.linalg.eigh_tridiagonal(d, e, select="i", select_range=(M - k, M - 1),
                                         lapack_driver="stemr")
    Z = np.asfortranarray(Z)
    lwork = int(lapack.dormqr("L", "N", c[1:, :-1], tau, Z[1:, :], -1)[1][0])
    Z[1:, :] = lapack.dormqr("L", "N", c[1:, :-1], tau, Z[1:, :], max(1, lwork))[0]
    return w, Z


@pytest.mark.parametrize("M, k", [(3, 1), (60, 60), (200, 7), (384, 10)])
def test_eigh_top_equals_the_same_routines_through_scipy_bit_for_bit(M, k):
    X = np.random.default_rng(M).standard_normal((M, 2 * M))
    G = X @ X.T
    w, V = cpu.eigh_top(G, k)
    w_ref, V_ref = _eigh_top_through_scipys_wrappers(G, k)
    np.testing.assert_array_equal(w, w_ref)
    np.testing.assert_array_equal(V, V_ref)
    full_w, full_V = np.linalg.eigh(G)  # and it is the top of the spectrum
    np.testing.assert_allclose(w, full_w, rtol=0, atol=1e-12 * full_w[-1])
    np.testing.assert_allclose(np.abs(V), np.abs(full_V[:, -k:]), atol=1e-10)
    with pytest.raises(ValueError, match="k"):
        _lapack.eigh_top(np.asfortranarray(G), 0)

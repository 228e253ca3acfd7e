"""BLAS ``syrk`` and LAPACK ``syevd`` called without holding the GIL.

SciPy's f2py wrappers (``scipy.linalg.blas``, ``scipy.linalg.lapack``, and so
``scipy.linalg.eigh``) keep the GIL while the routine runs — a 70 ms ``syevd`` stalled
another Python thread for 58 ms, a 210 ms ``dsyrk`` for 158 ms — so layers analysed in
threads of one process (``rmt.analyze(n_jobs=k)``) would take turns on it. (NumPy's
``linalg`` releases it, but has no ``syrk`` and no in-place solve.) These call the very
same routines — SciPy's ``cython_blas``/``cython_lapack`` exports, the library SciPy's
own wrappers use — through ``ctypes``, which releases the GIL for the call: the same bits
out, and other threads run meanwhile.

Precision: exactly that of LAPACK ``syevd`` and BLAS ``syrk`` in the array's dtype
(float32 or float64); the tests check the results equal SciPy's wrappers bit for bit.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

_P = ctypes.POINTER
_INT = ctypes.c_int  # SciPy's cython_blas/cython_lapack use 32-bit (LP64) integers
_CHAR = ctypes.c_char
_REAL = {np.dtype(np.float64): ctypes.c_double, np.dtype(np.float32): ctypes.c_float}
_PREFIX = {np.dtype(np.float64): "d", np.dtype(np.float32): "s"}


@functools.cache
def _routine(module: str, name: str, dtype: np.dtype) -> Any:
    """A ctypes function for ``scipy.linalg.<module>``'s ``<d|s><name>`` (a C function
    returning void; every argument a pointer, Fortran style)."""
    from numba.extending import get_cython_function_address

    p_real, p_int, p_char = _P(_REAL[dtype]), _P(_INT), _P(_CHAR)
    if name == "syrk":  # uplo, trans, n, k, alpha, a, lda, beta, c, ldc
        argtypes: list[Any] = [p_char, p_char, p_int, p_int, p_real, p_real, p_int, p_real,
                               p_real, p_int]
    else:  # syevd: jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info
        argtypes = [p_char, p_char, p_int, p_real, p_int, p_real, p_real, p_int, p_int, p_int,
                    p_int]
    address = get_cython_function_address(f"scipy.linalg.{module}", _PREFIX[dtype] + name)
    return ctypes.CFUNCTYPE(None, *argtypes)(address)


def _ptr(a: np.ndarray) -> Any:
    return a.ctypes.data_as(_P(_REAL[a.dtype] if a.dtype != np.int32 else _INT))


def syrk(a: np.ndarray, trans: bool, c: np.ndarray, beta: float) -> np.ndarray:
    """``c ← a·aᵀ + beta·c`` (``trans`` False) or ``aᵀ·a + beta·c`` (True), lower triangle.

    Parameters
    ----------
    a : numpy.ndarray, 2-D, Fortran-contiguous, float32 or float64
    trans : bool
    c : numpy.ndarray, (n, n), Fortran-contiguous, same dtype; updated in place
    beta : float
        0 ignores ``c``'s contents.

    Returns
    -------
    numpy.ndarray
        ``c``.
    """
    if not (a.flags.f_contiguous and c.flags.f_contiguous and a.dtype == c.dtype):
        raise ValueError("syrk needs Fortran-contiguous a and c of one dtype")
    n = c.shape[0]
    k = a.shape[0] if trans else a.shape[1]
    if n == 0:
        return c
    real = _REAL[a.dtype]
    B = ctypes.byref
    _routine("cython_blas", "syrk", a.dtype)(
        B(_CHAR(b"L")), B(_CHAR(b"T" if trans else b"N")), B(_INT(n)), B(_INT(k)),
        B(real(1.0)), _ptr(a), B(_INT(max(1, a.shape[0]))), B(real(beta)), _ptr(c),
        B(_INT(max(1, n))))
    return c


def syevd(a: np.ndarray, lower: bool, vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Eigenvalues (ascending) and, with ``vectors``, eigenvectors of a symmetric matrix.

    Parameters
    ----------
    a : numpy.ndarray, (n, n), Fortran-contiguous, float32 or float64
        Only the ``lower`` (or upper) triangle is read; overwritten (by the eigenvectors
        when ``vectors``).
    lower : bool
    vectors : bool

    Returns
    -------
    w : numpy.ndarray, (n,)
    V : numpy.ndarray or None
        ``a`` itself, holding the eigenvectors as columns, when ``vectors``.

    Raises
    ------
    numpy.linalg.LinAlgError
        LAPACK did not converge (``info > 0``).
    """
    if not a.flags.f_contiguous or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError("syevd needs a square Fortran-contiguous matrix")
    n = a.shape[0]
    w = np.empty(n, dtype=a.dtype)
    if n == 0:
        return w, (a if vectors else None)
    real, B = _REAL[a.dtype], ctypes.byref
    fn = _routine("cython_lapack", "syevd", a.dtype)
    head = (B(_CHAR(b"V" if vectors else b"N")), B(_CHAR(b"L" if lower else b"U")), B(_INT(n)),
            _ptr(a), B(_INT(n)), _ptr(w))
    work_size, iwork_size, info = real(0), _INT(0), _INT(0)
    fn(*head, B(work_size), B(_INT(-1)), B(iwork_size), B(_INT(-1)), B(info))  # sizes
    # LAPACK's documented minimums too: a float32 size query rounds sizes above 2**24
    lwork = max(int(work_size.value), 1 + 6 * n + 2 * n * n if vectors else 2 * n + 1)
    liwork = max(int(iwork_size.value), 3 + 5 * n if vectors else 1)
    work, iwork = np.empty(lwork, dtype=a.dtype), np.empty(liwork, dtype=np.int32)
    fn(*head, _ptr(work), B(_INT(lwork)), _ptr(iwork), B(_INT(liwork)), B(info))
    if info.value > 0:
        raise np.linalg.LinAlgError(f"syevd did not converge (info={info.value})")
    if info.value < 0:  # pragma: no cover - an argument rmt passes is wrong
        raise ValueError(f"syevd: argument {-info.value} is invalid")
    return w, (a if vectors else None)

"""BLAS ``syrk`` and LAPACK ``syevd``, ``sytrd``, ``sterf``, ``stemr``, ``ormqr`` called
without holding the GIL.

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


#: Argument kinds of each routine, in order: c character, i integer, r real (all pointers,
#: Fortran style; a LAPACK LOGICAL is an integer).
_SIGNATURES = {
    "syrk": "cciirrirri",      # uplo, trans, n, k, alpha, a, lda, beta, c, ldc
    "syevd": "ccirirriiii",    # jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info
    "sytrd": "cirirrrrii",     # uplo, n, a, lda, d, e, tau, work, lwork, info
    "sterf": "irri",           # n, d, e, info
    # jobz, range, n, d, e, vl, vu, il, iu, m, w, z, ldz, nzc, isuppz, tryrac, work, lwork,
    # iwork, liwork, info
    "stemr": "cci" + "rrrr" + "iii" + "rri" + "iii" + "riiii",
    "ormqr": "cciii" + "rirri" + "rii",  # side, trans, m, n, k, a, lda, tau, c, ldc,
                                         # work, lwork, info
}


@functools.cache
def _routine(module: str, name: str, dtype: np.dtype) -> Any:
    """A ctypes function for ``scipy.linalg.<module>``'s ``<d|s><name>`` (a C function
    returning void; every argument a pointer, Fortran style)."""
    from numba.extending import get_cython_function_address

    kinds: dict[str, Any] = {"c": _P(_CHAR), "i": _P(_INT), "r": _P(_REAL[dtype])}
    argtypes: list[Any] = [kinds[k] for k in _SIGNATURES[name]]
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


def _check(name: str, info: Any) -> None:
    if info.value > 0:
        raise np.linalg.LinAlgError(f"{name} did not converge (info={info.value})")
    if info.value < 0:  # pragma: no cover - an argument rmt passes is wrong
        raise ValueError(f"{name}: argument {-info.value} is invalid")


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
    _check("syevd", info)
    return w, (a if vectors else None)


def tridiagonalise(a: np.ndarray, lower: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Householder reduction of a symmetric matrix to tridiagonal form (``sytrd``).

    Parameters
    ----------
    a : numpy.ndarray, (n, n), Fortran-contiguous, float64 or float32
        Its ``lower`` (or upper) triangle is read; overwritten by the reflectors.
    lower : bool, default True

    Returns
    -------
    d : numpy.ndarray, (n,)
        The diagonal.
    e : numpy.ndarray, (n,)
        The sub-diagonal in its first n − 1 entries (the last is 0: ``stemr`` wants n).
    tau : numpy.ndarray, (max(n − 1, 1),)
        The reflectors' scalars.
    """
    if not a.flags.f_contiguous or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError("tridiagonalise needs a square Fortran-contiguous matrix")
    n, dt = a.shape[0], a.dtype
    real, B = _REAL[dt], ctypes.byref
    info, size = _INT(0), real(0)
    d, e, tau = np.empty(n, dt), np.zeros(n, dt), np.empty(max(n - 1, 1), dt)
    if n == 0:
        return d, e, tau
    sytrd = _routine("cython_lapack", "sytrd", dt)
    head = (B(_CHAR(b"L" if lower else b"U")), B(_INT(n)), _ptr(a), B(_INT(n)), _ptr(d), _ptr(e),
            _ptr(tau))
    sytrd(*head, B(size), B(_INT(-1)), B(info))  # workspace size
    lwork = max(int(size.value), n, 1)
    work = np.empty(lwork, dt)
    sytrd(*head, _ptr(work), B(_INT(lwork)), B(info))
    _check("sytrd", info)
    return d, e, tau


def eigh_top(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every eigenvalue and the top-k eigenvectors of a symmetric matrix (lower triangle).

    ``sytrd`` (Householder tridiagonalisation), ``sterf`` (every eigenvalue), ``stemr``
    (the top k eigenvectors of the tridiagonal matrix, as ``scipy.linalg.eigh_tridiagonal``
    calls it) and ``ormqr`` (the reflectors applied to those k vectors) — the routines
    SciPy's wrappers call, with the same arguments, so the same bits, without the GIL.

    Parameters
    ----------
    a : numpy.ndarray, (n, n), Fortran-contiguous, float64 or float32
        Its lower triangle is read; overwritten by the reflectors.
    k : int
        1 ≤ k ≤ n.

    Returns
    -------
    w : numpy.ndarray, (n,)
        Every eigenvalue, ascending.
    V : numpy.ndarray, (n, k), Fortran order
        Unit eigenvectors of ``w[-k:]`` as columns, ascending like them.

    Raises
    ------
    numpy.linalg.LinAlgError
        ``sterf`` or ``stemr`` did not converge.
    """
    if not a.flags.f_contiguous or a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError("eigh_top needs a square Fortran-contiguous matrix")
    n = a.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"eigh_top needs 1 <= k <= n, got k={k}, n={n}")
    real, B, dt = _REAL[a.dtype], ctypes.byref, a.dtype
    info, size = _INT(0), real(0)
    d, e, tau = tridiagonalise(a)
    # every eigenvalue: sterf on copies (it overwrites d and e)
    w, scratch = d.copy(), e.copy()
    _routine("cython_lapack", "sterf", dt)(B(_INT(n)), _ptr(w), _ptr(scratch), B(info))
    _check("sterf", info)
    # the top k eigenvectors of the tridiagonal matrix (on copies: stemr overwrites them)
    dd, ee = d.copy(), e.copy()
    found, wk = _INT(0), np.empty(n, dt)
    Z = np.zeros((n, k), dt, order="F")
    isuppz = np.empty(2 * max(k, 1), np.int32)
    stemr = _routine("cython_lapack", "stemr", dt)
    iwsize = _INT(0)
    args = (B(_CHAR(b"V")), B(_CHAR(b"I")), B(_INT(n)), _ptr(dd), _ptr(ee), B(real(0.0)),
            B(real(0.0)), B(_INT(n - k + 1)), B(_INT(n)), B(found), _ptr(wk), _ptr(Z),
            B(_INT(n)), B(_INT(k)), _ptr(isuppz), B(_INT(1)))
    stemr(*args, B(size), B(_INT(-1)), B(iwsize), B(_INT(-1)), B(info))
    _check("stemr", info)
    lwork, liwork = max(int(size.value), 18 * n), max(int(iwsize.value), 10 * n)
    work, iwork = np.empty(lwork, dt), np.empty(liwork, np.int32)
    stemr(*args, _ptr(work), B(_INT(lwork)), _ptr(iwork), B(_INT(liwork)), B(info))
    _check("stemr", info)
    # back to the matrix's basis, Z <- Q Z: a lower sytrd's Q = H(1)…H(n−1) has its
    # reflectors in a[1:, :-1] and acts on rows 1…n−1 (``ormqr`` on that block, which
    # ``ormtr`` calls inside; called directly it gives the bits SciPy-based code gave,
    # ``ormtr`` differed from them by rounding, 1e-16)
    if n > 1:
        ormqr = _routine("cython_lapack", "ormqr", dt)
        item = a.itemsize
        below_a = ctypes.cast(a.ctypes.data + item, _P(real))  # a[1, 0]
        below_z = ctypes.cast(Z.ctypes.data + item, _P(real))  # Z[1, 0]
        head2 = (B(_CHAR(b"L")), B(_CHAR(b"N")), B(_INT(n - 1)), B(_INT(k)), B(_INT(n - 1)),
                 below_a, B(_INT(n)), _ptr(tau), below_z, B(_INT(n)))
        ormqr(*head2, B(size), B(_INT(-1)), B(info))
        lwork = max(int(size.value), k, 1)
        work = np.empty(lwork, dt)
        ormqr(*head2, _ptr(work), B(_INT(lwork)), B(info))
        _check("ormqr", info)
    return w, Z

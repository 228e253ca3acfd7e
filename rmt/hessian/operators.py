"""Linear operators for Hessian spectra: wrapping, shifting/scaling, counting matvecs.

Everything the Lanczos routines take is a ``scipy.sparse.linalg.LinearOperator`` or an
object with ``shape`` and ``matvec`` (CuPy operators whose ``matvec`` returns CuPy arrays
keep the Lanczos vectors on the device). Operators are assumed symmetric (Hessians).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["CountingOperator", "as_operator", "dense_operator", "shifted", "to_dense"]


def as_operator(op: Any) -> Any:
    """A square operator with ``shape`` and ``matvec``: LinearOperators and duck-typed
    objects pass through, arrays and sparse matrices are wrapped.

    Parameters
    ----------
    op : LinearOperator, object with ``shape`` and ``matvec``, or matrix
        Square operator.

    Returns
    -------
    LinearOperator or the object itself

    Raises
    ------
    ValueError
        Not square.
    TypeError
        Neither an operator nor a matrix.
    """
    if hasattr(op, "matvec") and hasattr(op, "shape"):
        n, m = op.shape
        if n != m:
            raise ValueError(f"operator must be square, got shape {op.shape}")
        return op
    if hasattr(op, "shape") and len(op.shape) == 2:
        return dense_operator(op)
    raise TypeError(f"expected a LinearOperator, an object with shape and matvec, or a matrix; "
                    f"got {type(op).__name__}")


def dense_operator(A: Any) -> spla.LinearOperator:
    """A symmetric matrix (NumPy array or SciPy sparse) as a float64 LinearOperator.

    Parameters
    ----------
    A : numpy.ndarray or scipy.sparse matrix
        Square, symmetric.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square, got shape {A.shape}")
    return spla.aslinearoperator(A if hasattr(A, "tocsr") else np.asarray(A, dtype=np.float64))


class CountingOperator(spla.LinearOperator):
    """Wraps an operator and counts its matrix-vector products (``n_matvecs``).

    Parameters
    ----------
    op : LinearOperator, object with ``shape`` and ``matvec``, or matrix
        Square operator.
    """

    def __init__(self, op: Any) -> None:
        op = as_operator(op)
        self.op = op
        self.n_matvecs = 0
        super().__init__(dtype=np.dtype(getattr(op, "dtype", None) or np.float64),
                         shape=op.shape)

    def _matvec(self, x: Any) -> Any:
        self.n_matvecs += 1
        return self.op.matvec(x)

    def _matmat(self, X: Any) -> Any:
        self.n_matvecs += X.shape[1]
        if hasattr(self.op, "matmat"):  # one GEMM for a dense operator
            return self.op.matmat(X)
        return np.column_stack([self.op.matvec(X[:, j]) for j in range(X.shape[1])])

    def _adjoint(self) -> CountingOperator:
        return self  # symmetric


def shifted(op: Any, shift: float = 0.0, scale: float = 1.0) -> spla.LinearOperator:
    """The operator scale·(A − shift·I).

    Parameters
    ----------
    op : LinearOperator, object with ``shape`` and ``matvec``, or matrix
        Square operator.
    shift : float, default 0.0
        Subtracted from the diagonal.
    scale : float, default 1.0
        Factor applied after the shift.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
    """
    op = as_operator(op)
    return spla.LinearOperator(op.shape, matvec=lambda x: scale * (op.matvec(x) - shift * x),
                               dtype=np.float64)


def to_dense(op: Any) -> np.ndarray:
    """The full matrix of an operator, one matvec per column (for small operators and tests).

    Parameters
    ----------
    op : LinearOperator, object with ``shape`` and ``matvec``, or matrix
        Square operator.

    Returns
    -------
    numpy.ndarray
        n × n, float64 (n matvecs).
    """
    op = as_operator(op)
    n = op.shape[0]
    eye = np.eye(n)
    return np.column_stack([np.asarray(op.matvec(eye[:, j])).ravel() for j in range(n)])

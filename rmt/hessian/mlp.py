"""The no-bias two-layer network of Pennington & Bahri in NumPy, with exact Hessians.

ŷ = W2 f(W1 x), W1 of n_hidden×n_in, W2 of n_out×n_hidden; data X (m, n_in) and Y
(m, n_out), rows are samples; θ = concatenate([W1.ravel(), W2.ravel()]); loss
ε = Σ(ŷ − y)²/(2·n_out·m). The Hessian-vector product is analytic forward-over-reverse
(exact to round-off, O(m·n²) per product), and splits into the Gauss–Newton part
H0 = c·JᵀJ (positive semi-definite) and the residual part H1 = H − H0, which carries
the curvature of f weighted by the residuals.

References
----------
J. Pennington and Y. Bahri, "Geometry of neural network loss surfaces via random matrix
theory", ICML 2017, §2.
L. Dinh, R. Pascanu, S. Bengio and Y. Bengio, "Sharp minima can generalize for deep
nets", ICML 2017 (the rescaling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["MLP", "TanhMLP"]

Activation = Literal["tanh", "relu", "linear"]


def _act(kind: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f(z), f'(z), f''(z)."""
    if kind == "tanh":
        t = np.tanh(z)
        d1 = 1.0 - t * t
        return t, d1, -2.0 * t * d1
    if kind == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(z.dtype), np.zeros_like(z)
    return z, np.ones_like(z), np.zeros_like(z)


@dataclass(frozen=True)
class MLP:
    """ŷ = W2 f(W1 x) without biases.

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Layer widths.
    activation : {"tanh", "relu", "linear"}, default "tanh"
        The non-linearity f.
    """

    n_in: int
    n_hidden: int
    n_out: int
    activation: Activation = "tanh"

    def __post_init__(self) -> None:
        if self.activation not in ("tanh", "relu", "linear"):
            raise ValueError(f"activation must be 'tanh', 'relu' or 'linear', "
                             f"got {self.activation!r}")

    @property
    def n_params(self) -> int:
        """P = n_hidden·(n_in + n_out)."""
        return self.n_hidden * (self.n_in + self.n_out)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(W1, W2) views of θ.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).

        Returns
        -------
        W1, W2 : numpy.ndarray
            Views of θ, shapes (n_hidden, n_in) and (n_out, n_hidden).
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"theta must have shape ({self.n_params},), got {theta.shape}")
        k = self.n_hidden * self.n_in
        return (theta[:k].reshape(self.n_hidden, self.n_in),
                theta[k:].reshape(self.n_out, self.n_hidden))

    @staticmethod
    def pack(W1: np.ndarray, W2: np.ndarray) -> np.ndarray:
        """θ from (W1, W2)."""
        return np.concatenate([np.ravel(W1), np.ravel(W2)])

    def init(self, rng: Any = None) -> np.ndarray:
        """θ with W1 ~ N(0, 1/n_in) and W2 ~ N(0, 1/n_hidden) entries.

        Parameters
        ----------
        rng : int or numpy.random.Generator, optional
            Seed.

        Returns
        -------
        numpy.ndarray
            θ, float64.
        """
        rng = np.random.default_rng(rng)
        return self.pack(rng.standard_normal((self.n_hidden, self.n_in)) / np.sqrt(self.n_in),
                         rng.standard_normal((self.n_out, self.n_hidden)) / np.sqrt(self.n_hidden))

    def _forward(self, theta: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, ...]:
        """(W2, f(Z), f'(Z), f''(Z), ŷ) with Z = X W1ᵀ."""
        W1, W2 = self.unpack(theta)
        A, d1, d2 = _act(self.activation, np.asarray(X, dtype=np.float64) @ W1.T)
        return W2, A, d1, d2, A @ W2.T

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """ŷ for the rows of X, shape (m, n_out).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).

        Returns
        -------
        numpy.ndarray
        """
        return self._forward(theta, X)[-1]

    def residuals(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """ŷ − y, shape (m, n_out).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).

        Returns
        -------
        numpy.ndarray
        """
        return self.predict(theta, X) - np.asarray(Y, dtype=np.float64)

    def loss(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
        """ε = Σ(ŷ − y)²/(2·n_out·m).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).

        Returns
        -------
        float
        """
        R = self.residuals(theta, X, Y)
        return float(0.5 * np.sum(R * R) / R.size)

    def grad(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """∇ε, shape (P,).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).

        Returns
        -------
        numpy.ndarray
        """
        W2, A, d1, _, Yh = self._forward(theta, X)
        c = 1.0 / Yh.size
        R = Yh - Y
        gA = c * R @ W2
        return self.pack((gA * d1).T @ X, c * R.T @ A)

    def jacobian(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """∂ŷ/∂θ, shape (m·n_out, P), rows ordered like ``ŷ.ravel()``.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).

        Returns
        -------
        numpy.ndarray
        """
        W2, A, d1, _, _ = self._forward(theta, X)
        X = np.asarray(X, dtype=np.float64)
        m = X.shape[0]
        # ŷ[s, o] = Σ_h W2[o, h] f(Z[s, h]); ∂/∂W1[h, i] = W2[o, h] f'(Z[s, h]) X[s, i]
        dW1 = (W2[None, :, :, None] * d1[:, None, :, None] * X[:, None, None, :])
        dW2 = np.zeros((m, self.n_out, self.n_out, self.n_hidden))
        idx = np.arange(self.n_out)
        dW2[:, idx, idx, :] = A[:, None, :]
        return np.concatenate([dW1.reshape(m * self.n_out, -1),
                               dW2.reshape(m * self.n_out, -1)], axis=1)

    def hvp(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Exact Hessian-vector product H·v (forward-over-reverse, analytic).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).
        v : numpy.ndarray
            Direction, shape (P,).

        Returns
        -------
        numpy.ndarray
            H·v, shape (P,), float64 (exact to round-off).
        """
        W2, A, d1, d2, Yh = self._forward(theta, X)
        X = np.asarray(X, dtype=np.float64)
        c = 1.0 / Yh.size
        R = Yh - Y
        V1, V2 = self.unpack(v)
        dZ = X @ V1.T
        dA = d1 * dZ
        dR = dA @ W2.T + A @ V2.T
        gA = c * R @ W2
        d_gW2 = c * (dR.T @ A + R.T @ dA)
        d_gA = c * (dR @ W2 + R @ V2)
        d_gZ = d_gA * d1 + gA * d2 * dZ
        return self.pack(d_gZ.T @ X, d_gW2)

    def gauss_newton_vp(self, theta: np.ndarray, X: np.ndarray, v: np.ndarray) -> np.ndarray:
        """H0·v = c·Jᵀ(J·v), the Gauss–Newton part (positive semi-definite).

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        v : numpy.ndarray
            Direction, shape (P,).

        Returns
        -------
        numpy.ndarray
        """
        W2, A, d1, _, Yh = self._forward(theta, X)
        X = np.asarray(X, dtype=np.float64)
        c = 1.0 / Yh.size
        V1, V2 = self.unpack(v)
        U = c * ((d1 * (X @ V1.T)) @ W2.T + A @ V2.T)
        return self.pack(((U @ W2) * d1).T @ X, U.T @ A)

    def hessian(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Dense Hessian (P×P), from P Hessian-vector products, symmetrised.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).

        Returns
        -------
        numpy.ndarray
            P × P, symmetric.
        """
        H = np.column_stack([self.hvp(theta, X, Y, e) for e in np.eye(self.n_params)])
        return (H + H.T) / 2

    def gauss_newton(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Dense H0 = c·JᵀJ.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).

        Returns
        -------
        numpy.ndarray
            P × P, positive semi-definite.
        """
        J = self.jacobian(theta, X)
        return J.T @ J / J.shape[0]

    def residual_hessian(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Dense H1 = H − H0.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).

        Returns
        -------
        numpy.ndarray
            P × P.
        """
        return self.hessian(theta, X, Y) - self.gauss_newton(theta, X)

    def operator(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
                 part: Literal["full", "gauss_newton"] = "full") -> spla.LinearOperator:
        """The Hessian (or its Gauss–Newton part) at θ as a LinearOperator.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        X : numpy.ndarray
            Inputs, shape (m, n_in).
        Y : numpy.ndarray
            Targets, shape (m, n_out).
        part : {"full", "gauss_newton"}, default "full"
            Which matrix.

        Returns
        -------
        scipy.sparse.linalg.LinearOperator
        """
        theta = np.array(theta, dtype=np.float64)
        X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
        if part == "full":
            mv = lambda v: self.hvp(theta, X, Y, np.ravel(v))  # noqa: E731
        elif part == "gauss_newton":
            mv = lambda v: self.gauss_newton_vp(theta, X, np.ravel(v))  # noqa: E731
        else:
            raise ValueError(f"part must be 'full' or 'gauss_newton', got {part!r}")
        P = self.n_params
        return spla.LinearOperator((P, P), matvec=mv, rmatvec=mv, dtype=np.float64)

    def fit(self, X: np.ndarray, Y: np.ndarray, *, theta0: np.ndarray | None = None,
            maxiter: int = 200, rng: Any = None) -> np.ndarray:
        """Train by L-BFGS (``scipy.optimize.minimize``, exact loss and gradient).

        Parameters
        ----------
        X, Y : numpy.ndarray
            Data, shapes (m, n_in) and (m, n_out).
        theta0 : numpy.ndarray, optional
            Start; default :meth:`init` with ``rng``.
        maxiter : int, default 200
            L-BFGS iterations at most.
        rng : None, int or numpy.random.Generator
            Seed of the default start.

        Returns
        -------
        numpy.ndarray
            The parameters reached, shape (P,), float64.
        """
        import scipy.optimize

        start = self.init(rng) if theta0 is None else np.asarray(theta0, dtype=np.float64)
        res = scipy.optimize.minimize(lambda t: (self.loss(t, X, Y), self.grad(t, X, Y)),
                                      start, jac=True, method="L-BFGS-B",
                                      options={"maxiter": int(maxiter)})
        return np.asarray(res.x, dtype=np.float64)

    def rescale(self, theta: np.ndarray, a: float) -> np.ndarray:
        """Dinh et al.'s reparametrisation W1 → a·W1, W2 → W2/a (a > 0).

        It leaves the network function unchanged only for positively homogeneous f
        (relu, linear); for tanh it would change the function, so it is refused.

        Parameters
        ----------
        theta : numpy.ndarray
            Parameters θ, shape (P,).
        a : float
            Factor a > 0.

        Returns
        -------
        numpy.ndarray
            The rescaled θ.
        """
        if self.activation == "tanh":
            raise ValueError("rescale changes the function of a tanh network (tanh is not "
                             "positively homogeneous); use activation='relu' or 'linear'")
        if not a > 0:
            raise ValueError(f"a must be > 0, got {a}")
        W1, W2 = self.unpack(theta)
        return self.pack(a * W1, W2 / a)


def TanhMLP(n_in: int, n_hidden: int, n_out: int) -> MLP:
    """The tanh case of :class:`MLP` (Pennington & Bahri's network).

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Layer widths.

    Returns
    -------
    MLP
    """
    return MLP(n_in, n_hidden, n_out, activation="tanh")

"""Pennington & Bahri's random-matrix theory of the loss Hessian (closed forms only).

Model: H = H0 + H1 with H0 a Wishart matrix of ratio ϕ and scale 1 (Gauss–Newton part,
R₀(w) = 1/(1 − ϕw)) and H1 a Wigner matrix of variance 2ε (residual part, R₁(w) = 2εw),
freely independent. The Stieltjes transform G of H solves the cubic

    2εϕ·G³ − (2ε + ϕz)·G² + (z + ϕ − 1)·G − 1 = 0,

ρ(λ) = −Im G(λ + i0⁺)/π on the root with Im G < 0. Negative eigenvalues appear above the
critical energy ε_c(ϕ) = (1 − 20ϕ − 8ϕ² + (1 + 8ϕ)^{3/2})/16 (ϕ < 1; 0 for ϕ ≥ 1), and the
index (mass below 0) grows like α₀(ϕ)·|(ε − ε_c)/ε_c|^{3/2}. Minimisers of the memorisation
task are predicted at energy ½(1 − ϕ)² (ϕ < 1) and 0 beyond. ε = Σ(ŷ − y)²/(2·n_out·m) and
ϕ = parameters/(n_out·m).

References
----------
J. Pennington and Y. Bahri, "Geometry of neural network loss surfaces via random matrix
theory", ICML 2017, PMLR 70:2798–2806.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.integrate
import scipy.optimize

__all__ = ["critical_energy", "density", "edges", "index", "index_prefactor",
           "predicted_minimizer_energy", "stieltjes"]


def _check(energy: float, phi: float) -> tuple[float, float]:
    energy, phi = float(energy), float(phi)
    if energy < 0 or phi < 0:
        raise ValueError(f"energy and phi must be >= 0, got energy={energy}, phi={phi}")
    return energy, phi


def stieltjes(z: Any, energy: float, phi: float) -> np.ndarray:
    """G(z) on the physical branch (Im G < 0 for Im z > 0... taken at z = x + i0⁺).

    Parameters
    ----------
    z : array_like of real
        Points on the real line (evaluated just above it).
    energy, phi : float
        ε and ϕ.

    Returns
    -------
    numpy.ndarray of complex
        The root of the cubic with the most negative imaginary part (real where the
        density vanishes, then the root continuous with 1/z at infinity).
    """
    energy, phi = _check(energy, phi)
    x = np.atleast_1d(np.asarray(z, dtype=np.float64)) + 1e-13j
    a3 = 2 * energy * phi
    a2 = -(2 * energy + phi * x)
    a1 = x + phi - 1
    a0 = -np.ones_like(x)
    if a3 == 0:  # quadratic (ε = 0 or ϕ = 0): a2 G² + a1 G + a0 = 0
        disc = np.sqrt(a1 * a1 - 4 * a2 * a0)
        roots = np.stack([(-a1 + disc) / (2 * a2), (-a1 - disc) / (2 * a2)], axis=-1)
        linear = np.abs(a2) < 1e-300
        roots[linear] = (-a0[linear] / a1[linear])[:, None]
    else:
        C = np.zeros((*x.shape, 3, 3), dtype=complex)
        C[..., 0, :] = np.stack([-a2 / a3, -a1 / a3, -a0 / a3], axis=-1)
        C[..., 1, 0] = 1.0
        C[..., 2, 1] = 1.0
        roots = np.linalg.eigvals(C)
    pick = np.argmin(roots.imag, axis=-1)
    G = np.take_along_axis(roots, pick[..., None], axis=-1)[..., 0]
    real = np.abs(G.imag) < 1e-9
    if real.any():  # outside the support: the real root that behaves like 1/z
        target = 1.0 / x[real].real
        cand = roots[real]
        best = np.argmin(np.abs(cand - target[:, None]) + 1e3 * np.abs(cand.imag), axis=-1)
        G[real] = np.take_along_axis(cand, best[:, None], axis=-1)[:, 0].real
    return G.reshape(np.shape(z)) if np.ndim(z) else G[0]


def density(x: Any, energy: float, phi: float) -> np.ndarray:
    """Spectral density ρ(x) = −Im G(x + i0⁺)/π of H0 + H1 (vectorised over x).

    For ϕ ≥ 1 and ε = 0, H0's atom of mass 1 − 1/ϕ at 0 is not part of this density.

    Parameters
    ----------
    x : array_like
        Points.
    energy : float
        Loss ε ≥ 0 (sets the Wigner part's variance 2ε).
    phi : float
        Ratio ϕ = parameters/(n_out·m) ≥ 0.

    Returns
    -------
    numpy.ndarray
        ρ(x), float64.
    """
    G = np.asarray(stieltjes(x, energy, phi))
    return np.maximum(-G.imag / np.pi, 0.0)


def _z_of_g(G: np.ndarray, energy: float, phi: float) -> np.ndarray:
    return 1.0 / (1.0 - phi * G) + 2.0 * energy * G + 1.0 / G


def edges(energy: float, phi: float) -> tuple[float, float]:
    """Left and right edges of the support, from dz/dG = 0 on the inverse z(G).

    z(G) = 1/(1 − ϕG) + 2εG + 1/G; its critical points solve the quartic
    2εϕ²G⁴ − 4εϕG³ + (ϕ + 2ε − ϕ²)G² + 2ϕG − 1 = 0. The right edge is the minimum of z
    on 0 < G < 1/ϕ, the left edge the largest critical value on G < 0 (or, with ε = 0, the
    MP edge (1 − √ϕ)² on G > 1/ϕ).

    Parameters
    ----------
    energy : float
        Loss ε ≥ 0 (sets the Wigner part's variance 2ε).
    phi : float
        Ratio ϕ = parameters/(n_out·m) ≥ 0.

    Returns
    -------
    tuple of float
        (left, right) edges of the support.
    """
    energy, phi = _check(energy, phi)
    coeffs = [2 * energy * phi**2, -4 * energy * phi, phi + 2 * energy - phi**2, 2 * phi, -1.0]
    while coeffs and coeffs[0] == 0:
        coeffs = coeffs[1:]
    roots = np.roots(coeffs)
    roots = roots[np.abs(roots.imag) < 1e-9 * np.maximum(1.0, np.abs(roots.real))].real
    # polish each real root with Newton steps on the quartic
    poly, dpoly = np.poly1d(coeffs), np.poly1d(coeffs).deriv()
    roots = np.array([r - poly(r) / dpoly(r) if dpoly(r) != 0 else r for r in roots])
    z = _z_of_g(roots, energy, phi)
    upper = 1.0 / phi if phi > 0 else np.inf
    right = z[(roots > 0) & (roots < upper)]
    left_neg = z[roots < 0]
    if energy == 0:
        r = np.sqrt(phi)
        return float((1 - r) ** 2), float((1 + r) ** 2)
    return float(left_neg.max()), float(right.min())


def critical_energy(phi: float) -> float:
    """ε_c(ϕ) = (1 − 20ϕ − 8ϕ² + (1 + 8ϕ)^{3/2})/16 for ϕ < 1, 0 for ϕ ≥ 1: the energy at
    which the left edge of the spectrum reaches 0.

    Parameters
    ----------
    phi : float
        Ratio ϕ ≥ 0.

    Returns
    -------
    float
    """
    phi = float(phi)
    if phi >= 1:
        return 0.0
    return float((1 - 20 * phi - 8 * phi**2 + (1 + 8 * phi) ** 1.5) / 16)


def index(energy: float, phi: float) -> float:
    """Fraction of negative eigenvalues, ∫_{−∞}^0 ρ(λ) dλ.

    For ϕ > 1 and ε > 0, H0's atom at 0 splits symmetrically, so the index tends to
    (1 − 1/ϕ)/2 as ε → 0.

    Parameters
    ----------
    energy : float
        Loss ε ≥ 0 (sets the Wigner part's variance 2ε).
    phi : float
        Ratio ϕ = parameters/(n_out·m) ≥ 0.

    Returns
    -------
    float
        Mass below 0, in [0, 1].
    """
    energy, phi = _check(energy, phi)
    if energy == 0:
        return 0.0
    left, right = edges(energy, phi)
    if left >= 0:
        return 0.0
    upper = min(0.0, right)
    val, _ = scipy.integrate.quad(lambda t: float(density(t, energy, phi)), left, upper,
                                  limit=500, epsabs=1e-13, epsrel=1e-10)
    return float(val)


def index_prefactor(phi: float) -> float:
    """α₀(ϕ) of the small-index law α ≈ α₀·|(ε − ε_c)/ε_c|^{3/2} (ϕ < 1).

    Extrapolated to x → 0 from x = 1e-4 and 2e-4 (α/x^{3/2} = α₀ + O(x)); α₀(0) = 2/(3π).

    Parameters
    ----------
    phi : float
        Ratio 0 ≤ ϕ < 1.

    Returns
    -------
    float
    """
    phi = float(phi)
    if not 0 <= phi < 1:
        raise ValueError(f"index_prefactor needs 0 <= phi < 1, got {phi}")
    ec = critical_energy(phi)

    def ratio(x: float) -> float:
        return index(ec * (1 + x), phi) / x**1.5

    return 2 * ratio(1e-4) - ratio(2e-4)


def predicted_minimizer_energy(phi: float) -> float:
    """Pennington & Bahri's empirical law for minimisers of the memorisation task:
    ½(1 − ϕ)² for ϕ < 1, 0 for ϕ ≥ 1 (the network can then memorise).

    Parameters
    ----------
    phi : float
        Ratio ϕ ≥ 0.

    Returns
    -------
    float
    """
    phi = float(phi)
    return 0.5 * (1 - phi) ** 2 if phi < 1 else 0.0

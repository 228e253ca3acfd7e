"""The memorisation experiment behind Pennington & Bahri's ½(1 − ϕ)² law, and diagnostics.

A tanh network ŷ = W2 tanh(W1 x) with n_in = n_hidden = n_out = n (P = 2n² parameters)
is fitted to m = round(2n/ϕ) Gaussian inputs and Gaussian targets, so ϕ = P/(n·m). Each
run is minimised to a true minimum by Levenberg–Marquardt on the residuals with the
analytic Jacobian (docs/science.md §8); the energy and the exact Hessian index
at the minimum are recorded. ``index_vs_energy`` (T7) looks for critical points at higher
energies and reports honestly how critical they are; ``freeness_diagnostic`` (T6) compares
H with H0 + Q·H1·Qᵀ for Haar Q.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.optimize

from rmt import config
from rmt.energy.theory import predicted_minimizer_energy
from rmt.hessian.extreme import negative_fraction
from rmt.hessian.mlp import MLP, TanhMLP

__all__ = ["freeness_diagnostic", "index_vs_energy", "levenberg_marquardt",
           "memorization_experiment", "newton_polish"]


def levenberg_marquardt(net: MLP, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, *,
                        max_iter: int = 3000, grad_tol: float = 1e-9) -> tuple[np.ndarray, int]:
    """Minimise ε by Levenberg–Marquardt (damped Gauss–Newton, analytic Jacobian).

    Step (JᵀJ + μ·s·I)δ = −Jᵀr with s = max diag(JᵀJ) (Levenberg's damping: JᵀJ of a tanh
    network is rank-deficient, so Marquardt's diagonal scaling alone can be singular);
    μ shrinks ×3 after an accepted step (not below 1e-12) and grows ×4 after a rejected
    one. Stops when ‖∇ε‖ < ``grad_tol``, after 20 accepted steps in a row that each lower ε
    by less than 1e-14 relative, or when no step is accepted.

    Parameters
    ----------
    net : MLP
        The network (exact gradient, Jacobian and Hessian).
    theta : numpy.ndarray
        Starting parameters (float64).
    X, Y : numpy.ndarray
        Inputs (m × n_in) and targets (m × n_out).
    max_iter : int, default 3000
        Iteration cap.
    grad_tol : float, default 1e-9
        Stop when ‖∇ε‖ falls below this.

    Returns
    -------
    (theta, iterations)
    """
    theta = np.array(theta, dtype=np.float64)
    N = Y.size
    mu = 1e-3
    r = net.residuals(theta, X, Y).ravel()
    loss = 0.5 * r @ r
    stalled = 0
    for it in range(1, max_iter + 1):
        J = net.jacobian(theta, X)
        g = J.T @ r
        if np.linalg.norm(g) / N < grad_tol:
            return theta, it
        A = J.T @ J
        scale = max(float(np.max(np.diag(A))), 1e-300)
        while True:
            step = np.linalg.solve(A + mu * scale * np.eye(A.shape[0]), -g)
            r_new = net.residuals(theta + step, X, Y).ravel()
            new = 0.5 * r_new @ r_new
            if new < loss:
                stalled = stalled + 1 if loss - new <= 1e-14 * loss else 0
                theta, r, loss = theta + step, r_new, new
                mu = max(mu / 3, 1e-12)
                break
            mu *= 4
            if mu > 1e10:
                return theta, it
        if stalled >= 20:
            return theta, it
    return theta, max_iter


def newton_polish(net: MLP, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, *,
                  max_iter: int = 200, grad_tol: float = 1e-10) -> tuple[np.ndarray, int]:
    """Finish a minimisation by trust-region Newton steps with the exact Hessian.

    Levenberg–Marquardt drops the residual part of the Hessian, so on a memorisation task
    (residuals of order one at the minimum) it converges only linearly, and slowly: at
    n = 8 most runs stop at 3000 iterations with ‖∇ε‖ between 1e-6 and 2e-3. Newton's
    method with the exact Hessian (``scipy.optimize.minimize(method="trust-exact")``,
    which also handles indefinite Hessians) converges quadratically from there.

    Parameters
    ----------
    net : MLP
        The network (exact gradient, Jacobian and Hessian).
    theta : numpy.ndarray
        Starting parameters (float64).
    X, Y : numpy.ndarray
        Inputs (m × n_in) and targets (m × n_out).
    max_iter : int, default 200
        Trust-region iterations at most.
    grad_tol : float, default 1e-10
        ``gtol`` of the trust-region solver.

    Returns
    -------
    (theta, iterations)
    """
    res = scipy.optimize.minimize(
        lambda t: net.loss(t, X, Y), np.array(theta, dtype=np.float64),
        jac=lambda t: net.grad(t, X, Y), hess=lambda t: net.hessian(t, X, Y),
        method="trust-exact", options={"maxiter": max_iter, "gtol": grad_tol})
    return res.x, int(res.nit)


def _exact_index(H: np.ndarray) -> float:
    return negative_fraction(np.linalg.eigvalsh(H), rel_tol=config.INDEX_REL_TOL)


def memorization_experiment(n: int = 8, phis: Any = (0.25, 0.5, 0.75), n_seeds: int = 6,
                            rng: Any = None, max_iter: int = 300,
                            grad_tol: float = 1e-10) -> pd.DataFrame:
    """Minimiser energies of the memorisation task against ½(1 − ϕ)².

    Each run: Levenberg–Marquardt from a random initialisation (at most ``max_iter``
    steps: it finds the basin quickly and then crawls), then :func:`newton_polish` with
    the exact Hessian to ‖∇ε‖ < ``grad_tol``. BLAS runs on one thread: the matrices are
    at most P x P = 128 x 128 at n = 8, where threads only add overhead (on machines
    with many cores, a lot of it).

    Parameters
    ----------
    n : int, default 8
        Width: n_in = n_hidden = n_out = n, P = 2n².
    phis : sequence of float
        Requested ϕ; m = round(2n/ϕ) samples, so the actual ϕ is ``phi_actual``.
    n_seeds : int, default 6
        Independent data sets and initialisations per ϕ.
    rng : None, int or numpy.random.Generator
        Seeds every data set and initialisation.
    max_iter : int, default 300
        Levenberg–Marquardt iteration cap before the Newton polish.
    grad_tol : float, default 1e-10
        Gradient norm ‖∇ε‖ a run must reach to count as ``converged``.

    Returns
    -------
    pandas.DataFrame
        Columns ``phi, phi_actual, m, seed, energy, predicted, linear_baseline,
        hessian_index, grad_norm, converged, iterations``: ``predicted`` = ½(1 − ϕ_actual)²,
        ``linear_baseline`` = ½(1 − ϕ_actual) (a linear model's minimum), the index counts
        Hessian eigenvalues below −``rmt.config.INDEX_REL_TOL``·λmax, ``converged`` is
        ‖∇ε‖ < ``grad_tol``, and ``iterations`` counts both phases.
    """
    from rmt._threads import limit_threads

    master = np.random.default_rng(rng)
    net = TanhMLP(n, n, n)
    rows = []
    with limit_threads(1):
        for phi in phis:
            m = max(1, round(2 * n / phi))
            phi_actual = net.n_params / (n * m)
            for seed in range(n_seeds):
                gen = np.random.default_rng(master.integers(2**63))
                X, Y = gen.standard_normal((m, n)), gen.standard_normal((m, n))
                theta, lm_iters = levenberg_marquardt(net, net.init(gen), X, Y,
                                                      max_iter=max_iter)
                theta, newton_iters = newton_polish(net, theta, X, Y, grad_tol=grad_tol)
                grad_norm = float(np.linalg.norm(net.grad(theta, X, Y)))
                rows.append({
                    "phi": float(phi), "phi_actual": phi_actual, "m": m, "seed": seed,
                    "energy": net.loss(theta, X, Y),
                    "predicted": predicted_minimizer_energy(phi_actual),
                    "linear_baseline": 0.5 * max(1 - phi_actual, 0.0),
                    "hessian_index": _exact_index(net.hessian(theta, X, Y)),
                    "grad_norm": grad_norm, "converged": grad_norm < grad_tol,
                    "iterations": lm_iters + newton_iters,
                })
    return pd.DataFrame(rows)


def freeness_diagnostic(model: MLP, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
                        n_rotations: int = 10, rng: Any = None) -> dict[str, Any]:
    """Is H ≈ H0 + H1 with H0, H1 freely independent? Compare H with H0 + Q·H1·Qᵀ.

    Haar-random Q make H1 free from H0; if the real Hessian's spectrum matches the rotated
    ones, the free-probability model applies at θ. A diagnostic, not a test: freeness holds
    at generic high-energy points and fails at minima (Pennington & Bahri 2017, §4).

    Parameters
    ----------
    model : MLP
        The network.
    theta : numpy.ndarray
        The point θ.
    X, Y : numpy.ndarray
        Inputs and targets.
    n_rotations : int, default 10
        Haar rotations pooled.
    rng : int or numpy.random.Generator, optional
        Seed of the rotations.

    Returns
    -------
    dict
        ``ks`` (two-sample KS distance between the spectrum of H and the pooled rotated
        spectra), ``index`` and ``free_index`` (fractions below
        −``rmt.config.INDEX_REL_TOL``·λmax of H), ``energy``, and the eigenvalues
        ``evals`` and ``free_evals``.
    """
    rng = np.random.default_rng(rng)
    H = model.hessian(theta, X, Y)
    H0 = model.gauss_newton(theta, X)
    H1 = H - H0
    ev = np.linalg.eigvalsh(H)
    rotated = []
    for _ in range(n_rotations):
        Q, R = np.linalg.qr(rng.standard_normal(H.shape))
        Q *= np.sign(np.diag(R))
        rotated.append(np.linalg.eigvalsh(H0 + Q @ H1 @ Q.T))
    free = np.sort(np.concatenate(rotated))
    import scipy.stats

    tol = config.INDEX_REL_TOL * np.abs(ev).max()
    return {"ks": float(scipy.stats.ks_2samp(ev, free).statistic),
            "index": negative_fraction(ev, zero_tol=tol),
            "free_index": negative_fraction(free, zero_tol=tol),
            "energy": model.loss(theta, X, Y), "evals": ev, "free_evals": free}


def index_vs_energy(n: int = 8, phi: float = 0.5, n_runs: int = 10, rng: Any = None,
                    gd_steps: Any = (0, 20, 50, 100, 200), max_iter: int = 500) -> pd.DataFrame:
    """Candidate critical points at several energies, reported with how critical they are.

    From gradient-descent snapshots (``gd_steps`` steps of lr = 0.5 from initialisation) the
    gradient norm ½‖∇ε‖² is minimised by L-BFGS (its gradient H·∇ε by exact HVPs). Frye et
    al. (2019, 2021) showed that such points are often *gradient-flat regions* rather than
    critical points: the gradient stalls well above zero and lies almost entirely in
    near-flat directions. Every row therefore carries ``grad_norm`` and ``flat_fraction``
    (the share of ‖∇ε‖² in eigen-directions with |λ| < ``rmt.config.FLAT_REL_TOL``·λmax);
    a 3/2-law fit of these points is not a confirmation of the theory.

    Parameters
    ----------
    n : int, default 8
        Network width (n_in = n_hidden = n_out = n).
    phi : float, default 0.5
        Ratio ϕ (sets m = round(2n/ϕ) samples).
    n_runs : int, default 10
        Data sets and initialisations.
    rng : int or numpy.random.Generator, optional
        Master seed.
    gd_steps : sequence of int
        Gradient-descent steps before each gradient-norm minimisation.
    max_iter : int, default 500
        L-BFGS iterations at most.

    Returns
    -------
    pandas.DataFrame
        ``run, gd_steps, energy, index, grad_norm, flat_fraction``.
    """
    master = np.random.default_rng(rng)
    net = TanhMLP(n, n, n)
    m = max(1, round(2 * n / phi))
    rows = []
    for run in range(n_runs):
        gen = np.random.default_rng(master.integers(2**63))
        X, Y = gen.standard_normal((m, n)), gen.standard_normal((m, n))
        theta0 = net.init(gen)
        for steps in gd_steps:
            theta = theta0.copy()
            for _ in range(steps):
                theta -= 0.5 * net.grad(theta, X, Y)

            def objective(t: np.ndarray, X: np.ndarray = X,
                          Y: np.ndarray = Y) -> tuple[float, np.ndarray]:
                g = net.grad(t, X, Y)
                return 0.5 * float(g @ g), net.hvp(t, X, Y, g)

            res = scipy.optimize.minimize(objective, theta, jac=True, method="L-BFGS-B",
                                          options={"maxiter": max_iter, "gtol": 1e-14,
                                                   "ftol": 1e-30})
            t = res.x
            g = net.grad(t, X, Y)
            ev, V = np.linalg.eigh(net.hessian(t, X, Y))
            flat = np.abs(ev) < config.FLAT_REL_TOL * np.abs(ev).max()
            share = float(np.sum((V.T @ g)[flat] ** 2) / max(g @ g, 1e-300))
            rows.append({"run": run, "gd_steps": steps, "energy": net.loss(t, X, Y),
                         "index": negative_fraction(ev, rel_tol=config.INDEX_REL_TOL),
                         "grad_norm": float(np.linalg.norm(g)), "flat_fraction": share})
    return pd.DataFrame(rows)

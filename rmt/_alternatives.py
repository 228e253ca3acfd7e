"""Alternatives to the power law on a fitted tail, and the likelihood-ratio test.

The distributions and their parametrisations are powerlaw 2.0's (CSN 2009 Table 2.1),
continuous, on [xmin, ∞) or [xmin, xmax]:

- ``exponential``            p(x) ∝ e^(−λx)
- ``stretched_exponential``  p(x) ∝ (λx)^(β−1) e^(−(λx)^β)
- ``truncated_power_law``    p(x) ∝ x^(−α) e^(−λx)
- ``lognormal``              p(x) ∝ x⁻¹ e^(−(ln x − μ)²/(2σ²))

Each is fitted by maximum likelihood: powerlaw's own procedure (Nelder–Mead, tol 1e-4,
from its starting point) and L-BFGS-B from the same start, then a tight Nelder–Mead
polish from the better; the highest likelihood found is kept, so the fit is never worse
than powerlaw's and equals it wherever powerlaw's optimiser reached the optimum. Work
is in units of xmin so that the optimisation is scale-free.

Normalisers use closed forms evaluated in log space: the lognormal's through
``log_ndtr`` (powerlaw's own erfc underflows for far-out μ and then reports likelihoods
that are too high — measured: −811.98 reported vs −813.19 true on a Pareto tail), the
truncated power law's incomplete gamma through ``mpmath`` (as in powerlaw; exact for the
negative first argument SciPy does not cover).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

NAMES = ("truncated_power_law", "exponential", "lognormal", "stretched_exponential")
_LOG_TINY = float(np.log(10.0**-307))  # powerlaw's replacement for ln 0


def _log_upper_gamma(s: float, z: float) -> float:
    """ln Γ(s, z) for real s (any sign) and z > 0."""
    import mpmath

    return float(mpmath.log(mpmath.gammainc(s, z)))


def _log_diff(log_a: float, log_b: float | None) -> float:
    """ln(e^a − e^b) for b < a (b None means e^b = 0)."""
    if log_b is None:
        return log_a
    return log_a + float(np.log(-np.expm1(log_b - log_a)))


# Each spec works in y = x/xmin units (ymin = 1). ``log_f`` is the unnormalised log
# density at y, ``log_s`` the log of ∫_y^∞ f, ``params`` maps the internal vector to
# named parameters in y units, ``to_x`` converts them to x units.


def _exp_params(v: np.ndarray) -> dict[str, float]:
    with np.errstate(over="ignore"):  # the optimiser may probe huge scales; nll rejects them
        return {"Lambda": float(np.exp(v[0]))}


def _exp_log_f(y: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return -p["Lambda"] * y


def _exp_log_s(y: float, p: dict[str, float]) -> float:
    return -p["Lambda"] * y - np.log(p["Lambda"])


def _str_params(v: np.ndarray) -> dict[str, float]:
    with np.errstate(over="ignore"):
        return {"Lambda": float(np.exp(v[0])), "beta": float(np.exp(v[1]))}


def _str_log_f(y: np.ndarray, p: dict[str, float]) -> np.ndarray:
    ly = np.log(p["Lambda"] * y)
    return (p["beta"] - 1.0) * ly - np.exp(p["beta"] * ly)


def _str_log_s(y: float, p: dict[str, float]) -> float:
    return -((p["Lambda"] * y) ** p["beta"]) - np.log(p["beta"]) - np.log(p["Lambda"])


def _tpl_params(v: np.ndarray) -> dict[str, float]:
    with np.errstate(over="ignore"):
        return {"alpha": float(v[0]), "Lambda": float(np.exp(v[1]))}


def _tpl_log_f(y: np.ndarray, p: dict[str, float]) -> np.ndarray:
    return -p["alpha"] * np.log(y) - p["Lambda"] * y


def _tpl_log_s(y: float, p: dict[str, float]) -> float:
    a, lam = p["alpha"], p["Lambda"]
    return (a - 1.0) * np.log(lam) + _log_upper_gamma(1.0 - a, lam * y)


def _ln_params(v: np.ndarray) -> dict[str, float]:
    with np.errstate(over="ignore"):
        return {"mu": float(v[0]), "sigma": float(np.exp(v[1]))}


def _ln_log_f(y: np.ndarray, p: dict[str, float]) -> np.ndarray:
    ly = np.log(y)
    return -ly - (ly - p["mu"]) ** 2 / (2.0 * p["sigma"] ** 2)


def _ln_log_s(y: float, p: dict[str, float]) -> float:
    z = (np.log(y) - p["mu"]) / p["sigma"]
    return float(np.log(p["sigma"]) + 0.5 * np.log(2 * np.pi) + scipy.special.log_ndtr(-z))


_SPECS: dict[str, tuple[Any, Any, Any]] = {
    "exponential": (_exp_params, _exp_log_f, _exp_log_s),
    "stretched_exponential": (_str_params, _str_log_f, _str_log_s),
    "truncated_power_law": (_tpl_params, _tpl_log_f, _tpl_log_s),
    "lognormal": (_ln_params, _ln_log_f, _ln_log_s),
}


def _to_x_units(name: str, p: dict[str, float], xmin: float) -> dict[str, float]:
    q = dict(p)
    if "Lambda" in q:
        q["Lambda"] = q["Lambda"] / xmin
    if name == "lognormal":
        q["mu"] = q["mu"] + float(np.log(xmin))
    return q


def _start(name: str, y: np.ndarray) -> np.ndarray:
    """powerlaw's initial parameters (in y units, internal coordinates)."""
    lam0 = 1.0 / np.mean(y)
    if name == "exponential":
        return np.array([np.log(lam0)])
    if name == "stretched_exponential":
        return np.array([np.log(lam0), 0.0])
    if name == "truncated_power_law":
        return np.array([1.0 + y.size / np.sum(np.log(y)), np.log(lam0)])
    logy = np.log(y)
    return np.array([np.mean(logy), np.log(max(np.std(logy), 1e-12))])


@dataclass(frozen=True)
class AlternativeFit:
    """Maximum-likelihood fit of one alternative distribution to a tail.

    Attributes
    ----------
    name : str
        Distribution name (powerlaw's).
    params : dict of str to float
        Fitted parameters in the data's units (``Lambda`` in 1/x, ``mu`` in ln x).
    loglikelihood : float
        Σ ln p(x) over the tail.
    n : int
        Tail size.
    xmin, xmax : float, float or None
        Support of the fitted law.
    converged : bool
        Whether the optimiser reported success.
    """

    name: str
    params: dict[str, float]
    loglikelihood: float
    n: int
    xmin: float
    xmax: float | None
    converged: bool

    def loglikelihoods(self, x: np.ndarray) -> np.ndarray:
        """ln p(x) of the fitted law at each x (in [xmin, xmax])."""
        return loglikelihoods(self.name, np.asarray(x, dtype=np.float64), self.params,
                              self.xmin, self.xmax)


def loglikelihoods(name: str, x: np.ndarray, params: dict[str, float], xmin: float,
                   xmax: float | None) -> np.ndarray:
    """ln p(x) of distribution ``name`` with ``params`` (x units) on [xmin, xmax]."""
    _, log_f, log_s = _SPECS[name]
    p_y = dict(params)
    if "Lambda" in p_y:
        p_y["Lambda"] = params["Lambda"] * xmin
    if name == "lognormal":
        p_y["mu"] = params["mu"] - float(np.log(xmin))
    y = x / xmin
    log_z = _log_diff(log_s(1.0, p_y), None if xmax is None else log_s(xmax / xmin, p_y))
    return log_f(y, p_y) - log_z - np.log(xmin)


def fit(name: str, tail: np.ndarray, xmin: float, xmax: float | None,
        alpha_range: tuple[float | None, float | None] = (1, None)) -> AlternativeFit:
    """Fit distribution ``name`` to ``tail`` (all ≥ xmin, ≤ xmax) by maximum likelihood.

    Parameters
    ----------
    name : {"truncated_power_law", "exponential", "lognormal", "stretched_exponential"}
    tail : numpy.ndarray
        The tail data.
    xmin, xmax : float, float or None
        Support.
    alpha_range : tuple
        Bounds on the truncated power law's α (powerlaw applies ``parameter_ranges``
        to every distribution with an ``alpha``).

    Returns
    -------
    AlternativeFit
    """
    if name not in _SPECS:
        raise ValueError(f"unknown alternative {name!r}; choose from {NAMES}")
    make, log_f, log_s = _SPECS[name]
    y = np.asarray(tail, dtype=np.float64) / xmin
    ymax = None if xmax is None else xmax / xmin

    def nll(v: np.ndarray) -> float:
        p = make(v)
        with np.errstate(all="ignore"):
            try:
                log_z = _log_diff(log_s(1.0, p), None if ymax is None else log_s(ymax, p))
            except (ValueError, ZeroDivisionError, OverflowError):
                return 1e300
            value = -(np.sum(log_f(y, p)) - y.size * log_z)
        return float(value) if np.isfinite(value) else 1e300

    x0 = _start(name, y)
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * x0.size
    if name == "truncated_power_law":
        lo, hi = alpha_range
        bounds[0] = (lo, hi)
        x0[0] = np.clip(x0[0], lo if lo is not None else -np.inf, hi if hi is not None else np.inf)
    results = [scipy.optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds),
               _powerlaw_replica(name, y, nll, alpha_range, float(np.log(xmin)))]
    start = min(results, key=lambda r: r.fun)
    results.append(scipy.optimize.minimize(
        nll, start.x, method="Nelder-Mead", bounds=bounds,
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000}))
    best = min(results, key=lambda r: r.fun)
    params = _to_x_units(name, make(best.x), xmin)
    ll = float(np.sum(loglikelihoods(name, np.asarray(tail, dtype=np.float64), params, xmin,
                                     xmax)))
    return AlternativeFit(name=name, params=params, loglikelihood=ll, n=int(y.size), xmin=xmin,
                          xmax=xmax, converged=bool(any(r.success for r in results)))


def _powerlaw_replica(name: str, y: np.ndarray, nll: Any,
                      alpha_range: tuple[float | None, float | None], log_xmin: float) -> Any:
    """powerlaw 2.0's own optimisation: Nelder–Mead (tol 1e-4) on the raw parameters from
    its starting point, within its parameter ranges. Its simplex is scale-invariant for
    multiplicative parameters, so y = x/xmin units reproduce its path except for the
    lognormal's μ, which is shifted back to x units. The result is mapped to the internal
    coordinates of ``nll``; the caller keeps whichever optimum is best."""
    shift = log_xmin  # lognormal: μ_x = μ_y + ln xmin
    x0 = _start(name, y)
    positive = {"exponential": [0], "stretched_exponential": [0, 1],
                "truncated_power_law": [1], "lognormal": [1]}[name]
    raw0 = x0.copy()
    raw0[positive] = np.exp(raw0[positive])
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * x0.size
    for i in positive:
        bounds[i] = (0.0, None)
    if name == "truncated_power_law":
        bounds[0] = alpha_range

    def to_internal(raw: np.ndarray) -> np.ndarray:
        v = np.array(raw, dtype=np.float64)
        with np.errstate(divide="ignore"):
            v[positive] = np.log(np.maximum(v[positive], 1e-300))
        return v

    def raw_nll(raw: np.ndarray) -> float:
        if any(raw[i] <= 0 for i in positive):
            return 1e300  # powerlaw's in_range() is strict: a zero scale is out of range
        return nll(to_internal(raw))

    if name == "lognormal":
        raw0[0] += shift
        base = raw_nll

        def raw_nll(raw: np.ndarray) -> float:  # μ in x units
            shifted = np.array(raw, dtype=np.float64)
            shifted[0] -= shift
            return base(shifted)

    res = scipy.optimize.minimize(raw_nll, raw0, method="Nelder-Mead", bounds=bounds, tol=1e-4)
    x = np.array(res.x, dtype=np.float64)
    if name == "lognormal":
        x[0] -= shift
    res.x = to_internal(x)
    res.fun = nll(res.x)
    return res


def powerlaw_loglikelihoods(x: np.ndarray, alpha: float, xmin: float,
                            xmax: float | None) -> np.ndarray:
    """ln p(x) of the continuous power law with exponent α on [xmin, ∞) or [xmin, xmax]."""
    log_ratio = np.log(x / xmin)
    if xmax is None:
        return np.log((alpha - 1.0) / xmin) - alpha * log_ratio
    norm = -np.expm1((1.0 - alpha) * np.log(xmax / xmin)) / (alpha - 1.0)
    return -alpha * log_ratio - np.log(xmin) - np.log(norm)


def powerlaw_sample(u: np.ndarray, alpha: float, xmin: float, xmax: float | None) -> np.ndarray:
    """Inverse-CDF samples of the power law from uniforms ``u`` in [0, 1)."""
    if xmax is None:
        return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))
    span = -np.expm1((1.0 - alpha) * np.log(xmax / xmin))
    return xmin * (1.0 - u * span) ** (1.0 / (1.0 - alpha))


def loglikelihood_ratio(ll1: np.ndarray, ll2: np.ndarray, *, nested: bool,
                        normalized: bool = False) -> tuple[float, float]:
    """Likelihood-ratio statistic R and its p-value as powerlaw 2.0 defines them.

    R = Σ(ℓ₁ − ℓ₂) (−inf log-likelihoods replaced by ln 1e-307, as powerlaw does); for
    non-nested models p = erfc(|R|/√(2nσ²)) (Vuong), σ² the variance of ℓ₁ − ℓ₂; for
    nested models p = P(χ²₁ > 2|R|) (computed with the survival function, so tiny p
    values are not rounded to 0 as ``1 − cdf`` does).
    """
    ll1 = np.where(np.isneginf(ll1), _LOG_TINY, ll1)
    ll2 = np.where(np.isneginf(ll2), _LOG_TINY, ll2)
    n = ll1.size
    if n == 0:
        return 0.0, 1.0
    diff = ll1 - ll2
    R = float(np.sum(diff))
    variance = float(np.mean((diff - diff.mean()) ** 2))
    if nested:
        p = float(scipy.stats.chi2.sf(abs(2 * R), 1))
    else:
        p = float(scipy.special.erfc(abs(R) / np.sqrt(2 * n * variance))) if variance > 0 else 0.0
    if normalized:
        R = R / np.sqrt(n * variance) if variance > 0 else np.inf * np.sign(R)
    return R, p

"""Heavy-tailed fits: power law by Clauset–Shalizi–Newman with the KS-optimal xmin.

``fit_powerlaw(x)`` gives the same α, xmin and D as
``powerlaw.Fit(x, parameter_ranges={'alpha': [1, None]}, verbose=False)`` — the
``powerlaw`` package with its α ≤ 3 cap lifted (its default caps α at 3, which is wrong
for weight spectra, whose α runs from 1.5 to beyond 6). Conventions copied exactly
(docs/science.md §4; Clauset, Shalizi & Newman 2009, Eqs. 3.1, 3.9): candidates are the
distinct values with the two largest excluded; the KS distance is evaluated at distinct
values only with the empirical CDF k/n (fraction strictly below); values ≤ 0 are dropped;
ties go to the smallest xmin.
``candidates="ww"`` reproduces WeightWatcher's ``WWFit`` instead.

Precision: float64 throughout; α from suffix sums (relative error ≲ 1e-13), D agrees
with powerlaw to ~1e-15.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from rmt import _alternatives, config
from rmt._device import Device
from rmt._powerlaw_scan import scan
from rmt._threads import limit_threads
from rmt.errors import DataError

__all__ = ["BootstrapResult", "LikelihoodRatio", "PowerLawFit", "fit_powerlaw"]

Candidates = Literal["powerlaw", "ww"]


class LikelihoodRatio(NamedTuple):
    """Log-likelihood ratio test of the power law against an alternative.

    Attributes
    ----------
    R : float
        Σ (ln p_PL − ln p_alt) over the tail (or R/√(n·var) with ``normalized=True``);
        positive favours the power law.
    p : float
        Significance of the sign of R: Vuong's erfc(|R|/√(2n·var)) for non-nested pairs,
        1 − χ²₁.cdf(2|R|) for the nested power law ⊂ truncated power law.
    """

    R: float
    p: float


@dataclass(frozen=True)
class BootstrapResult:
    """Clauset–Shalizi–Newman semi-parametric bootstrap goodness-of-fit test.

    Attributes
    ----------
    pvalue : float
        Fraction of synthetic data sets whose refitted D is at least the observed D. CSN
        reject the power law when p ≤ 0.1.
    mc_error : float
        Monte-Carlo standard error √(p(1−p)/n_boot) of ``pvalue``.
    n_boot : int
        Number of synthetic data sets.
    D : float
        Observed KS distance.
    D_boot : numpy.ndarray
        The refitted KS distances.
    """

    pvalue: float
    mc_error: float
    n_boot: int
    D: float
    D_boot: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class PowerLawFit:
    """A power-law fit p(x) ∝ x^(−α) on xmin ≤ x (≤ xmax).

    Attributes
    ----------
    alpha : float
        Exponent α (scale-free). NaN when fewer than two candidate xmin exist.
    xmin : float
        Lower end of the power-law tail (same units as the data).
    xmax : float or None
        Upper bound the fit was restricted to, if any.
    D : float
        KS distance between the tail and the fitted law (powerlaw's convention).
    n_tail : int
        Data points ≥ xmin (plus, as in powerlaw, those above xmax).
    sigma : float
        Standard error of α̂, (α − 1)/√n with n the tail points in [xmin, xmax].
    warning : str
        Empty, or why the fit deserves care (short tail, no valid candidate, α on the
        boundary of ``alpha_range``); several joined by "; ".
    n : int
        Data points used (after dropping values ≤ 0 and above xmax).
    candidates : {"powerlaw", "ww"}
        Candidate set and KS convention used.
    alpha_range : tuple
        The α range the fit was restricted to.
    data : numpy.ndarray
        The data fitted, ascending.
    min_tail : int or None
        The smallest tail the xmin scan allowed.
    """

    alpha: float
    xmin: float
    xmax: float | None
    D: float
    n_tail: int
    sigma: float
    warning: str
    n: int
    candidates: Candidates
    alpha_range: tuple[float | None, float | None]
    data: np.ndarray = field(repr=False)
    min_tail: int | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Scalar fields as a dict (without the data).

        Returns
        -------
        dict
        """
        return {k: getattr(self, k) for k in ("alpha", "xmin", "xmax", "D", "n_tail", "sigma",
                                              "warning", "n", "candidates")}

    @property
    def tail(self) -> np.ndarray:
        """The data points in [xmin, xmax], ascending."""
        return self.data[self.data >= self.xmin]

    def loglikelihoods(self) -> np.ndarray:
        """ln p(x) of the fitted power law at every tail point.

        Returns
        -------
        numpy.ndarray
            float64, one per tail point.
        """
        return _alternatives.powerlaw_loglikelihoods(self.tail, self.alpha, self.xmin, self.xmax)

    def fit_alternative(self, name: str) -> _alternatives.AlternativeFit:
        """Maximum-likelihood fit of an alternative distribution to the same tail.

        Parameters
        ----------
        name : {"truncated_power_law", "exponential", "lognormal", "stretched_exponential"}

        Returns
        -------
        rmt._alternatives.AlternativeFit
        """
        return _alternatives.fit(name, self.tail, self.xmin, self.xmax, self.alpha_range)

    def compare(self, name: str, *, normalized: bool = False) -> LikelihoodRatio:
        """Log-likelihood ratio of the power law against an alternative on the tail.

        As ``powerlaw.Fit.distribution_compare('power_law', name)``: Vuong's test, or the
        χ²₁ test for the nested truncated power law.

        Parameters
        ----------
        name : {"truncated_power_law", "exponential", "lognormal", "stretched_exponential"}
            The alternative.
        normalized : bool, default False
            Return R/√(n·var) instead of R (WeightWatcher uses the normalised ratio).

        Returns
        -------
        LikelihoodRatio
            ``(R, p)``; R > 0 favours the power law.

        References
        ----------
        Q. H. Vuong, Econometrica 57(2), 307–333, 1989; A. Clauset, C. R. Shalizi and
        M. E. J. Newman, SIAM Review 51(4), 661–703, 2009, §5.
        """
        alt = self.fit_alternative(name)
        R, p = _alternatives.loglikelihood_ratio(
            self.loglikelihoods(), alt.loglikelihoods(self.tail),
            nested=name == "truncated_power_law", normalized=normalized)
        return LikelihoodRatio(R, p)

    def best_fit(self, *, p_threshold: float = 0.05,
                 candidates: tuple[str, ...] = _alternatives.NAMES) -> str:
        """The distribution the tail favours: "power_law" unless an alternative wins.

        An alternative wins when its likelihood is significantly higher (R < 0 and
        p ≤ ``p_threshold``); among winners the one with the most negative R is returned.

        Parameters
        ----------
        p_threshold : float, default 0.05
            Significance an alternative's win needs.
        candidates : tuple of str
            The alternatives considered (default all four).

        Returns
        -------
        str
            ``"power_law"`` or the winning alternative's name.
        """
        best, best_R = "power_law", 0.0
        for name in candidates:
            R, p = self.compare(name)
            if R < 0 and p <= p_threshold and R < best_R:
                best, best_R = name, R
        return best

    def bootstrap_pvalue(self, n_boot: int = 1000, *, rng: Any = None,
                         device: Device = "auto") -> BootstrapResult:
        """Clauset–Shalizi–Newman semi-parametric bootstrap p-value of the fit.

        Each synthetic set has n points: with probability n_tail/n a draw from the fitted
        power law above xmin, otherwise a value resampled from the data below xmin. Each
        is refitted with the full xmin scan (same options); p is the fraction with
        D* ≥ D. The Monte-Carlo error is √(p(1−p)/n_boot) (±0.01 needs ~2500 sets).

        Parameters
        ----------
        n_boot : int, default 1000
            Synthetic data sets.
        rng : None, int or numpy.random.Generator
            Random source (seeded for reproducibility).
        device : {"auto", "cpu", "gpu"}
            Where the refits' KS scans run.

        Returns
        -------
        BootstrapResult

        References
        ----------
        Clauset, Shalizi and Newman, SIAM Review 51(4), 2009, §4.1.
        """
        if not np.isfinite(self.alpha):
            raise DataError("cannot bootstrap a fit without a finite alpha")
        rng = np.random.default_rng(rng)
        body = self.data[self.data < self.xmin]
        n, n_tail = self.data.size, int((self.data >= self.xmin).sum())
        from_tail = rng.random((n_boot, n)) < n_tail / n
        if body.size == 0:
            from_tail[:] = True
        u = rng.random((n_boot, n))
        synthetic = np.where(
            from_tail,
            _alternatives.powerlaw_sample(u, self.alpha, self.xmin, self.xmax),
            body[rng.integers(0, max(body.size, 1), size=(n_boot, n))] if body.size else 0.0,
        )
        D_boot = np.empty(n_boot)
        for b in range(n_boot):
            refit = fit_powerlaw(synthetic[b], xmax=self.xmax, alpha_range=self.alpha_range,
                                 min_tail=self.min_tail, candidates=self.candidates,
                                 device=device)
            D_boot[b] = refit.D
        p = float(np.mean(D_boot >= self.D))
        return BootstrapResult(pvalue=p, mc_error=float(np.sqrt(p * (1 - p) / n_boot)),
                               n_boot=n_boot, D=self.D, D_boot=D_boot)

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Empirical CCDF of the data with the fitted tail, log–log.

        Parameters
        ----------
        ax : matplotlib.axes.Axes, optional
            Axes to draw on (a new figure when None).
        **kwargs
            Passed to the data's ``plot`` call.

        Returns
        -------
        matplotlib.axes.Axes
        """
        from rmt.plot import plot_powerlaw_fit

        return plot_powerlaw_fit(self, ax=ax, **kwargs)


def _prepare(x: Any, xmax: float | None) -> tuple[np.ndarray, int]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.ravel()
    if arr.size == 0:
        raise DataError("fit_powerlaw got no data")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"fit_powerlaw data contain {int(bad.sum())} NaN/Inf values")
    arr = arr[arr > 0]
    if arr.size == 0:
        raise DataError("fit_powerlaw needs positive data; every value is <= 0")
    n_above = 0
    if xmax is not None:
        n_above = int((arr > xmax).sum())
        arr = arr[arr <= xmax]
        if arr.size == 0:
            raise DataError(f"no data at or below xmax={xmax}")
    arr = np.sort(arr)
    if arr[0] == arr[-1]:
        raise DataError("fit_powerlaw needs at least 2 distinct positive values")
    return arr, n_above


def fit_powerlaw(
    x: Any,
    *,
    xmin: float | None = None,
    xmax: float | None = None,
    alpha_range: tuple[float | None, float | None] = (1, None),
    min_tail: int | None = None,
    candidates: Candidates = "powerlaw",
    device: Device = "auto",
    n_threads: int | None = None,
) -> PowerLawFit:
    """Fit a power law to the tail of ``x`` with the KS-optimal xmin.

    Parameters
    ----------
    x : array_like
        Data, e.g. the eigenvalues of an ESD. Values ≤ 0 are dropped (filter numerical
        zeros first: see ``rmt.metrics.numerical_zero_threshold``).
    xmin : float, optional
        Fix xmin instead of scanning.
    xmax : float, optional
        Restrict the law to [xmin, xmax]: data above are dropped, α comes from the
        bounded likelihood (safeguarded Newton, O(1) per candidate per iteration) and the
        fitted CDF is normalised on [xmin, xmax]. (powerlaw itself keeps the unbounded
        closed form for α̂ ∈ (1.5, 3]; we do not.)
    alpha_range : (float or None, float or None), default (1, None)
        powerlaw's ``parameter_ranges['alpha']``: candidates whose α is outside, or
        within 0.01 of a finite bound, are not eligible. ``(0, 3)`` reproduces powerlaw's
        own (capped) default.
    min_tail : int, optional
        Candidates with fewer tail points are not eligible (default: none excluded, as
        in powerlaw).
    candidates : {"powerlaw", "ww"}, default "powerlaw"
        ``"powerlaw"``: powerlaw 2.0's candidate set and KS convention. ``"ww"``:
        WeightWatcher's WWFit (every element but the last is a candidate, the KS
        distance is taken at every element, no α range), to compare with its ``alpha``.
    device : {"auto", "cpu", "gpu"}, default "auto"
        Where the KS scan runs.
    n_threads : int, optional
        Numba/BLAS threads for the scan (default: the limits already in force,
        never more; see :func:`rmt._threads.limit_threads`).

    Returns
    -------
    PowerLawFit

    Raises
    ------
    rmt.errors.DataError
        Empty data, NaN/Inf, no positive value, or fewer than 2 distinct values.

    Notes
    -----
    powerlaw refits candidates with α̂ ∉ (1.5, 3] by Nelder–Mead. Started at the exact
    continuous MLE every simplex trial is worse, so it returns its start point: the
    measured difference in α and D is 0 on every data set of the test suite. With fewer
    than 4 distinct values there are fewer than two candidates and the fit is NaN with a
    warning, as in powerlaw.

    References
    ----------
    A. Clauset, C. R. Shalizi and M. E. J. Newman, "Power-law distributions in empirical
    data", SIAM Review 51(4), 661–703, 2009, Eqs. 3.1, 3.9.
    """
    if candidates not in ("powerlaw", "ww"):
        raise ValueError(f"candidates must be 'powerlaw' or 'ww', got {candidates!r}")
    if min_tail is not None and min_tail < 1:
        raise ValueError(f"min_tail must be >= 1, got {min_tail}")
    data, n_above = _prepare(x, xmax)
    if xmin is not None and not (0 < xmin <= data[-1]):
        raise DataError(f"xmin={xmin} must be positive and at most the largest value {data[-1]}")
    warnings: list[str] = []
    n_distinct = int(np.count_nonzero(np.diff(data))) + 1
    if xmin is None and candidates == "powerlaw" and n_distinct < 4:
        return PowerLawFit(np.nan, np.nan, xmax, np.nan, 0, np.nan,
                           f"only {n_distinct} distinct values: fewer than 2 candidate xmin",
                           data.size, candidates, alpha_range, data, min_tail)
    if candidates == "ww" and xmin is None and xmax is None and data.size < WW_SMALL_N:
        return _ww_small_n(data, alpha_range, min_tail)
    with limit_threads(n_threads):
        result = scan(data, xmax=xmax, alpha_range=alpha_range, min_tail=min_tail,
                      candidates=candidates, device=device, fixed_xmin=xmin)
    k = result.best
    alpha, D = float(result.alphas[k]), float(result.D[k])
    n_in = int(result.n_tail[k])
    if candidates == "powerlaw" and xmin is None and not result.any_valid:
        warnings.append(f"no candidate xmin gives a valid fit for alpha_range={alpha_range}; "
                        "reporting the least D among all")
    elif candidates == "powerlaw" and not result.valid[k]:
        warnings.append(f"alpha={alpha:.4g} is outside or within 0.01 of alpha_range="
                        f"{alpha_range}")
    if n_in < config.SHORT_TAIL:
        warnings.append(f"tail has only {n_in} points (< {config.SHORT_TAIL})")
    if xmin is None and k == result.xmins.size - 1:
        warnings.append("xmin is the largest candidate")
    return PowerLawFit(
        alpha=alpha,
        xmin=float(result.xmins[k]),
        xmax=xmax,
        D=D,
        n_tail=n_in + n_above,
        sigma=(alpha - 1.0) / np.sqrt(n_in),
        warning="; ".join(warnings),
        n=int(data.size),
        candidates=candidates,
        alpha_range=alpha_range,
        data=data,
        min_tail=min_tail,
    )


#: Below this many data points WeightWatcher 0.7.7's WWFit switches to its small-n rule.
WW_SMALL_N = 20


def _ww_small_n(data: np.ndarray, alpha_range: Any, min_tail: int | None) -> PowerLawFit:
    """WeightWatcher 0.7.7's ``WWFit`` for n < 20, as it runs (``candidates="ww"``).

    Its ``fit_powerlaw_smallN`` computes the bias-corrected MLE α = 1 + (k − 1)/Σ ln(x/xmin)
    for tails of k ≥ 8 points (k = n with all points when none has 8) and the KS distance
    D; it means to choose xmin by D − 0.868/√k, but ``WWFit.__init__`` then takes the
    argmin of D over the candidates anyway, and that is what its ``alpha`` column shows:
    reproduced here.
    """
    n = data.size
    logs = np.log(data)
    alphas = np.zeros(n - 1)
    Ds = np.ones(n - 1)
    for i in range(n - 1):
        k = n - i
        spread = float(np.sum(logs[i:]) - k * logs[i])
        if k < 8 or spread <= 1e-12:
            continue
        alphas[i] = 1.0 + (k - 1.0) / spread
        if alphas[i] > 1.0:
            Ds[i] = float(np.max(np.abs(np.arange(k) / k
                                        - (1.0 - (data[i:] / data[i]) ** (1.0 - alphas[i])))))
    if not np.any(Ds < 1.0) and n >= 2:  # no tail of 8: the whole data set
        spread = float(np.sum(logs) - n * logs[0])
        if spread > 1e-12:
            alphas[0] = 1.0 + (n - 1.0) / spread
            Ds[0] = float(np.max(np.abs(np.arange(n) / n
                                        - (1.0 - (data / data[0]) ** (1.0 - alphas[0])))))
    i = int(np.argmin(Ds))
    alpha = float(alphas[i])
    return PowerLawFit(alpha=alpha, xmin=float(data[i]), xmax=None, D=float(Ds[i]),
                       n_tail=n - i, sigma=(alpha - 1.0) / np.sqrt(n - i),
                       warning=f"WeightWatcher's small-n rule (n = {n} < {WW_SMALL_N})",
                       n=int(n), candidates="ww", alpha_range=alpha_range, data=data,
                       min_tail=min_tail)


"""Martin & Mahoney's 5+1 phases of self-regularisation, made operational.

The papers define the phases qualitatively; this is the decision procedure of
docs/science.md §6 (every threshold is a field of :class:`PhaseThresholds`, and the
measurement or source behind each is in the table there):

1. **Rank-collapse** when ≥ ``rank_loss_threshold`` of the singular values are numerically
   zero (float64's epsilon, confirmed on singular values when W is at hand), or when
   ≥ ``gap_fraction`` of the eigenvalues lie ≥ ``gap_decades`` decades below the rest with
   ≥ ``gap_fraction`` above (weight-decay collapse, which leaves a full-rank but split ESD;
   no other phase shows a gap above ~0.15 decades).
2. MP fit with Tracy–Widom spikes at false-positive rate ``fpr`` (``rmt.fit_mp``); per spike
   θ̂ by BBP inversion; *near* spikes have θ̂ < ``bleeding_band``·θ_c.
3. The MP fit's KS distance D_mp is judged against its null scale d₀ = c·ln(n)/n
   (calibrated on 160 Gaussian matrices, n = 64…1024 eigenvalues, Q = 1…8: n·D/ln n has
   mean 0.47 and 90th percentile ≈ 0.6, independent of Q; c = ``d0_constant``). A closed form
   costs nothing, where a simulated null would cost three eigensolves per shape.
4. Power-law fit (``rmt.fit_powerlaw``, α uncapped).
5. Decide in order: no spike → random-like; only near spikes (≤ ``max_spike_fraction`` of
   the ESD) → bleeding-out; an MP bulk (D_mp ≤ ``mp_tolerance``·d₀) with mostly far spikes →
   bulk+spikes; a power-law tail with α < ``alpha_boundary`` over ≥ ``min_tail`` points →
   heavy-tailed ("very" below ``very_heavy_alpha``); otherwise bulk-decay. α alone never
   decides: pure bulk+spikes matrices have α ≈ 2.6–4.5 from their spikes.

The result does not depend on the scale of W, its orientation, or any random state.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt._device import Device
from rmt.errors import DataError
from rmt.heavytail import PowerLawFit, fit_powerlaw
from rmt.metrics import EPS64, ESDMetrics, esd_metrics, numerical_zero_threshold
from rmt.mp import MPFit, fit_mp
from rmt.spectra import Conv, esd, weight_shape
from rmt.tracywidom import johnstone

__all__ = ["DEFAULTS", "Decision", "Phase", "PhaseResult", "PhaseThresholds",
           "classifier_powerlaw_fit", "classify", "classify_esd", "decide", "null_ks_scale",
           "thresholds_from"]


class Phase(enum.StrEnum):
    """The 5+1 phases; ``str(phase)`` is the value."""

    RANDOM_LIKE = "random-like"
    BLEEDING_OUT = "bleeding-out"
    BULK_PLUS_SPIKES = "bulk+spikes"
    BULK_DECAY = "bulk-decay"
    HEAVY_TAILED = "heavy-tailed"
    RANK_COLLAPSE = "rank-collapse"


@dataclass(frozen=True)
class PhaseThresholds:
    """Every threshold of the phase decision, with its default and where it came from.

    Pass one to :func:`classify`, :func:`classify_esd`, :func:`decide` or
    :func:`rmt.analyze` as ``thresholds=``; keyword overrides (``classify(W, fpr=0.05)``)
    are applied on top of it. Invalid values raise ``ValueError`` naming the field.

    Attributes
    ----------
    fpr : float, default 0.01
        Tracy–Widom false-positive rate of the spike test for a pure-noise matrix.
    bleeding_band : float, default 1.5
        A spike is *near* the edge when its BBP strength θ̂ < bleeding_band·θ_c ...
    bleeding_tw : float, default 12.0
        ... or when it lies within this many TW widths of the edge.
    max_spike_fraction : float, default 0.05
        More outliers than this share of the ESD is not a low-rank signal (bulk+spikes).
    near_spike_share : float, default 0.2
        Bulk+spikes tolerates near spikes up to this share of all spikes ...
    near_spike_floor : int, default 1
        ... and at least this many.
    mp_tolerance : float, default 3.0
        An MP bulk has D_mp ≤ mp_tolerance·d₀ (false failure < 1e-3 on Gaussian noise).
    d0_constant : float, default 0.6
        d₀ = d0_constant·ln(n)/n, the 90th percentile of n·D_mp/ln n on Gaussian matrices.
    alpha_boundary : float, default 4.0
        Heavy-tailed below, bulk-decay above (the μ = 4 boundary of the universality
        classes).
    very_heavy_alpha : float, default 2.0
        Heavy-tailed sub-label "very" below this α.
    min_tail : int, default 50
        The classifier's power-law fit uses a tail of at least this many points.
    alpha_margin : float, default 2.0
        Heavy-tailed only when α + alpha_margin·σ_α < alpha_boundary.
    pl_reliable_D : float, default 0.1
        A power-law fit with D ≤ this (and ≥ min_tail points) is reported as reliable.
    rank_loss_threshold : float, default 0.05
        Rank-collapse from this share of numerically zero singular values.
    gap_decades : float, default 2.0
        Rank-collapse from a gap this wide in log10 λ ...
    gap_fraction : float, default 0.05
        ... with at least this share of the ESD on each side.
    """

    fpr: float = 0.01
    bleeding_band: float = 1.5
    bleeding_tw: float = 12.0
    max_spike_fraction: float = 0.05
    near_spike_share: float = 0.2
    near_spike_floor: int = 1
    mp_tolerance: float = 3.0
    d0_constant: float = 0.6
    alpha_boundary: float = 4.0
    very_heavy_alpha: float = 2.0
    min_tail: int = 50
    alpha_margin: float = 2.0
    pl_reliable_D: float = 0.1
    rank_loss_threshold: float = 0.05
    gap_decades: float = 2.0
    gap_fraction: float = 0.05

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            lowest = 0 if f.name == "near_spike_floor" else None
            share = f.name in _SHARES
            ok = (isinstance(value, int | float | np.integer | np.floating)
                  and not isinstance(value, bool) and bool(np.isfinite(value))
                  and (value >= lowest if lowest is not None else value > 0)
                  and (not share or value < 1 or (f.name == "near_spike_share" and value == 1)))
            if not ok:
                allowed = ("a number in (0, 1)" if share else "a number >= 0" if lowest == 0
                           else "a finite number > 0")
                raise ValueError(f"{f.name} must be {allowed}, got {value!r}")

    def replace(self, **overrides: Any) -> PhaseThresholds:
        """A copy with some thresholds changed (``TypeError`` for an unknown name).

        Parameters
        ----------
        **overrides
            Threshold names and their new values.

        Returns
        -------
        PhaseThresholds
        """
        unknown = set(overrides) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown classifier parameter(s) {sorted(unknown)}; "
                            f"known: {sorted(DEFAULTS)}")
        return dataclasses.replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict[str, float]:
        """The thresholds as a plain dict.

        Returns
        -------
        dict
        """
        return dataclasses.asdict(self)

    def overrides(self) -> dict[str, float]:
        """The thresholds that differ from the defaults.

        Returns
        -------
        dict
        """
        return {k: v for k, v in self.to_dict().items() if v != DEFAULTS[k]}


_SHARES = ("fpr", "max_spike_fraction", "near_spike_share", "rank_loss_threshold",
           "gap_fraction")

DEFAULTS: dict[str, float] = PhaseThresholds().to_dict()


def thresholds_from(thresholds: PhaseThresholds | None = None,
                    **overrides: Any) -> PhaseThresholds:
    """``thresholds`` (default :class:`PhaseThresholds`) with keyword overrides applied.

    Parameters
    ----------
    thresholds : PhaseThresholds, optional
        The base thresholds.
    **overrides
        Individual thresholds replacing the base's.

    Returns
    -------
    PhaseThresholds

    Raises
    ------
    TypeError
        ``thresholds`` is not a PhaseThresholds, or an override name is unknown.
    """
    if thresholds is not None and not isinstance(thresholds, PhaseThresholds):
        raise TypeError(f"thresholds must be a PhaseThresholds, got {type(thresholds).__name__}")
    return (thresholds or PhaseThresholds()).replace(**overrides)


def null_ks_scale(n: int, d0_constant: float = DEFAULTS["d0_constant"]) -> float:
    """d₀ = c·ln(n)/n: the KS distance an MP fit reaches on pure noise with n eigenvalues.

    Parameters
    ----------
    n : int
        Eigenvalues in the bulk.
    d0_constant : float, default 0.6
        c (:attr:`PhaseThresholds.d0_constant`).

    Returns
    -------
    float
    """
    n = max(int(n), 2)
    return d0_constant * float(np.log(n)) / n


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` concluded and the derived numbers it concluded from.

    Attributes
    ----------
    phase : Phase
    sublabel : str
        ``"very"``/``"moderate"`` for heavy-tailed, ``"rank"``/``"gap"`` for
        rank-collapse, else ``""``.
    reason : str
        One sentence saying why.
    rank_loss_fraction : float
        Numerically zero singular values over the number of eigenvalues.
    gap_decades : float
        Widest gap in log10 λ with ≥ gap_fraction of the ESD on each side.
    n_near, n_far : int
        TW outliers near the MP edge and far from it.
    d0 : float
        Null KS scale of the bulk (NaN without an MP fit).
    pl_reliable : bool
        Whether the power-law tail holds ≥ min_tail points with D ≤ pl_reliable_D.
    thresholds : PhaseThresholds
        The thresholds applied.
    """

    phase: Phase
    sublabel: str
    reason: str
    rank_loss_fraction: float
    gap_decades: float
    n_near: int
    n_far: int
    d0: float
    pl_reliable: bool
    thresholds: PhaseThresholds


@dataclass(frozen=True, eq=False)
class PhaseResult:
    """The phase of one layer, the fits behind it and every number that decided it.

    Attributes
    ----------
    decision : Decision
        The label, its reason and the derived numbers.
    N, M : int
        Shape read from the weight (pooled conv slices give n_evals = M·kh·kw).
    rank_loss : int
        Numerically zero singular values.
    evals : numpy.ndarray
        The ESD, ascending.
    mp_fit : MPFit or None
        Marchenko–Pastur fit of the non-zero eigenvalues (``rmt.fit_mp``).
    pl_fit : PowerLawFit or None
        The classifier's power-law fit (tail of ≥ min_tail points).

    The properties ``phase, sublabel, reason, n_evals, rank_loss_fraction,
    gap_decades, sigma2, lambda_plus, n_spikes, n_near, n_far, theta, theta_c, tw_z,
    D_mp, d0, alpha, xmin, D_pl, n_tail, pl_reliable, params`` read the decision and
    the fits (NaN or 0 where a fit is missing).
    """

    decision: Decision
    N: int
    M: int
    rank_loss: int
    evals: np.ndarray = field(repr=False)
    mp_fit: MPFit | None = field(default=None, repr=False)
    pl_fit: PowerLawFit | None = field(default=None, repr=False)

    phase = property(lambda self: self.decision.phase)
    sublabel = property(lambda self: self.decision.sublabel)
    reason = property(lambda self: self.decision.reason)
    rank_loss_fraction = property(lambda self: self.decision.rank_loss_fraction)
    gap_decades = property(lambda self: self.decision.gap_decades)
    n_near = property(lambda self: self.decision.n_near)
    n_far = property(lambda self: self.decision.n_far)
    d0 = property(lambda self: self.decision.d0)
    pl_reliable = property(lambda self: self.decision.pl_reliable)
    n_evals = property(lambda self: int(self.evals.size))
    num_evals = n_evals  # the table column's name
    sigma2 = property(lambda self: _get(self.mp_fit, "sigma2", np.nan))
    lambda_plus = property(lambda self: _get(self.mp_fit, "lambda_plus", np.nan))
    n_spikes = property(lambda self: _get(self.mp_fit, "n_spikes", 0))
    theta = property(lambda self: _get(self.mp_fit, "theta", np.empty(0)))
    tw_z = property(lambda self: _get(self.mp_fit, "tw_z", np.nan))
    D_mp = property(lambda self: _get(self.mp_fit, "D", np.nan))
    alpha = property(lambda self: _get(self.pl_fit, "alpha", np.nan))
    xmin = property(lambda self: _get(self.pl_fit, "xmin", np.nan))
    D_pl = property(lambda self: _get(self.pl_fit, "D", np.nan))
    n_tail = property(lambda self: int(_get(self.pl_fit, "n_tail", 0)))

    @property
    def theta_c(self) -> float:
        """BBP critical strength Q^(−1/4)."""
        return float((self.N / self.M) ** -0.25)

    @property
    def params(self) -> dict[str, float]:
        """The thresholds used, as a dict."""
        return self.decision.thresholds.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Scalar fields as a dict (``phase`` as its string).

        Returns
        -------
        dict
        """
        keys = ("sublabel", "reason", "N", "M", "num_evals", "rank_loss", "rank_loss_fraction",
                "gap_decades", "sigma2", "lambda_plus", "n_spikes", "n_near", "n_far",
                "theta_c", "tw_z", "D_mp", "d0", "alpha", "xmin", "D_pl", "n_tail",
                "pl_reliable")
        return {"phase": str(self.phase), **{k: getattr(self, k) for k in keys}}

    def plot(self, axes: Any = None) -> Any:
        """ESD with the MP fit and spikes (left) and the CCDF with the power-law tail (right).

        Parameters
        ----------
        axes : sequence of two matplotlib Axes, optional
            Where to draw; default a new 1×2 figure.

        Returns
        -------
        numpy.ndarray of matplotlib Axes
        """
        from rmt.plot import plot_phase

        return plot_phase(self, axes=axes)


def _get(fit: Any, attr: str, missing: Any) -> Any:
    return missing if fit is None else getattr(fit, attr)


def _largest_gap(ev_pos: np.ndarray, n_zero: int, zero: float, n_total: int,
                 fraction: float) -> float:
    """Widest gap in log10 λ with ≥ ``fraction`` of the ESD on each side.

    Numerical zeros (``n_zero`` eigenvalues ≤ ``zero``) stand at ``zero``: their values are
    round-off, but they lie at least that far below the rest. This is how a low-rank matrix
    stored in float32/float16, whose rounding makes it numerically full-rank in float64,
    is still seen as collapsed.
    """
    logs = np.log10(ev_pos)
    below = n_zero + np.arange(1, ev_pos.size)
    if n_zero and zero > 0:
        logs = np.r_[np.log10(zero), logs]
        below = np.r_[n_zero, below]
    if logs.size < 2:
        return 0.0
    above = n_total - below
    ok = (below >= fraction * n_total) & (above >= fraction * n_total)
    gaps = np.diff(logs)
    return float(gaps[ok].max()) if ok.any() else 0.0


def decide(mp_fit: MPFit | None, pl_fit: PowerLawFit | None, metrics: ESDMetrics,
           thresholds: PhaseThresholds) -> Decision:
    """The 5+1 phase from the fits of one ESD: a pure function, nothing is refitted.

    Parameters
    ----------
    mp_fit : MPFit or None
        :func:`rmt.fit_mp` of the non-zero eigenvalues (those above
        ``numerical_zero_threshold``) at ``thresholds.fpr``; None when fewer than two.
    pl_fit : PowerLawFit or None
        :func:`rmt.fit_powerlaw` of the same eigenvalues with a tail of at least
        ``thresholds.min_tail`` points (:func:`classifier_powerlaw_fit`); None if it failed.
    metrics : ESDMetrics
        :func:`rmt.esd_metrics` of the whole ESD (rank loss, λmax, number of eigenvalues).
    thresholds : PhaseThresholds
        The thresholds.

    Returns
    -------
    Decision

    Raises
    ------
    rmt.errors.DataError
        No MP fit for a spectrum that is not rank-collapsed.
    """
    p = thresholds
    n = metrics.n_evals
    rank_loss = metrics.rank_loss
    pos = mp_fit.evals if mp_fit is not None else np.empty(0)
    M = mp_fit.M if mp_fit is not None else n
    zero = M * EPS64 * max(metrics.lambda_max, 0.0)
    gap = _largest_gap(pos, n - pos.size, zero, n, p.gap_fraction) if pos.size else 0.0
    if rank_loss / n >= p.rank_loss_threshold or gap >= p.gap_decades:
        if rank_loss / n >= p.rank_loss_threshold:
            sub, reason = "rank", (f"{rank_loss} of {n} singular values are numerically zero "
                                   f"(rank loss {rank_loss / n:.0%} >= "
                                   f"{p.rank_loss_threshold:.0%})")
        else:
            sub, reason = "gap", (f"part of the spectrum sits {gap:.1f} decades below the "
                                  "rest (collapsed directions, as under strong weight decay)")
        return Decision(Phase.RANK_COLLAPSE, sub, reason, rank_loss / n, gap, n_near=0,
                        n_far=0, d0=np.nan, pl_reliable=False, thresholds=p)
    if mp_fit is None:
        raise DataError(f"no MP fit for a spectrum of {n} eigenvalues that is not collapsed")
    mpf, N = mp_fit, mp_fit.N
    k = mpf.n_spikes
    mu_tw, s_tw = johnstone(int(N), M)
    spike_z = (mpf.spikes * N / mpf.sigma2 - mu_tw) / s_tw
    near = int(np.count_nonzero((mpf.theta < p.bleeding_band * mpf.theta_c)
                                | (spike_z <= p.bleeding_tw)))
    far = k - near
    d0 = null_ks_scale(pos.size - k, p.d0_constant)
    ratio = mpf.D / d0
    alpha, D_pl, n_tail = (np.nan, np.nan, 0) if pl_fit is None else (
        pl_fit.alpha, pl_fit.D, int(pl_fit.n_tail))
    reliable = bool(n_tail >= p.min_tail and D_pl <= p.pl_reliable_D)
    few = k / n <= p.max_spike_fraction
    mp_bulk = ratio <= p.mp_tolerance
    if k == 0:
        phase, sub = Phase.RANDOM_LIKE, ""
        reason = (f"no eigenvalue above the Tracy-Widom edge (lambda_max at z = {mpf.tw_z:.1f}); "
                  f"the ESD fits Marchenko-Pastur (D_mp = {ratio:.1f} d0)")
    elif few and far == 0:
        phase, sub = Phase.BLEEDING_OUT, ""
        reason = (f"{k} eigenvalue(s) just above the MP edge (theta < {p.bleeding_band:g} "
                  f"theta_c or within {p.bleeding_tw:g} TW widths), none far out; bulk "
                  f"D_mp = {ratio:.1f} d0")
    elif few and mp_bulk and near <= max(p.near_spike_floor, p.near_spike_share * k):
        phase, sub = Phase.BULK_PLUS_SPIKES, ""
        reason = f"{k} spikes well separated from an MP bulk (D_mp = {ratio:.1f} d0)"
    elif (np.isfinite(alpha) and n_tail >= p.min_tail
          and alpha + p.alpha_margin * (alpha - 1) / np.sqrt(n_tail) < p.alpha_boundary):
        phase = Phase.HEAVY_TAILED
        sub = "very" if alpha < p.very_heavy_alpha else "moderate"
        reason = (f"{sub} heavy tail: power law alpha = {alpha:.2f} over {n_tail} eigenvalues; "
                  f"{k} outliers and a non-MP bulk (D_mp = {ratio:.1f} d0)")
    else:
        phase, sub = Phase.BULK_DECAY, ""
        why = (f"alpha = {alpha:.2f} +- {(alpha - 1) / np.sqrt(max(n_tail, 1)):.2f} is not "
               f"clearly below {p.alpha_boundary:g}" if n_tail >= p.min_tail
               else f"the power-law tail has only {n_tail} points")
        reason = (f"{k} outliers ({near} near the edge) over a bulk that is no longer MP "
                  f"(D_mp = {ratio:.1f} d0), but no heavy tail ({why})")
    return Decision(phase, sub, reason, rank_loss / n, gap, n_near=near, n_far=far, d0=d0,
                    pl_reliable=reliable, thresholds=p)


def classifier_powerlaw_fit(nonzero: np.ndarray, thresholds: PhaseThresholds, *,
                            device: Device = "auto",
                            tail_fit: PowerLawFit | None = None) -> PowerLawFit | None:
    """The power-law fit the classifier judges: a tail of ≥ ``thresholds.min_tail`` points.

    Parameters
    ----------
    nonzero : numpy.ndarray
        The non-zero eigenvalues.
    thresholds : PhaseThresholds
        Gives ``min_tail``.
    device : {"auto", "cpu", "gpu"}
        Where the scan runs.
    tail_fit : PowerLawFit, optional
        A fit of the same eigenvalues with :func:`rmt.fit_powerlaw`'s defaults. When its
        tail already holds ≥ min_tail points it is the constrained optimum too (the
        constraint only removes candidates it did not choose) and is returned as is.

    Returns
    -------
    PowerLawFit or None
        None when no fit is possible (too few points).
    """
    if tail_fit is not None and tail_fit.n_tail >= thresholds.min_tail:
        return tail_fit
    try:
        return fit_powerlaw(nonzero, device=device, min_tail=int(thresholds.min_tail))
    except DataError:
        return None


def classify_esd(ev: Any, N: int, M: int | None = None, *, rank_loss: int | None = None,
                 device: Device = "auto", thresholds: PhaseThresholds | None = None,
                 **overrides: Any) -> PhaseResult:
    """Phase of a layer from its ESD (eigenvalues of X = WᵀW/N, any scale).

    Parameters
    ----------
    ev : array_like
        Eigenvalues (any order, any scale; zeros allowed).
    N : int
        Rows of the oriented matrix (N ≥ M).
    M : int, optional
        Columns of each matrix (pooled conv ESDs have len(ev) = M·kh·kw); default len(ev).
    rank_loss : int, optional
        Numerically zero singular values if known (``classify`` confirms them by SVD);
        default: the Gram-screen count of eigenvalues ≤ M·eps·λmax.
    device : {"auto", "cpu", "gpu"}
        Where the power-law scan runs.
    thresholds : PhaseThresholds, optional
        Default :class:`PhaseThresholds`.
    **overrides
        Individual thresholds overriding ``thresholds`` (``fpr=0.05``, ...).

    Returns
    -------
    PhaseResult

    Raises
    ------
    rmt.errors.DataError
        Fewer than 4 eigenvalues, or NaN/Inf among them.
    TypeError
        An unknown threshold name.
    """
    th = thresholds_from(thresholds, **overrides)
    ev = np.sort(np.asarray(ev, dtype=np.float64).ravel())
    if ev.size < 4 or not np.all(np.isfinite(ev)):
        raise DataError(f"classify_esd needs >= 4 finite eigenvalues, got {ev.size}")
    M = ev.size if M is None else int(M)
    nonzero = ev[ev > numerical_zero_threshold(ev, M)]
    metrics = esd_metrics(ev, M=M)
    if rank_loss is not None:
        metrics = dataclasses.replace(metrics, rank_loss=int(rank_loss))
    mpf = fit_mp(nonzero, N=N, M=M, fpr=th.fpr) if nonzero.size >= 2 else None
    pl = classifier_powerlaw_fit(nonzero, th, device=device)
    return PhaseResult(decide(mpf, pl, metrics, th), N=int(N), M=M,
                       rank_loss=metrics.rank_loss, evals=ev, mp_fit=mpf, pl_fit=pl)


def classify(W: Any, *, conv: Conv = "slices", device: Device = "auto", name: str | None = None,
             thresholds: PhaseThresholds | None = None, **overrides: Any) -> PhaseResult:
    """Phase of one weight matrix (or conv kernel).

    Parameters
    ----------
    W : array_like
        The weight in any supported storage dtype (float16/bfloat16/float32/float64...).
    conv : {"slices", "flatten"}
        Conv rule, as in :func:`rmt.esd`.
    device : {"auto", "cpu", "gpu"}
        Where the ESD and the power-law scan run.
    name : str, optional
        Layer name for error messages.
    thresholds : PhaseThresholds, optional
        Default :class:`PhaseThresholds`.
    **overrides
        Individual thresholds overriding ``thresholds``.

    Returns
    -------
    PhaseResult

    References
    ----------
    C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks:
    evidence from random matrix theory and implications for learning", JMLR 22(165), 2021,
    §5 (Table of the 5+1 phases).
    """
    th = thresholds_from(thresholds, **overrides)
    shape = weight_shape(np.shape(W), conv, name)
    ev = esd(W, conv=conv, device=device, name=name)
    rank_loss = esd_metrics(ev, W=W, conv=conv).rank_loss
    return classify_esd(ev, shape.N, shape.M, rank_loss=rank_loss, device=device,
                        thresholds=th)

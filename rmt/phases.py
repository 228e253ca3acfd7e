"""Martin & Mahoney's 5+1 phases of self-regularisation, made operational.

The papers define the phases qualitatively; this is the decision procedure of
science/phases.md §6 with its known flaws fixed (every threshold is a parameter):

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
   costs nothing, where the 3-Gaussian null of §6 costs three eigensolves per shape.
4. Power-law fit (``rmt.fit_powerlaw``, α uncapped).
5. Decide in order: no spike → random-like; only near spikes (≤ ``max_spike_fraction`` of
   the ESD) → bleeding-out; an MP bulk (D_mp ≤ ``mp_tolerance``·d₀) with mostly far spikes →
   bulk+spikes; a power-law tail with α < ``alpha_boundary`` over ≥ ``min_tail`` points →
   heavy-tailed ("very" below ``very_heavy_alpha``); otherwise bulk-decay. α alone never
   decides: pure bulk+spikes matrices have α ≈ 2.6–4.5 from their spikes.

The result does not depend on the scale of W, its orientation, or any random state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt.errors import DataError
from rmt.heavytail import fit_powerlaw
from rmt.metrics import esd_metrics, numerical_zero_threshold
from rmt.mp import MPFit, fit_mp
from rmt.spectra import Conv, esd, weight_shape
from rmt.tracywidom import johnstone

__all__ = ["DEFAULTS", "Phase", "PhaseResult", "classify", "classify_esd", "null_ks_scale"]


class Phase(enum.StrEnum):
    """The 5+1 phases; ``str(phase)`` is the value."""

    RANDOM_LIKE = "random-like"
    BLEEDING_OUT = "bleeding-out"
    BULK_PLUS_SPIKES = "bulk+spikes"
    BULK_DECAY = "bulk-decay"
    HEAVY_TAILED = "heavy-tailed"
    RANK_COLLAPSE = "rank-collapse"


DEFAULTS: dict[str, float] = {
    "fpr": 0.01,                  # TW false-positive rate of the spike test
    "bleeding_band": 1.5,         # near spikes: θ̂ < bleeding_band·θ_c ...
    "bleeding_tw": 12.0,          # ... or within this many TW widths of the edge
    "max_spike_fraction": 0.05,   # more outliers than this share of the ESD is not a bulk+spikes
    "mp_tolerance": 3.0,          # an MP bulk has D_mp ≤ mp_tolerance·d₀
    "d0_constant": 0.6,           # d₀ = d0_constant·ln(n)/n
    "alpha_boundary": 4.0,        # bulk-decay / heavy-tailed (μ = 4 class boundary)
    "very_heavy_alpha": 2.0,      # heavy-tailed sub-label "very" below this α
    "min_tail": 50,               # the classifier's power-law fit uses a tail of ≥ this many points
    "alpha_margin": 2.0,          # ... and only when α + alpha_margin·σ_α < alpha_boundary
    "rank_loss_threshold": 0.05,  # rank-collapse from this share of zero singular values
    "gap_decades": 2.0,           # rank-collapse from a gap this wide in log10 λ ...
    "gap_fraction": 0.05,         # ... with at least this share of the ESD on each side
}


def null_ks_scale(n: int, d0_constant: float = DEFAULTS["d0_constant"]) -> float:
    """d₀ = c·ln(n)/n: the KS distance an MP fit reaches on pure noise with n eigenvalues."""
    n = max(int(n), 2)
    return d0_constant * float(np.log(n)) / n


@dataclass(frozen=True, eq=False)
class PhaseResult:
    """The phase of one layer and every number that decided it.

    Attributes
    ----------
    phase : Phase
        The label.
    sublabel : str
        ``"very"`` (α < 2) or ``"moderate"`` for heavy-tailed, ``"rank"`` or ``"gap"`` for
        rank-collapse, else ``""``.
    reason : str
        One sentence saying why.
    N, M, num_evals : int
        Shape read from the weight (pooled conv slices give num_evals = M·kh·kw).
    rank_loss : int
        Numerically zero singular values; ``rank_loss_fraction`` of num_evals.
    gap_decades : float
        Widest gap in log10 λ with ≥ gap_fraction of the ESD on each side.
    sigma2, lambda_plus : float
        MP fit (units of the normalised ESD, X = WᵀW/N).
    n_spikes, n_near, n_far : int
        TW outliers and how many are near the edge / far from it.
    theta : numpy.ndarray
        BBP-inverted spike strengths; ``theta_c`` = Q^(−1/4).
    tw_z : float
        TW z-score of λmax.
    D_mp, d0 : float
        KS distance of the bulk to MP and its null scale.
    alpha, xmin, D_pl : float
        Power-law fit; ``n_tail`` its size; ``pl_reliable`` whether n_tail ≥ min_tail and
        D_pl ≤ 0.1.
    params : dict
        The thresholds used.
    """

    phase: Phase
    sublabel: str
    reason: str
    N: int
    M: int
    num_evals: int
    rank_loss: int
    rank_loss_fraction: float
    gap_decades: float
    sigma2: float
    lambda_plus: float
    n_spikes: int
    n_near: int
    n_far: int
    theta: np.ndarray
    theta_c: float
    tw_z: float
    D_mp: float
    d0: float
    alpha: float
    xmin: float
    D_pl: float
    n_tail: int
    pl_reliable: bool
    params: dict[str, float]
    evals: np.ndarray = field(repr=False)
    mp_fit: MPFit | None = field(default=None, repr=False)
    pl_fit: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Scalar fields as a dict (``phase`` as its string)."""
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

        Returns
        -------
        numpy.ndarray of matplotlib Axes
        """
        from rmt.plot import plot_phase

        return plot_phase(self, axes=axes)


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


def _params(overrides: dict[str, Any]) -> dict[str, float]:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown classifier parameter(s) {sorted(unknown)}; "
                        f"known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **overrides}


def classify_esd(ev: Any, N: int, M: int | None = None, *, rank_loss: int | None = None,
                 device: str = "auto", powerlaw_fit: Any = None,
                 **params: Any) -> PhaseResult:
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
    powerlaw_fit : PowerLawFit, optional
        A default-settings fit of the same positive eigenvalues; reused (no second scan)
        when its tail already holds ≥ ``min_tail`` points, which is then the same fit.
    device : {"auto", "cpu", "gpu"}
        Where the power-law scan runs.
    **params
        Thresholds overriding :data:`DEFAULTS`.

    Returns
    -------
    PhaseResult
    """
    p = _params(params)
    ev = np.sort(np.asarray(ev, dtype=np.float64).ravel())
    if ev.size < 4 or not np.all(np.isfinite(ev)):
        raise DataError(f"classify_esd needs >= 4 finite eigenvalues, got {ev.size}")
    n = ev.size
    M = n if M is None else int(M)
    zero = numerical_zero_threshold(ev, M)
    if rank_loss is None:
        rank_loss = int(np.count_nonzero(ev <= zero))
    pos = ev[ev > zero]
    n_zero = n - pos.size
    gap = _largest_gap(pos, n_zero, zero, n, p["gap_fraction"])
    base = dict(N=int(N), M=M, num_evals=n, rank_loss=int(rank_loss),
                rank_loss_fraction=rank_loss / n, gap_decades=gap, params=p, evals=ev)
    empty = dict(sigma2=np.nan, lambda_plus=np.nan, n_spikes=0, n_near=0, n_far=0,
                 theta=np.empty(0), theta_c=float((N / M) ** -0.25), tw_z=np.nan,
                 D_mp=np.nan, d0=np.nan, alpha=np.nan, xmin=np.nan, D_pl=np.nan, n_tail=0,
                 pl_reliable=False)
    if rank_loss / n >= p["rank_loss_threshold"]:
        return PhaseResult(Phase.RANK_COLLAPSE, "rank",
                           f"{rank_loss} of {n} singular values are numerically zero (rank "
                           f"loss {rank_loss / n:.0%} >= {p['rank_loss_threshold']:.0%})",
                           **base, **empty)
    if gap >= p["gap_decades"]:
        return PhaseResult(Phase.RANK_COLLAPSE, "gap",
                           f"part of the spectrum sits {gap:.1f} decades below the rest "
                           "(collapsed directions, as under strong weight decay)",
                           **base, **empty)
    mpf = fit_mp(pos, N=N, M=M, fpr=p["fpr"])
    k = mpf.n_spikes
    mu_tw, s_tw = johnstone(int(N), M)
    spike_z = (mpf.spikes * N / mpf.sigma2 - mu_tw) / s_tw
    near = int(np.count_nonzero((mpf.theta < p["bleeding_band"] * mpf.theta_c)
                                | (spike_z <= p["bleeding_tw"])))
    far = k - near
    d0 = null_ks_scale(pos.size - k, p["d0_constant"])
    ratio = mpf.D / d0
    try:
        reuse = (powerlaw_fit is not None and powerlaw_fit.candidates == "powerlaw"
                 and powerlaw_fit.alpha_range == (1, None) and powerlaw_fit.n == pos.size
                 and powerlaw_fit.n_tail >= p["min_tail"])
        pl = powerlaw_fit if reuse else fit_powerlaw(pos, device=device,
                                                     min_tail=int(p["min_tail"]))
        alpha, xmin, D_pl, n_tail = pl.alpha, pl.xmin, pl.D, int(pl.n_tail)
    except DataError:
        pl, alpha, xmin, D_pl, n_tail = None, np.nan, np.nan, np.nan, 0
    reliable = bool(n_tail >= p["min_tail"] and D_pl <= 0.1)
    fits = dict(sigma2=mpf.sigma2, lambda_plus=mpf.lambda_plus, n_spikes=k, n_near=near,
                n_far=far, theta=mpf.theta, theta_c=mpf.theta_c, tw_z=mpf.tw_z, D_mp=mpf.D,
                d0=d0, alpha=alpha, xmin=xmin, D_pl=D_pl, n_tail=n_tail, pl_reliable=reliable,
                mp_fit=mpf, pl_fit=pl)
    few = k / n <= p["max_spike_fraction"]
    mp_bulk = ratio <= p["mp_tolerance"]
    if k == 0:
        phase, sub = Phase.RANDOM_LIKE, ""
        reason = (f"no eigenvalue above the Tracy-Widom edge (lambda_max at z = {mpf.tw_z:.1f}); "
                  f"the ESD fits Marchenko-Pastur (D_mp = {ratio:.1f} d0)")
    elif few and far == 0:
        phase, sub = Phase.BLEEDING_OUT, ""
        reason = (f"{k} eigenvalue(s) just above the MP edge (theta < {p['bleeding_band']:g} "
                  f"theta_c or within {p['bleeding_tw']:g} TW widths), none far out; bulk "
                  f"D_mp = {ratio:.1f} d0")
    elif few and mp_bulk and near <= max(1, 0.2 * k):
        phase, sub = Phase.BULK_PLUS_SPIKES, ""
        reason = f"{k} spikes well separated from an MP bulk (D_mp = {ratio:.1f} d0)"
    elif (np.isfinite(alpha) and n_tail >= p["min_tail"]
          and alpha + p["alpha_margin"] * (alpha - 1) / np.sqrt(n_tail) < p["alpha_boundary"]):
        phase = Phase.HEAVY_TAILED
        sub = "very" if alpha < p["very_heavy_alpha"] else "moderate"
        reason = (f"{sub} heavy tail: power law alpha = {alpha:.2f} over {n_tail} eigenvalues; "
                  f"{k} outliers and a non-MP bulk (D_mp = {ratio:.1f} d0)")
    else:
        phase, sub = Phase.BULK_DECAY, ""
        why = (f"alpha = {alpha:.2f} +- {(alpha - 1) / np.sqrt(max(n_tail, 1)):.2f} is not "
               f"clearly below {p['alpha_boundary']:g}" if n_tail >= p["min_tail"]
               else f"the power-law tail has only {n_tail} points")
        reason = (f"{k} outliers ({near} near the edge) over a bulk that is no longer MP "
                  f"(D_mp = {ratio:.1f} d0), but no heavy tail ({why})")
    return PhaseResult(phase, sub, reason, **base, **fits)


def classify(W: Any, *, conv: Conv = "slices", device: str = "auto", name: str | None = None,
             **params: Any) -> PhaseResult:
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
    **params
        Thresholds overriding :data:`DEFAULTS` (see :func:`classify_esd`).

    Returns
    -------
    PhaseResult

    References
    ----------
    C. H. Martin and M. W. Mahoney, "Implicit self-regularization in deep neural networks:
    evidence from random matrix theory and implications for learning", JMLR 22(165), 2021,
    §5 (Table of the 5+1 phases).
    """
    _params(params)
    shape = weight_shape(np.shape(W), conv, name)
    ev = esd(W, conv=conv, device=device, name=name)
    rank_loss = esd_metrics(ev, W=W, conv=conv).rank_loss
    return classify_esd(ev, shape.N, shape.M, rank_loss=rank_loss, device=device, **params)

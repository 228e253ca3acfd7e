"""Seeded weight matrices in each of Martin & Mahoney's 5+1 phases (ground truth for tests).

Recipes are those of docs/science.md §6.1, made size-aware where a fixed strength would put a
matrix on a phase boundary at some sizes: bleeding-out spikes are placed a few
Tracy–Widom widths above λ₊ (just detectable at every N, always below 1.5 θ_c), which a
fixed θ ∈ [1.05, 1.15]·θ_c is not (at M = 256 its outliers sit inside the TW window).

Every generator returns an N×M float64 matrix with N ≥ M (pass ``transpose=True`` for the
M×N orientation), entries of scale ``sigma``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from rmt import mp
from rmt.tracywidom import johnstone

__all__ = ["PHASES", "phase_matrix", "zoo"]

PHASES = ("random-like", "bleeding-out", "bulk+spikes", "bulk-decay", "heavy-tailed",
          "rank-collapse")


def _haar(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def _spiked(rng: np.random.Generator, N: int, M: int, thetas: np.ndarray) -> np.ndarray:
    """G + √N·U diag(θ) Vᵀ (additive spikes, Benaych-Georges–Nadakuditi)."""
    G = rng.standard_normal((N, M))
    U, V = _haar(rng, N, thetas.size), _haar(rng, M, thetas.size)
    return G + np.sqrt(N) * (U * thetas) @ V.T


def random_like(N: int, M: int, rng: np.random.Generator) -> np.ndarray:
    """iid N(0, 1): a Marchenko–Pastur ESD."""
    return rng.standard_normal((N, M))


def bleeding_out(N: int, M: int, rng: np.random.Generator, n_spikes: int = 3,
                 tw_widths: tuple[float, float] = (5.0, 9.0)) -> np.ndarray:
    """G plus ``n_spikes`` weak spikes whose outliers sit ``tw_widths`` TW widths above λ₊."""
    mu, s = johnstone(N, M)
    lam = mu / N + rng.uniform(*tw_widths, size=n_spikes) * s / N
    return _spiked(rng, N, M, mp.bbp_inverse(lam, N / M))


def bulk_plus_spikes(N: int, M: int, rng: np.random.Generator, n_spikes: int = 5,
                     theta: tuple[float, float] = (2.0, 4.0)) -> np.ndarray:
    """G plus ``n_spikes`` strong spikes θ evenly spaced in ``theta`` (θ ≥ 2 > 1.5 θ_c)."""
    return _spiked(rng, N, M, np.linspace(*theta, n_spikes))


def bulk_decay(N: int, M: int, rng: np.random.Generator, fraction: float = 0.2,
               mu: float = 3.0) -> np.ndarray:
    """G·diag(√d), d = 1 + Lomax(μ) on a random ``fraction`` of the columns, 1 elsewhere."""
    d = np.ones(M)
    cols = rng.choice(M, size=max(1, round(fraction * M)), replace=False)
    d[cols] += rng.pareto(mu, size=cols.size)
    return rng.standard_normal((N, M)) * np.sqrt(d)


def heavy_tailed(N: int, M: int, rng: np.random.Generator, kind: str = "moderate",
                 mu: float | None = None) -> np.ndarray:
    """``kind="moderate"``: G·diag(√d), d = 1 + Lomax(μ=1.5) on every column (α ≈ 2.5–3).
    ``kind="very"``: iid symmetric Pareto entries, P(|w| > x) = x^(−μ), μ = 1 (α ≈ 1.5)."""
    if kind == "moderate":
        d = 1.0 + rng.pareto(1.5 if mu is None else mu, size=M)
        return rng.standard_normal((N, M)) * np.sqrt(d)
    if kind == "very":
        mu = 1.0 if mu is None else mu
        return rng.choice([-1.0, 1.0], size=(N, M)) * (1.0 + rng.pareto(mu, size=(N, M)))
    raise ValueError(f"kind must be 'moderate' or 'very', got {kind!r}")


def rank_collapse(N: int, M: int, rng: np.random.Generator, kind: str = "low-rank",
                  rank_fraction: float = 0.5, shrink: float = 1e-3) -> np.ndarray:
    """``kind="low-rank"``: A·B/√r with r = rank_fraction·M (exact rank loss).
    ``kind="weight-decay"``: a rank-r signal plus the other directions shrunk by ``shrink``
    (weight decay on unused inputs: full rank, but a gap of decades in the ESD)."""
    r = max(1, round(rank_fraction * M))
    A, B = rng.standard_normal((N, r)), rng.standard_normal((r, M))
    if kind == "low-rank":
        return A @ B / np.sqrt(r)
    if kind == "weight-decay":
        V = _haar(rng, M, M)
        W = rng.standard_normal((N, M)) @ V
        W[:, r:] *= shrink
        return W @ V.T
    raise ValueError(f"kind must be 'low-rank' or 'weight-decay', got {kind!r}")


_RECIPES = {
    "random-like": random_like,
    "bleeding-out": bleeding_out,
    "bulk+spikes": bulk_plus_spikes,
    "bulk-decay": bulk_decay,
    "heavy-tailed": heavy_tailed,
    "rank-collapse": rank_collapse,
}


def phase_matrix(phase: str, N: int, M: int, *, sigma: float = 1.0, rng: Any = None,
                 transpose: bool = False, **params: Any) -> np.ndarray:
    """A matrix in the given phase.

    Parameters
    ----------
    phase : str or rmt.Phase
        One of ``random-like, bleeding-out, bulk+spikes, bulk-decay, heavy-tailed,
        rank-collapse``.
    N, M : int
        Shape, N ≥ M.
    sigma : float, default 1.0
        Scale of the entries.
    rng : None, int or numpy.random.Generator
        Random source.
    transpose : bool, default False
        Return the M×N transpose.
    **params
        Strength parameters of the recipe: ``n_spikes, tw_widths`` (bleeding-out),
        ``n_spikes, theta`` (bulk+spikes), ``fraction, mu`` (bulk-decay), ``kind, mu``
        (heavy-tailed), ``kind, rank_fraction, shrink`` (rank-collapse).

    Returns
    -------
    numpy.ndarray of float64
    """
    phase = str(phase)
    if phase not in _RECIPES:
        raise ValueError(f"unknown phase {phase!r}; choose from {PHASES}")
    if N < M:
        raise ValueError(f"need N >= M (use transpose=True for a wide matrix), got {N}x{M}")
    W = sigma * _RECIPES[phase](N, M, np.random.default_rng(rng), **params)
    return W.T if transpose else W


def zoo(
    Ms: Sequence[int] = (256, 512, 1024),
    Qs: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
    sigmas: Sequence[float] = (1e-3, 1.0, 10.0),
    *,
    phases: Sequence[str] = PHASES,
    both_orientations: bool = True,
    rng: Any = None,
) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """Labelled matrices across phases, sizes, scales and orientations.

    Cycles through the grid so that every phase meets every size; each (phase, M, Q)
    gets one σ from ``sigmas`` in turn and both orientations when asked. Heavy-tailed
    alternates between the moderate and very kinds, rank-collapse between low-rank and
    weight-decay collapse.

    Parameters
    ----------
    Ms : sequence of int
        Column counts M.
    Qs : sequence of float
        Aspect ratios N/M.
    sigmas : sequence of float
        Entry scales, used in turn.
    phases : sequence of str
        Phases to build (default all six).
    both_orientations : bool, default True
        Also yield each matrix transposed.
    rng : int or numpy.random.Generator, optional
        Seed.

    Yields
    ------
    (phase, W, info)
        ``info`` has ``N, M, Q, sigma, transpose`` and the recipe parameters.
    """
    rng = np.random.default_rng(rng)
    count = 0
    for M in Ms:
        for Q in Qs:
            N = round(Q * M)
            for phase in phases:
                params: dict[str, Any] = {}
                if phase == "heavy-tailed":
                    params["kind"] = ("moderate", "very")[count % 2]
                if phase == "rank-collapse":
                    params["kind"] = ("low-rank", "weight-decay")[count % 2]
                sigma = sigmas[count % len(sigmas)]
                count += 1
                for transpose in ((False, True) if both_orientations else (False,)):
                    W = phase_matrix(phase, N, M, sigma=sigma, rng=rng, transpose=transpose,
                                     **params)
                    yield phase, W, {"N": N, "M": M, "Q": N / M, "sigma": sigma,
                                     "transpose": transpose, **params}

"""A small built-in model for ``rmt demo``: seeded weights of several shapes and dtypes.

The layers are built to show different spectra: a Gaussian (Marchenko–Pastur)
embedding, an attention weight with a few strong low-rank directions (spikes), an MLP
pair with heavy-tailed column scales (stored in bfloat16 and float16), an exactly
rank-deficient projection, a Conv2d kernel and a small classifier head.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pandas as pd

from rmt.errors import DataError
from rmt.heavytail import fit_powerlaw
from rmt.metrics import esd_metrics, numerical_zero_threshold
from rmt.mp import fit_mp
from rmt.spectra import esd, weight_shape


def _spiked(rng: np.random.Generator, n: int, m: int, thetas: list[float]) -> np.ndarray:
    """G + √n·U diag(θ) Vᵀ with Haar-orthonormal U, V (additive spike model, entry scale 1)."""
    G = rng.standard_normal((n, m))
    U, _ = np.linalg.qr(rng.standard_normal((n, len(thetas))))
    V, _ = np.linalg.qr(rng.standard_normal((m, len(thetas))))
    return G + np.sqrt(n) * (U * np.asarray(thetas)) @ V.T


def demo_model(rng: int | np.random.Generator | None = 0) -> dict[str, np.ndarray]:
    """Weights of the built-in demo model, keyed by PyTorch-style tensor names.

    Parameters
    ----------
    rng : None, int or numpy.random.Generator, default 0
        Seed or generator; the default gives the same model every time.

    Returns
    -------
    dict of str to numpy.ndarray
        Seven weights (float32 unless noted): ``embed.weight`` 2000×128,
        ``attn.q_proj.weight`` 256×256 with 4 spikes, ``mlp.up_proj.weight`` 1024×256
        (bfloat16, heavy-tailed column scales), ``mlp.down_proj.weight`` 256×1024
        (float16), ``proj.weight`` 512×128 of rank 64, ``conv.weight`` (64, 32, 3, 3),
        ``head.weight`` 10×256.
    """
    rng = np.random.default_rng(rng)
    scale = 0.02
    heavy = np.sqrt(1.0 + rng.pareto(1.5, size=256))  # 1 + Lomax(1.5) column variances
    up = rng.standard_normal((1024, 256)) * heavy
    low_rank = rng.standard_normal((512, 64)) @ rng.standard_normal((64, 128)) / 8.0
    return {
        "embed.weight": (scale * rng.standard_normal((2000, 128))).astype(np.float32),
        "attn.q_proj.weight": (scale * _spiked(rng, 256, 256, [2.0, 3.0, 4.0, 6.0])).astype(
            np.float32
        ),
        "mlp.up_proj.weight": (scale * up).astype(ml_dtypes.bfloat16),
        "mlp.down_proj.weight": (scale * rng.standard_normal((256, 1024))).astype(np.float16),
        "proj.weight": (scale * low_rank).astype(np.float64),
        "conv.weight": (0.1 * rng.standard_normal((64, 32, 3, 3))).astype(np.float32),
        "head.weight": (scale * rng.standard_normal((10, 256))).astype(np.float32),
    }


def layer_table(
    weights: dict[str, Any],
    *,
    normalize: bool = True,
    device: str = "auto",
    n_threads: int | None = None,
) -> pd.DataFrame:
    """One row of ESD metrics per weight (the ``rmt demo`` table).

    Parameters
    ----------
    weights : dict of str to array_like
        Tensors by name; each goes through :func:`rmt.esd` and :func:`rmt.esd_metrics`.
    normalize, device, n_threads
        As in :func:`rmt.esd`.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, shape, dtype, N, M, Q, num_evals, lambda_max, stable_rank,
        log_norm, log_spectral_norm, entropy, rank_loss`` (:func:`rmt.esd_metrics`),
        ``alpha, xmin, D, n_tail`` (:func:`rmt.fit_powerlaw` on the eigenvalues above
        the numerical-zero threshold) and ``sigma_mp, num_spikes, tw_z``
        (:func:`rmt.fit_mp`: √σ² of the bulk, spikes at 1% false-positive rate, TW
        z-score of λmax).
    """
    rows = []
    for name, W in weights.items():
        shape = weight_shape(W.shape, name=name)
        ev = esd(W, normalize=normalize, device=device, n_threads=n_threads, name=name)
        m = esd_metrics(ev, W=W)
        nonzero = ev[ev > numerical_zero_threshold(ev, shape.M)]
        try:
            pl = fit_powerlaw(nonzero, device=device, n_threads=n_threads)
            pl_cols = {"alpha": pl.alpha, "xmin": pl.xmin, "D": pl.D, "n_tail": pl.n_tail}
        except DataError:
            pl_cols = {"alpha": np.nan, "xmin": np.nan, "D": np.nan, "n_tail": 0}
        mpf = fit_mp(nonzero, N=shape.N, M=shape.M, normalized=normalize)
        rows.append(
            {
                "name": name,
                "shape": "×".join(map(str, W.shape)),
                "dtype": str(W.dtype),
                "N": shape.N,
                "M": shape.M,
                "Q": shape.Q,
                "num_evals": m.num_evals,
                "lambda_max": m.lambda_max,
                "stable_rank": m.stable_rank,
                "log_norm": m.log_norm,
                "log_spectral_norm": m.log_spectral_norm,
                "entropy": m.entropy,
                "rank_loss": m.rank_loss,
                **pl_cols,
                "sigma_mp": float(np.sqrt(mpf.sigma2 / (1 if normalize else shape.N))),
                "num_spikes": mpf.n_spikes,
                "tw_z": mpf.tw_z,
            }
        )
    return pd.DataFrame(rows)

"""A small built-in model for ``rmt demo``: one layer in each of the 5+1 phases.

The layers come from :mod:`rmt.synthetic` (seeded), stored in several dtypes and both
orientations: a random-like embedding, bleeding-out and bulk+spikes attention weights, a
heavy-tailed MLP weight in bfloat16, a bulk-decay MLP weight in float16 (stored wide), a
rank-collapsed projection, a random Conv2d kernel and a small classifier head.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pandas as pd

from rmt._device import Device
from rmt.synthetic import phase_matrix

# name -> (phase the layer is built in, or None for an unlabelled layer)
DEMO_PHASES = {
    "embed.weight": "random-like",
    "attn.k_proj.weight": "bleeding-out",
    "attn.q_proj.weight": "bulk+spikes",
    "mlp.up_proj.weight": "heavy-tailed",
    "mlp.down_proj.weight": "bulk-decay",
    "proj.weight": "rank-collapse",
    "conv.weight": None,
    "head.weight": None,
}


def demo_model(rng: int | np.random.Generator | None = 0) -> dict[str, np.ndarray]:
    """Weights of the built-in demo model, keyed by PyTorch-style tensor names.

    Parameters
    ----------
    rng : None, int or numpy.random.Generator, default 0
        Seed or generator; the default gives the same model every time.

    Returns
    -------
    dict of str to numpy.ndarray
        ``embed.weight`` 2000×128 float32 (random-like), ``attn.k_proj.weight`` 512×256
        float32 (bleeding-out), ``attn.q_proj.weight`` 256×256 float32 (4 spikes),
        ``mlp.up_proj.weight`` 1024×256 bfloat16 (heavy-tailed), ``mlp.down_proj.weight``
        512×2048 float16 (bulk-decay, stored wide), ``proj.weight`` 512×128 float64 (rank
        64), ``conv.weight`` (64, 32, 3, 3) float32, ``head.weight`` 10×256 float32.
    """
    rng = np.random.default_rng(rng)
    scale = 0.02

    def make(phase: str, n: int, m: int, **params: Any) -> np.ndarray:
        return phase_matrix(phase, n, m, sigma=scale, rng=rng, **params)

    return {
        "embed.weight": make("random-like", 2000, 128).astype(np.float32),
        "attn.k_proj.weight": make("bleeding-out", 512, 256).astype(np.float32),
        "attn.q_proj.weight": make("bulk+spikes", 256, 256, n_spikes=4).astype(np.float32),
        "mlp.up_proj.weight": make("heavy-tailed", 1024, 256).astype(ml_dtypes.bfloat16),
        "mlp.down_proj.weight": make("bulk-decay", 2048, 512, transpose=True).astype(
            np.float16),
        "proj.weight": make("rank-collapse", 512, 128),
        "conv.weight": (0.1 * rng.standard_normal((64, 32, 3, 3))).astype(np.float32),
        "head.weight": (scale * rng.standard_normal((10, 256))).astype(np.float32),
    }


DEMO_COLUMNS = ["name", "shape", "dtype", "N", "M", "Q", "num_evals", "lambda_max",
                "stable_rank", "log_norm", "log_spectral_norm", "entropy", "rank_loss", "alpha",
                "xmin", "D", "num_pl_spikes", "sigma_mp", "num_spikes", "tw_z", "built",
                "phase"]
# The terminal table: what a first look needs, about 100 characters wide.
DEMO_TABLE_COLUMNS = ["name", "shape", "dtype", "alpha", "num_spikes", "stable_rank",
                      "rank_loss", "built", "phase"]


def layer_table(
    weights: dict[str, Any],
    *,
    normalize: bool = True,
    device: Device = "auto",
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The ``rmt demo`` table: :func:`rmt.analyze` on ``weights``, the main columns.

    Parameters
    ----------
    weights : dict of str to array_like
        Tensors by name.
    normalize, device, n_threads
        As in :func:`rmt.analyze`.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DEMO_COLUMNS` (documented in :data:`rmt.COLUMNS`);
        ``built`` is the phase a layer was built in (:data:`DEMO_PHASES`; empty for the
        unlabelled conv and head), next to the ``phase`` rmt detects.
    """
    from rmt.runner import analyze

    df = analyze(weights, normalize=normalize, device=device, n_threads=n_threads,
                 progress=False)
    df["built"] = [DEMO_PHASES.get(name) or "" for name in df["name"]]
    return df[DEMO_COLUMNS]

"""Figures: what they draw is what the fits say (densities, labels, axes), at any size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import rmt
from rmt.plot import MAX_POINTS, _thin, plot_model, plot_mp_fit, save_layer_plot, short_title

matplotlib = pytest.importorskip("matplotlib", reason="the 'plot' extra is not installed")
matplotlib.use("Agg")


def _spiky_conv(seed: int = 0) -> np.ndarray:
    """A 3x3 conv kernel whose nine 16x64 slices each carry strong rank-12 signal: more
    spikes in the pooled ESD (~108) than eigenvalues per slice (M = 16)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((64, 16, 3, 3))
    W += 6 * np.einsum("ir,jr,kl->ijkl", rng.standard_normal((64, 12)),
                       rng.standard_normal((16, 12)), np.ones((3, 3))) / 4
    return W.astype(np.float32)


def test_pooled_conv_mp_density_is_a_share_of_all_eigenvalues():
    import matplotlib.pyplot as plt

    result = rmt.classify(_spiky_conv())
    fit = result.mp_fit
    assert fit.n_spikes > fit.M  # the case that drew the density negative
    ax = plot_mp_fit(fit)
    curve = ax.lines[0].get_ydata()
    assert curve.min() >= 0
    # the drawn curve integrates to the bulk's share of the 144 eigenvalues
    xs = ax.lines[0].get_xdata()
    share = (fit.evals.size - fit.n_spikes) / fit.evals.size
    assert np.trapezoid(curve, xs) == pytest.approx(share, rel=0.05)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "ESD (144 eigenvalues = 9 slices x M=16)"
    plt.close(ax.figure)


def test_thinning_keeps_both_ends_and_bounds_points():
    idx = _thin(786_432)
    assert idx[0] == 0 and idx[-1] == 786_431 and idx.size <= MAX_POINTS
    assert np.all(np.diff(idx) > 0)
    assert _thin(50).tolist() == list(range(50))


def test_long_names_are_shortened_in_the_middle():
    name = "model.encoder.layers." + "very_long_block." * 10 + "attention.q_proj.weight"
    title = short_title(name, 60)
    assert len(title) == 60 and title.startswith("model.encoder") and title.endswith("weight")


def test_layer_plot_file_and_summary_axis(tmp_path):
    import matplotlib.pyplot as plt

    result = rmt.classify(_spiky_conv(1))
    path = save_layer_plot(result, "x" * 300, 7, str(tmp_path))
    assert path.endswith(".png") and len(path.rsplit("/", 1)[1]) < 140
    df = pd.DataFrame({"layer_id": [3, 3, 40, 97], "alpha": [2.1, 2.3, 3.5, np.nan],
                       "phase": ["heavy-tailed", "heavy-tailed", "bulk+spikes", None],
                       "status": ["success", "success", "success", "failed"]})
    axes = plot_model(df)
    lo, hi = axes[0].get_xlim()
    assert lo < 3 and hi > 97  # layer ids, not row numbers, and nothing clipped
    assert "layer id" in axes[0].get_xlabel()
    plt.close(axes[0].figure)

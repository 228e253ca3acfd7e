"""One layer of a checkpoint → one row of ``rmt.analyze``'s table (no I/O, no scheduling).

Columns use WeightWatcher's names where the concept is the same; :data:`COLUMNS`
documents every column (units, normalisation) in one place.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rmt._dtypes import storage_kind
from rmt.errors import CheckpointError, DataError, WeightError
from rmt.heavytail import fit_powerlaw
from rmt.io.layout import infer_layout
from rmt.metrics import esd_metrics, numerical_zero_threshold
from rmt.mp import fit_mp
from rmt.phases import DEFAULTS, classify_esd
from rmt.spectra import esd, weight_shape

COLUMNS: dict[str, str] = {
    "layer_id": "position of the tensor in the checkpoint (0-based, counting every tensor)",
    "name": "tensor name as stored; stacked 3-D tensors get one row per matrix, name[e]",
    "shape": "stored shape",
    "dtype": "storage dtype",
    "layout": "what the stored tensor was read as (matrix, convNd, stack of E) and why: the "
              "framework's layer type, the name, or the shape rule (rmt.io.layout)",
    "N": "rows of each matrix after orienting so that N >= M",
    "M": "columns of each matrix (N >= M)",
    "Q": "N/M",
    "num_slices": "matrices pooled into the ESD (kh*kw for a Conv2d kernel, k for Conv1d)",
    "num_evals": "eigenvalues in the ESD (M*num_slices)",
    "lambda_max": "largest eigenvalue of X = W^T W/N (of W^T W with normalize=False)",
    "log_norm": "log10 of the sum of eigenvalues (log10 ||W||_F^2/N; WW: log10 ||W||_F^2)",
    "log_spectral_norm": "log10 lambda_max",
    "stable_rank": "sum(lambda)/lambda_max = ||W||_F^2/||W||_2^2 (scale-free)",
    "entropy": "matrix entropy -sum p ln p / ln R, p = lambda/sum(lambda), R = hard rank",
    "rank_loss": "singular values <= sigma_max*max(N,M)*eps(float64), summed over slices",
    "alpha": "power-law exponent of the ESD tail (KS-optimal xmin, uncapped; NaN if failed)",
    "xmin": "lower end of the power-law tail (eigenvalue units)",
    "xmax": "upper end of the fit (largest eigenvalue: the fit uses no xmax)",
    "D": "KS distance of the power-law fit",
    "sigma": "standard error of alpha, (alpha-1)/sqrt(n_tail)",
    "num_pl_spikes": "eigenvalues in the power-law tail (>= xmin)",
    "alpha_weighted": "alpha * log10(lambda_max) (WeightWatcher's alpha-hat)",
    "log_alpha_norm": "log10 of sum(lambda^alpha) (Schatten alpha-norm)",
    "sigma_mp": "sqrt of the MP fit's entry variance sigma^2 (entry std of the bulk)",
    "mp_softrank": "lambda_plus/lambda_max of the MP fit",
    "num_spikes": "eigenvalues above the Tracy-Widom threshold at false-positive rate fpr",
    "tw_z": "Tracy-Widom z-score of lambda_max against the MP bulk",
    "D_mp": "KS distance of the bulk to the fitted MP law",
    "d0": "null scale of D_mp for this many eigenvalues, 0.6 ln(n)/n",
    "phase": "Martin & Mahoney 5+1 phase (rmt.classify)",
    "sublabel": "'very'/'moderate' for heavy-tailed, 'rank'/'gap' for rank-collapse",
    "reason": "one sentence saying why the phase was chosen",
    "status": "'success' or 'failed'",
    "warning": "why a layer failed, or what to be careful about (short tail, ...)",
    "seconds": "wall time spent on the layer",
}


@dataclass(frozen=True)
class Options:
    """Everything a layer computation needs; plain values so tasks pickle cheaply."""

    normalize: bool = True
    conv: str = "slices"
    device: str = "cpu"
    min_evals: int = 10
    max_evals: int | None = None
    candidates: str = "powerlaw"
    n_threads: int | None = None
    phase_params: dict[str, float] = field(default_factory=dict)
    plot_dir: str | None = None
    on_error: str = "record"


def failed_row(base: dict[str, Any], warning: str) -> dict[str, Any]:
    """A row for a layer that could not be analysed."""
    return {**base, "alpha": np.nan, "status": "failed", "warning": warning}


def _row(name: str, W: Any, base: dict[str, Any], opts: Options) -> dict[str, Any]:
    start = time.perf_counter()
    shape = weight_shape(W.shape, opts.conv, name)  # type: ignore[arg-type]
    base = {**base, "N": shape.N, "M": shape.M, "Q": shape.Q, "num_slices": shape.num_slices,
            "num_evals": shape.num_evals}
    if shape.num_evals < opts.min_evals:
        return failed_row(base, f"too few eigenvalues ({shape.num_evals} < min_evals="
                                f"{opts.min_evals})")
    if opts.max_evals is not None and shape.num_evals > opts.max_evals:
        return failed_row(base, f"skipped: {shape.num_evals} eigenvalues > max_evals="
                                f"{opts.max_evals}")
    ev = esd(W, normalize=opts.normalize, conv=opts.conv, device=opts.device,  # type: ignore[arg-type]
             n_threads=opts.n_threads, name=name)
    if not ev[-1] > 0:
        return failed_row(base, "all entries are zero")
    m = esd_metrics(ev, W=W, conv=opts.conv)  # type: ignore[arg-type]
    row = {**base, "lambda_max": m.lambda_max, "log_norm": m.log_norm,
           "log_spectral_norm": m.log_spectral_norm, "stable_rank": m.stable_rank,
           "entropy": m.entropy, "rank_loss": m.rank_loss}
    warnings: list[str] = []
    nonzero = ev[ev > numerical_zero_threshold(ev, shape.M)]
    pl = None
    try:
        pl = fit_powerlaw(nonzero, candidates=opts.candidates, device=opts.device)  # type: ignore[arg-type]
        alpha = pl.alpha
        row.update(alpha=alpha, xmin=pl.xmin, xmax=float(ev[-1]), D=pl.D, sigma=pl.sigma,
                   num_pl_spikes=pl.n_tail, alpha_weighted=alpha * m.log_spectral_norm,
                   log_alpha_norm=_log10_sum_power(nonzero, alpha))
        if pl.warning:
            warnings.append(pl.warning)
    except DataError as err:
        row["alpha"] = np.nan
        warnings.append(f"no power-law fit: {err}")
    phase = classify_esd(ev, shape.N, shape.M, rank_loss=m.rank_loss, device=opts.device,
                         powerlaw_fit=pl, **opts.phase_params)
    mpf = phase.mp_fit
    if mpf is None and nonzero.size >= 2:
        mpf = fit_mp(nonzero, N=shape.N, M=shape.M, fpr=phase.params["fpr"],
                     normalized=opts.normalize)
    if mpf is not None:
        unit = 1.0 if opts.normalize else float(shape.N)  # σ² comes back in the ESD's units
        row.update(sigma_mp=float(np.sqrt(mpf.sigma2 / unit)), mp_softrank=mpf.mp_softrank,
                   num_spikes=mpf.n_spikes, tw_z=mpf.tw_z, D_mp=mpf.D)
    if opts.plot_dir is not None:
        from rmt.plot import queue_layer_plot

        problem = queue_layer_plot(phase, name, base["layer_id"], opts.plot_dir)
        if problem:
            warnings.append(problem)
    row.update(d0=phase.d0, phase=str(phase.phase), sublabel=phase.sublabel,
               reason=phase.reason, status="success", warning="; ".join(warnings),
               seconds=time.perf_counter() - start)
    return row


def _log10_sum_power(x: np.ndarray, alpha: float) -> float:
    """log10(sum(x**alpha)) in log space: no overflow or underflow for any alpha."""
    logs = alpha * np.log(x)
    top = float(logs.max())
    return (top + float(np.log(np.sum(np.exp(logs - top))))) / np.log(10.0)


def analyze_tensor(layer_id: int, name: str, tensor: Any, opts: Options) -> list[dict[str, Any]]:
    """Rows for one checkpoint tensor: one, or one per matrix of a stacked 3-D tensor.

    Never raises for a bad tensor (with ``opts.on_error="record"``): any exception while
    reading or analysing it — a refused view, a file that changed on disk, a library
    error, ``MemoryError``, ``RecursionError`` — becomes a ``status="failed"`` row naming
    the problem. ``on_error="raise"`` re-raises instead, for debugging.
    """
    base = {"layer_id": layer_id, "name": name, "shape": "x".join(map(str, tensor.shape)),
            "dtype": str(tensor.dtype)}
    try:
        if getattr(tensor, "error", None):
            if opts.on_error == "raise":
                tensor.load()
            if not tensor.shape:  # nothing is known about it: no shape or dtype to show
                base = {**base, "shape": "", "dtype": ""}
            return [failed_row(base, f"unreadable: {tensor.error}")]
        if 0 in tensor.shape:
            return [failed_row(base, f"empty tensor (shape {tensor.shape})")]
        storage_kind(tensor.dtype, name)  # integer/bool buffers fail here, before any read
        layout = getattr(tensor, "layout", None) or infer_layout(name, tensor.shape)
        shape = layout.shape(tensor.shape)
        base["layout"] = layout.describe(tensor.shape)
        if len(shape) > 4:
            return [failed_row(base, f"{len(shape)}-D tensor: rmt reads matrices, stacks of "
                                     "matrices and conv kernels of at most 4 axes")]
        # A kernel with one input (or output) channel has vector slices, no spectrum: its
        # filters are read as one out x (in * k) matrix instead (an STFT basis, depthwise).
        vector_slices = (layout.kind == "conv" and len(shape) > 2 and opts.conv == "slices"
                         and min(shape[0], shape[1]) == 1)
        if vector_slices:
            shape = (shape[0], math.prod(shape[1:]))
            base["layout"] += f"; 1 channel: read as {shape[0]}x{shape[1]}"
        stacked = layout.kind == "stack" and len(shape) == 3
        if stacked:
            each = weight_shape(shape[1:], opts.conv, name)  # type: ignore[arg-type]
            if each.num_evals < opts.min_evals:  # one row, not one per tiny matrix
                return [failed_row(base, f"stack of {shape[0]} matrices, each with too "
                                         f"few eigenvalues ({each.num_evals} < min_evals="
                                         f"{opts.min_evals})")]
        W = layout.apply(tensor.load())
        if vector_slices:
            W = W.reshape(shape)
        if stacked:
            return [_safe_row(f"{name}[{e}]", W[e], {**base, "name": f"{name}[{e}]"}, opts)
                    for e in range(shape[0])]
        return [_safe_row(name, W, base, opts)]
    except Exception as err:  # contained: one tensor never stops the run
        if opts.on_error == "raise":
            raise
        if isinstance(err, WeightError):
            return [failed_row(base, err.problem)]
        if isinstance(err, CheckpointError):
            return [failed_row(base, f"unreadable: {err}")]
        return [failed_row(base, _describe(err))]


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _safe_row(name: str, W: Any, base: dict[str, Any], opts: Options) -> dict[str, Any]:
    try:
        return _row(name, W, base, opts)
    except Exception as err:  # numerical library errors, MemoryError, ...
        if opts.on_error == "raise":
            raise
        if isinstance(err, WeightError | DataError | CheckpointError):
            return failed_row(base, getattr(err, "problem", None) or str(err))
        return failed_row(base, _describe(err))


def select(names: list[str], layers: Any) -> list[bool]:
    """Which tensor names ``layers`` selects: None (all), a regex string, names, or ids."""
    if layers is None:
        return [True] * len(names)
    if isinstance(layers, str):
        pattern = re.compile(layers)
        return [bool(pattern.search(n)) for n in names]
    wanted = set(layers)
    return [n in wanted or i in wanted for i, n in enumerate(names)]


def phase_params(params: dict[str, Any]) -> dict[str, float]:
    """Validate classifier keyword arguments passed through ``analyze``: known names
    (``TypeError`` otherwise), finite positive numbers, probabilities and shares in (0, 1)
    (``ValueError`` naming the argument)."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}; classifier parameters are "
                        f"{sorted(DEFAULTS)}")
    shares = ("fpr", "max_spike_fraction", "rank_loss_threshold", "gap_fraction")
    for key, value in params.items():
        if (not isinstance(value, int | float | np.integer | np.floating)
                or isinstance(value, bool) or not np.isfinite(value) or value <= 0
                or (key in shares and value >= 1)):
            allowed = "a number in (0, 1)" if key in shares else "a finite number > 0"
            raise ValueError(f"{key} must be {allowed}, got {value!r}")
    return dict(params)

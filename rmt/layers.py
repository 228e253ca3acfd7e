"""One tensor of a checkpoint → rows of ``rmt.analyze``'s table (no I/O, no scheduling).

Three steps per matrix: *compute* (:func:`compute_layer`: the ESD, then every registered
analysis of :mod:`rmt.analyses` once, into a :class:`rmt.columns.LayerResult`), *decide*
(the ``phase`` analysis, :func:`rmt.phases.decide`, a pure function of the fits) and
*present* (:func:`layer_row` builds the row from the column schema
:data:`rmt.columns.COLUMNS`; plots are queued from the same result).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import rmt.analyses  # noqa: F401  (registers the built-in analyses)
from rmt._dtypes import storage_kind
from rmt.architecture import role_of
from rmt.columns import ANALYSES, COLUMNS, LayerResult
from rmt.errors import CheckpointError, DataError, WeightError
from rmt.heavytail import Candidates
from rmt.io.layout import infer_layout
from rmt.metrics import numerical_zero_threshold
from rmt.phases import PhaseThresholds
from rmt.spectra import Conv, WeightShape, esds_together, weight_shape

OnError = Literal["record", "raise"]
#: How ``rmt.analyze`` reads conv kernels: ``rmt.esd``'s two rules, or one row per slice
#: (WeightWatcher's ``pool=False``).
ConvRule = Literal["slices", "flatten", "per-slice"]

#: The analyses rmt registers itself; anything else in ANALYSES is a plug-in.
BUILT_IN = frozenset(ANALYSES)

__all__ = ["BUILT_IN", "COLUMNS", "NEEDS_MATRIX", "Capture", "Options", "analyze_tensor",
           "compute_layer", "failed_row", "layer_row", "low_rank_esd", "select",
           "with_warning"]


@dataclass(frozen=True)
class Options:
    """Everything a layer computation needs; plain values so tasks pickle cheaply.

    Attributes
    ----------
    normalize, conv, min_evals, max_evals, candidates, n_threads, plot_dir, on_error
        As the arguments of :func:`rmt.analyze`.
    device : {"cpu", "gpu"}
        The resolved device.
    thresholds : rmt.phases.PhaseThresholds
        The phase classifier's thresholds.
    analysis_modules : tuple of str
        Modules of plug-in analyses, which a worker process imports (so that they
        register there too) before its first task.
    per_slice : bool
        One row per kh·kw slice of a conv kernel (``conv="per-slice"``; ``conv`` is then
        ``"slices"``).
    enabled : frozenset of str
        Opt-in analyses turned on (``{"randomize"}``).
    seed : int
        Seed of the analyses that draw random numbers (per layer:
        :func:`rmt.columns.layer_rng`).
    fingers : {"dk", "clip_xmax"}
        The outlier rule of the ``fingers`` analysis (when enabled).
    """

    normalize: bool = True
    conv: Conv = "slices"
    per_slice: bool = False
    device: Literal["cpu", "gpu"] = "cpu"
    min_evals: int = 10
    max_evals: int | None = None
    candidates: Candidates = "powerlaw"
    n_threads: int | None = None
    thresholds: PhaseThresholds = field(default_factory=PhaseThresholds)
    plot_dir: str | None = None
    on_error: OnError = "record"
    analysis_modules: tuple[str, ...] = ()
    enabled: frozenset[str] = frozenset()
    seed: int = 0
    fingers: str = "dk"


def failed_row(base: dict[str, Any], warning: str) -> dict[str, Any]:
    """A row for a layer that could not be analysed.

    Parameters
    ----------
    base : dict
        The columns known so far (name, shape, ...).
    warning : str
        Why it failed.

    Returns
    -------
    dict
    """
    return {**base, "alpha": np.nan, "status": "failed", "warning": warning}


def compute_layer(name: str, W: Any, ev: np.ndarray, shape: WeightShape,
                  opts: Options, eigen: Any = None,
                  companions: dict[str, tuple[Any, np.ndarray]] | None = None) -> LayerResult:
    """Compute step: every registered analysis of one ESD, once each, in order.

    Parameters
    ----------
    name : str
        Row name (for messages).
    W : array_like
        The matrix or kernel the ESD came from (analyses may read it: the rank loss is
        confirmed on its singular values).
    ev : numpy.ndarray
        Its ESD, ascending, with a positive largest eigenvalue.
    shape : rmt.spectra.WeightShape
        How W was read.
    opts : Options
        The run's options.
    eigen : rmt.vectors.Eigendecomposition, optional
        The decomposition ``ev`` came from, when eigenvectors are needed.
    companions : dict, optional
        ``(state, evals)`` per analysis whose companion matrix's ESD came with ``ev``
        (:attr:`rmt.columns.LayerResult.companions`).

    Returns
    -------
    rmt.columns.LayerResult

    Raises
    ------
    rmt.errors.DataError
        A required analysis (the phase) has no result.
    """
    layer = LayerResult(name, shape, ev, ev[ev > numerical_zero_threshold(ev, shape.M)], opts,
                        eigen=eigen, companions=dict(companions or {}))
    for analysis in ANALYSES.values():
        if not analysis.enabled(opts):
            continue
        try:
            result = analysis.compute(layer, W)
        except DataError as err:
            if analysis.required:
                raise
            layer.failed[analysis.name] = str(err)
            layer.warnings.append(f"{analysis.failure}: {err}" if analysis.failure else str(err))
            continue
        if result is None:
            continue
        layer.results[analysis.name] = result
        note = analysis.warning(result) if analysis.warning is not None else ""
        if note:
            layer.warnings.append(note)
    return layer


def layer_row(layer: LayerResult, base: dict[str, Any]) -> dict[str, Any]:
    """Present step: the table row of a computed layer, column by column from the schema.

    Parameters
    ----------
    layer : rmt.columns.LayerResult
        From :func:`compute_layer`.
    base : dict
        The reader's columns (layer_id, name, shape, dtype, layout).

    Returns
    -------
    dict
        One entry per column of :data:`rmt.columns.COLUMNS` that applies (an analysis
        that failed gives NaN in its columns); ``seconds`` is left to the caller.
    """
    row = {**base, **_shape_columns(layer.shape)}
    for analysis in ANALYSES.values():
        result = layer.results.get(analysis.name)
        if result is not None:
            row.update({col.name: col.value(result, layer) for col in analysis.columns
                        if col.value is not None})
        elif analysis.name in layer.failed:
            row.update({col.name: np.nan for col in analysis.columns})
    row.update(status="success", warning="; ".join(layer.warnings))
    return row


def _shape_columns(shape: WeightShape) -> dict[str, Any]:
    return {"N": shape.N, "M": shape.M, "Q": shape.Q, "num_slices": shape.n_slices,
            "num_evals": shape.n_evals}


@dataclass
class Capture:
    """What a caller keeps of each matrix :func:`analyze_tensor` analyses (``rmt.compare``).

    Attributes
    ----------
    decompose : bool
        Take each 2-D matrix's ESD from an eigendecomposition with vectors
        (:func:`rmt.vectors.decompose`) and keep it.
    top : int, optional
        Only the top ``top`` eigenvectors (and the Gram matrix); default all.
    keep_gram : bool
        With every eigenvector, keep the Gram matrix as well.
    kept : dict
        Row name -> (the matrix as read, in its storage dtype; its decomposition or None).
    """

    decompose: bool = False
    top: int | None = None
    keep_gram: bool = False
    kept: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def _row(name: str, W: Any, base: dict[str, Any], opts: Options,
         capture: Capture | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    shape = weight_shape(W.shape, opts.conv, name)
    sized = {**base, **_shape_columns(shape)}  # what a failed row can still show
    # a mixture-of-experts router has one eigenvalue per expert (8 for Mixtral): it gets
    # its row whatever min_evals, its tail fit then warns about its few points
    minimum = min(opts.min_evals, 2) if role_of(name) == "router" else opts.min_evals
    if shape.n_evals < minimum:
        return failed_row(sized, f"too few eigenvalues ({shape.n_evals} < min_evals="
                                 f"{opts.min_evals})")
    if opts.max_evals is not None and shape.n_evals > opts.max_evals:
        return failed_row(sized, f"skipped: {shape.n_evals} eigenvalues > max_evals="
                                 f"{opts.max_evals}")
    eigen = None
    companions: dict[str, tuple[Any, np.ndarray]] = {}
    if capture is not None:
        capture.kept[name] = (W, None)
    if "vectors" in opts.enabled or (capture is not None and capture.decompose
                                     and W.ndim == 2):
        # one decomposition with vectors gives the ESD too
        from rmt.vectors import decompose

        top = capture.top if capture is not None and "vectors" not in opts.enabled else None
        eigen = decompose(W, normalize=opts.normalize, conv=opts.conv, device=opts.device,
                          n_threads=opts.n_threads, name=name, top=top,
                          keep_gram=capture is not None and capture.keep_gram)
        ev = eigen.evals
        if capture is not None:
            capture.kept[name] = (W, eigen)
    else:
        ev, companions = _esd_with_companions(W, name, opts)
    if not ev[-1] > 0:
        return failed_row(sized, _no_spectrum(W))
    try:
        layer = compute_layer(name, W, ev, shape, opts, eigen=eigen, companions=companions)
    except DataError as err:
        return failed_row(sized, str(err))
    return _present(layer, name, base, opts, start)


def _no_spectrum(W: Any) -> str:
    """Why a weight's largest eigenvalue is 0: all its entries are, or their squares
    underflow float64 (|w| below ~1e-154; read by row blocks, no float64 copy of W)."""
    rows = W.reshape(W.shape[0], -1)
    largest = 0.0
    step = max(1, (1 << 20) // max(1, rows.shape[1]))
    for s in range(0, rows.shape[0], step):
        block = np.abs(np.asarray(rows[s:s + step], dtype=np.float64))
        largest = max(largest, float(block.max(initial=0.0)))
    if largest == 0.0:
        return "all entries are zero"
    return (f"entries too small for an ESD: max |w| = {largest:.3g}, whose square underflows "
            "float64 (rescale the weight)")


def _esd_with_companions(W: Any, name: str, opts: Options
                         ) -> tuple[np.ndarray, dict[str, tuple[Any, np.ndarray]]]:
    """The layer's ESD, and those of the matrices enabled analyses asked for with it
    (:attr:`rmt.columns.Analysis.companion`), their eigenvalues solved together."""
    wanted = {}
    if W.ndim == 2 and isinstance(W, np.ndarray):
        for analysis in ANALYSES.values():
            if analysis.companion is not None and analysis.enabled(opts):
                made = analysis.companion(W, opts, name)
                if made is not None:
                    wanted[analysis.name] = made
    evs = esds_together([W, *(c.matrix for c in wanted.values())], normalize=opts.normalize,
                        conv=opts.conv, device=opts.device, n_threads=opts.n_threads,
                        name=name)
    # the matrices go now; each analysis keeps its state and the ESD
    return evs[0], {key: (c.state, ev) for (key, c), ev in zip(wanted.items(), evs[1:],
                                                               strict=True)}


def _present(layer: LayerResult, name: str, base: dict[str, Any], opts: Options,
             start: float) -> dict[str, Any]:
    """The row of a computed layer, its figure queued, its wall time since ``start``."""
    row = layer_row(layer, base)
    if opts.plot_dir is not None:
        from rmt.plot import queue_layer_plot

        problem = queue_layer_plot(layer.results["phase"], name, base["layer_id"],
                                   opts.plot_dir)
        if problem:
            row = with_warning(row, problem)
    row["seconds"] = time.perf_counter() - start
    return row


def with_warning(row: dict[str, Any], note: str) -> dict[str, Any]:
    """The row with ``note`` added to its warning column ("; "-separated).

    Parameters
    ----------
    row : dict
        A table row.
    note : str
        What to add.

    Returns
    -------
    dict
        A new row.
    """
    warning = row.get("warning") or ""
    return {**row, "warning": f"{warning}; {note}" if warning else note}


def analyze_tensor(layer_id: int, name: str, tensor: Any, opts: Options,
                   capture: Capture | None = None) -> list[dict[str, Any]]:
    """Rows for one checkpoint tensor: one, or one per matrix of a stacked 3-D tensor.

    Never raises for a bad tensor (with ``opts.on_error="record"``): any exception while
    reading or analysing it — a refused view, a file that changed on disk, a library
    error, ``MemoryError``, ``RecursionError`` — becomes a ``status="failed"`` row naming
    the problem. ``on_error="raise"`` re-raises instead, for debugging.

    Parameters
    ----------
    layer_id : int
        Position of the tensor in the checkpoint.
    name : str
        Its row name.
    tensor : LazyTensor
        The tensor (read here).
    opts : Options
        The run's options.
    capture : Capture, optional
        Keep each analysed matrix (and, if asked, its eigendecomposition) here.

    Returns
    -------
    list of dict
        Rows, in table order.
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
        per_slice = opts.per_slice  # each kh x kw slice its own row (conv is "slices")
        layout = getattr(tensor, "layout", None) or infer_layout(name, tensor.shape)
        shape = layout.shape(tensor.shape)
        base["layout"] = layout.describe(tensor.shape)
        if len(shape) > 4:
            return [failed_row(base, f"{len(shape)}-D tensor: rmt reads matrices, stacks of "
                                     "matrices and conv kernels of at most 4 axes")]
        update = getattr(tensor, "low_rank", None)
        if update is not None:
            if update.dora_magnitude is not None:
                return [failed_row(base, "DoRA update: it rescales the base weight, so it "
                                         "has no spectrum of its own; compare it with its "
                                         "base (rmt.analyze(adapter, base=...))")]
            if _factored(update, layout, opts):
                return [_safe_low_rank_row(name, update, shape, base, opts)]
        # A kernel with one input (or output) channel has vector slices, no spectrum: its
        # filters are read as one out x (in * k) matrix instead (an STFT basis, depthwise).
        vector_slices = (layout.kind == "conv" and len(shape) > 2 and opts.conv == "slices"
                         and min(shape[0], shape[1]) == 1)
        if vector_slices:
            shape = (shape[0], math.prod(shape[1:]))
            base["layout"] = f"{base['layout']}; 1 channel: read as {shape[0]}x{shape[1]}"
        stacked = layout.kind == "stack" and len(shape) == 3
        slices = per_slice and layout.kind == "conv" and len(shape) > 2 and not vector_slices
        if slices:
            each = weight_shape(shape[:2], opts.conv, name)
            if each.n_evals < opts.min_evals:
                return [failed_row(base, f"kernel of {math.prod(shape[2:])} slices, each with "
                                         f"too few eigenvalues ({each.n_evals} < min_evals="
                                         f"{opts.min_evals})")]
        if stacked:
            each = weight_shape(shape[1:], opts.conv, name)
            if each.n_evals < opts.min_evals:  # one row, not one per tiny matrix
                return [failed_row(base, f"stack of {shape[0]} matrices, each with too "
                                         f"few eigenvalues ({each.n_evals} < min_evals="
                                         f"{opts.min_evals})")]
        W = layout.apply(tensor.load())
        if vector_slices:
            W = W.reshape(shape)
        if stacked:
            return [_safe_row(f"{name}[{e}]", W[e], {**base, "name": f"{name}[{e}]"}, opts,
                              capture) for e in range(shape[0])]
        if slices:
            flat = W.reshape(shape[0], shape[1], -1)
            names = [f"{name}[{','.join(map(str, np.unravel_index(k, shape[2:])))}]"
                     for k in range(flat.shape[2])]
            return [_safe_row(shown, flat[:, :, k], {**base, "name": shown}, opts, capture)
                    for k, shown in enumerate(names)]
        return [_safe_row(name, W, base, opts, capture)]
    except Exception as err:  # contained: one tensor never stops the run
        if opts.on_error == "raise":
            raise
        if isinstance(err, WeightError):
            return [failed_row(base, err.problem)]
        if isinstance(err, CheckpointError):
            return [failed_row(base, f"unreadable: {err}")]
        return [failed_row(base, _describe(err))]


#: Opt-in analyses that read the matrix itself, not only its ESD: a LoRA update is then
#: formed densely for them.
NEEDS_MATRIX = frozenset({"randomize", "farms", "vectors"})


def _factored(update: Any, layout: Any, opts: Options) -> bool:
    """Whether a LoRA update's row can come from its factors alone."""
    plugins = {a.option for name, a in ANALYSES.items() if name not in BUILT_IN and a.option}
    needs_w = (opts.enabled & NEEDS_MATRIX) or (opts.enabled & plugins) or any(
        name not in BUILT_IN and not a.option for name, a in ANALYSES.items())
    return not needs_w and not opts.per_slice and layout.kind in ("matrix", "conv")


def low_rank_esd(update: Any, shape: tuple[int, ...], conv: Conv,
                 normalize: bool = True) -> tuple[np.ndarray, WeightShape]:
    """The ESD of a LoRA update from its factors: r nonzero eigenvalues per matrix, the
    other M − r exactly zero (float64; see :mod:`rmt.io.peft`).

    Parameters
    ----------
    update : rmt.io.peft.LowRankUpdate
        The factors.
    shape : tuple of int
        The weight's shape in rmt's order.
    conv : {"slices", "flatten"}
        Conv rule.
    normalize : bool, default True
        Eigenvalues of WᵀW/N (False: of WᵀW).

    Returns
    -------
    (numpy.ndarray, rmt.spectra.WeightShape)
        The ESD ascending, and how the weight is read.
    """
    ws = weight_shape(shape, conv)
    unit = float(ws.N) if normalize else 1.0
    parts = []
    for sv in update.singular_values(conv):
        lam = sv[: ws.M] ** 2 / unit
        parts.append(np.concatenate([np.zeros(ws.M - lam.size), lam]))
    return np.sort(np.concatenate(parts)), ws


def _safe_low_rank_row(name: str, update: Any, shape: tuple[int, ...], base: dict[str, Any],
                       opts: Options) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        ev, ws = low_rank_esd(update, shape, opts.conv, opts.normalize)
        sized = {**base, **_shape_columns(ws)}
        if ws.n_evals < opts.min_evals:
            return failed_row(sized, f"too few eigenvalues ({ws.n_evals} < min_evals="
                                     f"{opts.min_evals})")
        if not ev[-1] > 0:
            return failed_row(sized, "all entries are zero (B = 0: an untrained LoRA module)")
        if not np.all(np.isfinite(ev)):
            return failed_row(sized, "the LoRA factors contain NaN or infinite entries")
        layer = compute_layer(name, None, ev, ws, opts)
    except Exception as err:
        if opts.on_error == "raise":
            raise
        if isinstance(err, DataError | CheckpointError | WeightError):
            return failed_row(base, getattr(err, "problem", None) or str(err))
        return failed_row(base, _describe(err))
    return _present(layer, name, base, opts, start)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _safe_row(name: str, W: Any, base: dict[str, Any], opts: Options,
              capture: Capture | None = None) -> dict[str, Any]:
    try:
        if capture is None:
            return _row(name, W, base, opts)
        return _row(name, W, base, opts, capture)
    except Exception as err:  # numerical library errors, MemoryError, ...
        if opts.on_error == "raise":
            raise
        if isinstance(err, WeightError | DataError | CheckpointError):
            return failed_row(base, getattr(err, "problem", None) or str(err))
        return failed_row(base, _describe(err))


def select(names: list[str], layers: Any) -> list[bool]:
    """Which tensor names ``layers`` selects: None (all), a regex string, names, or ids.

    Parameters
    ----------
    names : list of str
        Tensor names in checkpoint order.
    layers : None, str, or iterable of str/int
        The selection.

    Returns
    -------
    list of bool
    """
    if layers is None:
        return [True] * len(names)
    if isinstance(layers, str):
        pattern = re.compile(layers)
        return [bool(pattern.search(n)) for n in names]
    wanted = set(layers)
    return [n in wanted or i in wanted for i, n in enumerate(names)]

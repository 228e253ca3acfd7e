"""``rmt.compare``: two checkpoints of one architecture, layer by layer (a fine-tune and its base).

For each pair of tensors matched by name (:mod:`rmt.pairing`) the table row holds the
full analysis of the other checkpoint's weight (the columns of ``rmt.analyze``), of the
base's (``base_`` columns) and of the update ΔW = W_other − W_base (``delta_`` columns),
then the comparison (:data:`COMPARISON_COLUMNS`): norms of the update, WeightWatcher's
``distances()`` measures, the change of α and of the phase, principal angles between the
top-k singular subspaces and the intruder dimensions (:mod:`rmt.subspaces`).

ΔW is formed by row blocks from the two stored tensors (memory maps where the format
allows): float32 when both are stored in 16 bits or fewer (the difference of two bf16 or
fp16 numbers is exact in float32 unless their exponents differ by more than 15 / 12
binades, and then within float32 rounding of the larger), float64 otherwise (exact for
float32 inputs). It is the one full-size copy; the Gram matrices accumulate in float64 as
everywhere in rmt. The base's and the other's ESDs come from eigendecompositions with
vectors (``syevd``), which also give the singular vectors.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rmt._device import kernels, to_host
from rmt.architecture import annotate
from rmt.columns import Column, table_columns
from rmt.errors import CheckpointError
from rmt.io import LazyTensor, open_checkpoint
from rmt.io.peft import LowRankUpdate
from rmt.layers import Capture, Options, analyze_tensor, failed_row, select
from rmt.pairing import pair_names
from rmt.spectra import stored_matrices
from rmt.subspaces import SingularVectors, compare_subspaces, t_times_blocks, ww_cka

__all__ = ["COMPARISON_COLUMNS", "compare", "compare_tensors", "delta_dtype"]

#: The table's own columns (the reader's identity columns, then the comparison); the
#: analysis columns follow, unprefixed (other), ``base_`` and ``delta_``.
COMPARISON_COLUMNS: dict[str, Column] = {c.name: c for c in (
    Column("layer_id", "position of the tensor in the other checkpoint", "count",
           "rmt.io.open_checkpoint"),
    Column("name", "tensor name in the other checkpoint (stacks: name[e])", "",
           "rmt.io.open_checkpoint"),
    Column("block", "index of the repeated unit the tensor is in (rmt.COLUMNS['block'])",
           "count", "rmt.architecture.annotate"),
    Column("role", "what the tensor does (rmt.COLUMNS['role'])", "",
           "rmt.architecture.role_of"),
    Column("expert", "routed expert index, 'shared', or empty", "",
           "rmt.architecture.annotate"),
    Column("head", "attention head (empty: compare reads whole matrices)", "count",
           "rmt.heads"),
    Column("base_name", "the base checkpoint's tensor it was matched with", "",
           "rmt.pairing.pair_names"),
    Column("matched_by", "'name' (after removing wrapper prefixes) or 'suffix'", "",
           "rmt.pairing.pair_names"),
    Column("shape", "stored shape", "", "rmt.io.open_checkpoint"),
    Column("dtype", "the other checkpoint's storage dtype", "", "rmt.io.open_checkpoint"),
    Column("base_dtype", "the base checkpoint's storage dtype", "", "rmt.io.open_checkpoint"),
    Column("delta_norm", "Frobenius norm of the update, ||W_other - W_base||_F (float64 "
           "sum)", "entry", "rmt.compare"),
    Column("base_norm", "||W_base||_F", "entry", "rmt.compare"),
    Column("relative_change", "||W_other - W_base||_F / ||W_base||_F", "", "rmt.compare"),
    Column("ww_delta_W", "WeightWatcher's distances() 'euclidean' delta_W: the mean over "
           "the matrices a weight is read as of ||W1 - W2||_F (= delta_norm for a matrix)",
           "entry", "rmt.compare"),
    Column("ww_cka", "WeightWatcher's distances() 'cka': ||W1^T W2||_F / sqrt(||W1^T W1||_F "
           "||W2 W2^T||_F), uncentred, W out x in (matrices only)", "", "rmt.subspaces.ww_cka"),
    Column("alpha_change", "alpha - base_alpha", "", "rmt.compare"),
    Column("phase_change", "'base -> other' when the phase changed, else ''", "",
           "rmt.compare"),
    Column("subspace_k", "top singular vectors compared (k capped by the rank)", "count",
           "rmt.subspaces.compare_subspaces"),
    Column("left_overlap", "mean cos^2 of the principal angles between the top-k left "
           "(output-space) singular subspaces: 1 = same subspace", "",
           "rmt.subspaces.compare_subspaces"),
    Column("left_angle_max", "largest principal angle between the top-k left subspaces",
           "degrees", "rmt.subspaces.compare_subspaces"),
    Column("right_overlap", "as left_overlap, input-space singular subspaces", "",
           "rmt.subspaces.compare_subspaces"),
    Column("right_angle_max", "largest principal angle between the top-k right subspaces",
           "degrees", "rmt.subspaces.compare_subspaces"),
    Column("num_intruders", "intruder dimensions (Shuttleworth et al. 2025): top-k left "
           "singular vectors of W_other whose largest |cosine| with every left singular "
           "vector of W_base is below epsilon", "count", "rmt.subspaces.compare_subspaces"),
    Column("intruder_index", "their positions among the top k (0 = largest)", "",
           "rmt.subspaces.compare_subspaces"),
    Column("intruder_sv", "their singular values", "entry", "rmt.subspaces.compare_subspaces"),
    Column("intruder_max_cos", "their largest |cosine| with the base's left singular "
           "vectors", "", "rmt.subspaces.compare_subspaces"),
)}

_IDENTITY = ("layer_id", "name", "block", "role", "expert", "head", "shape", "dtype",
             "layout", "N", "M", "Q", "num_slices", "num_evals")
_CLOSING = ("status", "warning", "seconds")


def delta_dtype(a: Any, b: Any) -> np.dtype:
    """The dtype ΔW is formed in: float32 for two ≤16-bit storage dtypes, else float64.

    Parameters
    ----------
    a, b : numpy dtype
        The storage dtypes of the two tensors.

    Returns
    -------
    numpy.dtype
    """
    small = max(np.dtype(a).itemsize, np.dtype(b).itemsize) <= 2
    return np.dtype(np.float32 if small else np.float64)


#: Rows per block when forming ΔW (float32 blocks of 1024 rows: 16 MB at 4096 columns).
DELTA_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class _Difference:
    """Loader of ΔW = other − base, formed by row blocks (picklable, like a file loader)."""

    base: LazyTensor
    other: LazyTensor
    dtype: str

    def __call__(self) -> np.ndarray:
        shape = tuple(self.other.shape)
        if tuple(self.base.shape) != shape or not shape:
            raise CheckpointError(self.other.source, f"{self.other.name}: shapes differ "
                                                     f"({self.base.shape} vs {shape})")
        out = np.empty(shape, dtype=self.dtype)
        # file-backed tensors are read block by block: never a full copy of either
        blocks = zip(self.base.row_blocks(DELTA_BLOCK_ROWS),
                     self.other.row_blocks(DELTA_BLOCK_ROWS), strict=True)
        s = 0
        for a, b in blocks:
            if a.shape != b.shape or s + len(a) > shape[0]:
                raise CheckpointError(self.other.source, f"{self.other.name}: shape changed "
                                                         "on disk")
            # the ufunc casts as it goes (exact: both storage dtypes fit in ``dtype``)
            np.subtract(np.asarray(b), np.asarray(a), out=out[s:s + len(a)], dtype=self.dtype)
            s += len(a)
        return out


@dataclass(frozen=True)
class _Merged:
    """Loader of W_base + ΔW for a LoRA update (DoRA: PEFT's rescaled merge), in ``dtype``."""

    base: LazyTensor
    update: LowRankUpdate
    dtype: str

    def __call__(self) -> np.ndarray:
        W = np.asarray(self.base.load(), dtype=self.dtype)
        if W.shape != self.update.shape:
            raise CheckpointError(self.base.source, f"{self.base.name}: shape changed on disk")
        merged = W + self.update.dense(self.dtype)
        magnitude = self.update.dora_magnitude
        if magnitude is None:
            return merged
        # DoRA (Liu et al. 2024; PEFT's DoraLinearLayer): each output's row of W + ΔW is
        # rescaled to the learnt magnitude m, W' = m / ||(W + ΔW)_o|| * (W + ΔW)_o
        m = np.asarray(magnitude.load(), dtype=self.dtype).reshape(-1)
        out_axis = 1 if self.update.transpose else 0
        rows = np.moveaxis(merged, out_axis, 0)
        if m.size != rows.shape[0]:
            raise CheckpointError(magnitude.source, f"DoRA magnitude of {self.base.name} has "
                                                    f"{m.size} entries for {rows.shape[0]} "
                                                    "outputs")
        norm = np.sqrt(np.sum(rows.reshape(rows.shape[0], -1).astype(np.float64) ** 2, axis=1))
        factor = (m / norm).astype(self.dtype).reshape((-1,) + (1,) * (rows.ndim - 1))
        return np.ascontiguousarray(np.moveaxis(rows * factor, 0, out_axis))


def _fro(W: Any) -> float:
    """Frobenius norm, accumulated in float64 (``rmt.kernels.cpu.sum_squares``): a float32
    or float64 array read as it is, any other storage dtype decoded by blocks of rows into
    one reused buffer — never a float64 copy of the whole tensor."""
    W = to_host(W)
    K = kernels("cpu")
    if W.dtype in (np.float32, np.float64) and W.flags.c_contiguous:
        return float(np.sqrt(K.sum_squares(W)))
    rows = W.reshape(W.shape[0], -1) if W.ndim != 2 else W
    step = max(1, (1 << 22) // max(1, rows.shape[1]))
    buffer = np.empty((min(step, rows.shape[0]), rows.shape[1]))
    total = 0.0
    for s in range(0, rows.shape[0], step):
        block = K.decode(rows[s:s + step], buffer[:min(step, rows.shape[0] - s)])
        total += K.sum_squares(block)
    return float(np.sqrt(total))


def _norm_columns(total: float, per_matrix: list[float], base_norm: Any) -> dict[str, Any]:
    """delta_norm, ww_delta_W (the mean over the matrices read) and relative_change."""
    out: dict[str, Any] = {"delta_norm": total, "ww_delta_W": float(np.mean(per_matrix))}
    if base_norm is not None and base_norm > 0:
        out["relative_change"] = total / base_norm
    return out


def _low_rank_norms(update: LowRankUpdate, opts: Options, base_norm: Any) -> dict[str, Any]:
    """The norm columns of a LoRA update, from its singular values."""
    per_matrix = [float(np.sqrt(np.sum(sv ** 2))) for sv in update.singular_values(opts.conv)]
    return _norm_columns(float(np.sqrt(np.sum(np.square(per_matrix)))), per_matrix, base_norm)


def _prefixed(row: dict[str, Any], prefix: str) -> dict[str, Any]:
    skip = set(_IDENTITY) | {"seconds"}
    return {f"{prefix}{key}": value for key, value in row.items() if key not in skip}


def _update_norms(Wd: Any, opts: Options, base_norm: Any) -> dict[str, Any]:
    """The norm columns of a dense update."""
    total = _fro(Wd)
    mats = stored_matrices(Wd, opts.conv)
    return _norm_columns(total, [total] if len(mats) == 1 else [_fro(m) for m in mats],
                         base_norm)


def _reduce(eigen: Any, k: int, streamed: bool) -> SingularVectors | None:
    """What the comparison keeps of the fine-tune's decomposition (the rest is freed)."""
    if eigen is None:
        return None
    sv = SingularVectors.from_eigen(eigen)
    left = sv.eigen_side == "left"
    # a tall matrix's CKA needs W_bᵀW_o: read again by blocks, or the matrix kept when it
    # cannot be (a transposed layout, a stack, an in-memory source)
    return sv.reduced(k, keep_full=left, keep_matrix=not left and not streamed)


def _streamable(t: LazyTensor) -> bool:
    """A 2-D file-backed tensor read as stored: its rows can be read again by blocks."""
    layout = t.layout
    return (t.ndim == 2 and hasattr(t._loader, "rows") and t.low_rank is None
            and (layout is None or (layout.perm is None and layout.row_axes is None)))


def _streamed_cross_norm(A_b: Any, other: LazyTensor) -> float:
    """‖A_bᵀ W_o‖_F with W_o read again by row blocks (float64 accumulation)."""
    return float(np.linalg.norm(t_times_blocks(A_b, other.row_blocks(DELTA_BLOCK_ROWS))))


def _comparison(rb: dict[str, Any], ro: dict[str, Any], kept_b: Any,
                other_sv: SingularVectors | None, k: int, epsilon: float,
                other: LazyTensor | None = None) -> dict[str, Any]:
    """The comparison columns that need the base's matrix and both decompositions."""
    out: dict[str, Any] = {}
    if kept_b is not None:
        out["base_norm"] = _fro(kept_b[0])
    a_b, a_o = rb.get("alpha"), ro.get("alpha")
    if a_b is not None and a_o is not None:
        out["alpha_change"] = float(a_o) - float(a_b)
    p_b, p_o = rb.get("phase"), ro.get("phase")
    if isinstance(p_b, str) and isinstance(p_o, str):
        out["phase_change"] = "" if p_b == p_o else f"{p_b} -> {p_o}"
    eig_b = kept_b[1] if kept_b is not None else None
    if eig_b is not None and other_sv is not None:
        sb = SingularVectors.from_eigen(eig_b)
        cross = None
        if sb.eigen_side == "right" and other_sv.A is None and other is not None:
            cross = _streamed_cross_norm(sb.A, other)
        out["ww_cka"] = ww_cka(sb, other_sv, cross_norm=cross)
        sub = compare_subspaces(sb, other_sv, k=k, epsilon=epsilon)
        out.update(subspace_k=sub.k, left_overlap=sub.left_overlap,
                   left_angle_max=sub.left_angle_max, right_overlap=sub.right_overlap,
                   right_angle_max=sub.right_angle_max, num_intruders=sub.n_intruders,
                   intruder_index=sub.intruder_index, intruder_sv=sub.intruder_sv,
                   intruder_max_cos=sub.intruder_max_cos)
    return out


def compare_tensors(layer_id: int, name: str, base: LazyTensor, other: LazyTensor,
                    opts: Options, *, k: int = 10, epsilon: float = 0.5,
                    base_name: str | None = None) -> list[dict[str, Any]]:
    """Rows of :func:`compare` for one pair of tensors (one per matrix of a stack).

    Never raises for bad tensors: a tensor that cannot be read or analysed gives its
    part of the row as NaN, the row ``status="failed"`` and the reason in ``warning``;
    whatever could be computed is kept.

    Parameters
    ----------
    layer_id : int
        Position of the tensor in the other checkpoint.
    name : str
        Its name (row names follow it).
    base, other : LazyTensor
        The two tensors.
    opts : rmt.layers.Options
        The run's options (:func:`rmt.runner.layer_options`).
    k : int, default 10
        Top singular vectors compared.
    epsilon : float, default 0.5
        Intruder threshold.
    base_name : str, optional
        The base tensor's name, for the ``base_name`` column (default: ``base.name``).

    Returns
    -------
    list of dict
    """
    start = time.perf_counter()
    ident = {"layer_id": layer_id, "name": name, "base_name": base_name or base.name,
             "shape": "x".join(map(str, other.shape)), "dtype": str(other.dtype),
             "base_dtype": str(base.dtype)}
    if base.error or other.error:
        which = "base" if base.error else "other"
        return [failed_row(ident, f"unreadable ({which}): {base.error or other.error}")]
    if tuple(base.shape) != tuple(other.shape):
        return [failed_row(ident, f"shape differs: base {'x'.join(map(str, base.shape))}, "
                                  f"other {'x'.join(map(str, other.shape))}")]
    # the base's every singular vector (intruders), the other's top k and Gram matrix only
    cap_b, cap_o = Capture(decompose=True, keep_gram=True), Capture(decompose=True, top=k)
    cap_d = Capture()
    dt = delta_dtype(base.dtype, other.dtype)
    update = other.low_rank
    if update is not None:  # a LoRA adapter's entry: other = base + ΔW, ΔW from its factors
        if update.kind == "embedding" and update.dora_magnitude is not None:
            return [failed_row(ident, "DoRA on an embedding: not read (linear and conv "
                                      "DoRA modules are)")]
        delta = other
        other = LazyTensor(name, tuple(base.shape), dt, other.source,
                           _Merged(base, update, dt.name), layout=base.layout)
        if update.dora_magnitude is not None:  # the update depends on W: form it densely
            delta = LazyTensor(name, tuple(base.shape), dt, other.source,
                               _Difference(base, other, dt.name), layout=base.layout)
    else:
        delta = LazyTensor(name, tuple(other.shape), dt, other.source,
                           _Difference(base, other, dt.name),
                           layout=other.layout or base.layout)
    # One tensor's worth of memory at a time: the other's analysis, reduced to what the
    # comparison needs; then the base's, compared and released; then the update's.
    rows_o = analyze_tensor(layer_id, name, other, opts, cap_o)
    streamed = _streamable(other) and _streamable(base)
    reduced: dict[str, Any] = {}
    for key in list(cap_o.kept):
        reduced[key] = _reduce(cap_o.kept.pop(key)[1], k, streamed)
    rows_b = analyze_tensor(layer_id, name, base, opts, cap_b)
    measured: dict[str, dict[str, Any]] = {}
    problems_of: dict[str, list[str]] = {}
    for ro, rb in zip(rows_o, rows_b, strict=True):
        key = ro["name"]
        try:
            measured[key] = _comparison(rb, ro, cap_b.kept.get(key), reduced.get(key),
                                        k, epsilon, other if streamed else None)
        except Exception as err:  # contained like an analysis: the rows are kept
            if opts.on_error == "raise":
                raise
            problems_of[key] = [f"comparison: {type(err).__name__}: {err}"]
    cap_b.kept.clear()
    reduced.clear()
    rows_d = analyze_tensor(layer_id, name, delta, opts, cap_d)
    out = []
    for ro, rb, rd in zip(rows_o, rows_b, rows_d, strict=True):
        row_name = ro["name"]
        problems = [f"{part}: {r.get('warning', '')}" for part, r in
                    (("other", ro), ("base", rb), ("delta", rd)) if r.get("status") != "success"]
        problems += problems_of.get(row_name, [])
        notes = [f"{part}: {r['warning']}" for part, r in (("base", rb), ("delta", rd))
                 if r.get("status") == "success" and r.get("warning")]
        row = {**ident, **ro, "name": row_name, "dtype": str(other.dtype),
               **_prefixed(rb, "base_"), **_prefixed(rd, "delta_"),
               **measured.get(row_name, {})}
        kept_d = cap_d.kept.get(row_name)
        if kept_d is not None:
            row.update(_update_norms(kept_d[0], opts, row.get("base_norm")))
        elif delta.low_rank is not None and rd.get("status") == "success":
            row.update(_low_rank_norms(delta.low_rank, opts, row.get("base_norm")))
        warning = "; ".join(p for p in [ro.get("warning", "") if ro.get("status") == "success"
                                        else "", *notes, *problems] if p)
        row.update(status="failed" if problems else "success", warning=warning,
                   seconds=time.perf_counter() - start)
        out.append(row)
    return out


def comparison_columns(enabled: Iterable[str] = ()) -> list[str]:
    """The columns of a :func:`compare` table, in order.

    Parameters
    ----------
    enabled : iterable of str
        Opt-in analyses turned on.

    Returns
    -------
    list of str
    """
    analysis = [c for c in table_columns(enabled) if c not in _IDENTITY and c not in _CLOSING]
    return (list(COMPARISON_COLUMNS) + ["layout", "N", "M", "Q", "num_slices", "num_evals"]
            + analysis + [f"base_{c}" for c in analysis] + ["base_status", "base_warning"]
            + [f"delta_{c}" for c in analysis] + ["delta_status", "delta_warning"]
            + list(_CLOSING))


def _frame(rows: list[dict[str, Any]], enabled: Any) -> pd.DataFrame:
    columns = comparison_columns(enabled)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    df = annotate(df)
    for col in columns:
        if col not in df.columns:
            df[col] = np.nan
    extra = [c for c in df.columns if c not in columns]
    df = df[columns + extra].sort_values("layer_id", kind="stable").reset_index(drop=True)
    return df.fillna({"warning": "", "base_warning": "", "delta_warning": ""}).infer_objects()


def _chosen(listed: list[tuple[int, str, LazyTensor]], layers: Any) -> dict[str, bool]:
    """``layers`` as :func:`rmt.analyze` reads it: a regex, or names and layer ids."""
    if layers is None:
        return {name: True for _, name, _ in listed}
    if isinstance(layers, str):
        keep = select([name for _, name, _ in listed], layers)
        return {name: k for (_, name, _), k in zip(listed, keep, strict=True)}
    wanted = set(layers)
    return {name: name in wanted or i in wanted for i, name, _ in listed}


def _weights(source: Any) -> list[tuple[int, str, LazyTensor]]:
    from rmt.runner import _unique_names, analysed

    listing = [(i, name, t) for i, (name, t) in enumerate(open_checkpoint(source))]
    names, _ = _unique_names(listing)
    return [(i, shown, t) for (i, _, t), shown in zip(listing, names, strict=True)
            if analysed(t)]


@dataclass(frozen=True)
class Pair:
    """One task of :func:`compare`: two tensors to compare (picklable: file loaders only).

    Attributes
    ----------
    base, other : LazyTensor
        The tensors.
    base_name : str
        The base tensor's name.
    matched_by : str
        How the names were paired.
    k : int
        Top singular vectors compared.
    epsilon : float
        Intruder threshold.
    """

    base: LazyTensor
    other: LazyTensor
    base_name: str
    matched_by: str
    k: int
    epsilon: float

    data_key = None  # never an alias of another task

    @property
    def nbytes(self) -> int:
        """Bytes read (both tensors)."""
        return self.base.nbytes + self.other.nbytes

    @property
    def shape(self) -> tuple[int, ...]:
        """The other tensor's shape (for the scheduler's cost estimate)."""
        return tuple(self.other.shape)


def compare_pair(layer_id: int, name: str, pair: Pair, opts: Options) -> list[dict[str, Any]]:
    """The rows of one :class:`Pair` (what a worker runs).

    Parameters
    ----------
    layer_id : int
        Position of the tensor in the other checkpoint.
    name : str
        Its name.
    pair : Pair
        The task.
    opts : rmt.layers.Options
        The run's options.

    Returns
    -------
    list of dict
    """
    rows = compare_tensors(layer_id, name, pair.base, pair.other, opts, k=pair.k,
                           epsilon=pair.epsilon, base_name=pair.base_name)
    return [{**row, "matched_by": pair.matched_by} for row in rows]


def compare(base: Any, other: Any, *, layers: Any = None, k: int = 10, epsilon: float = 0.5,
            progress: bool | None = None, n_jobs: int = 1, backend: str = "threads",
            executor: concurrent.futures.Executor | None = None, resume: Any = None,
            restart: bool = False, **analyze_options: Any) -> pd.DataFrame:
    """Compare two checkpoints of one architecture layer by layer (a fine-tune to its base).

    Parameters
    ----------
    base, other : path, dict of arrays or torch.nn.Module
        Anything :func:`rmt.analyze` reads; ``other`` is the fine-tuned one, or a PEFT
        LoRA adapter of ``base`` (each module then compares base + ΔW with base, ΔW
        analysed from its factors).
    layers : None, str, or iterable of str/int
        Which of ``other``'s tensors (a regex, names, or layer ids), as in ``analyze``.
    k : int, default 10
        Top singular vectors compared (principal angles, intruder dimensions).
    epsilon : float, default 0.5
        Intruder threshold on the largest |cosine| with the base's left singular vectors.
    progress : bool, optional
        tqdm progress bar over layers (default: only when stderr is a terminal).
    n_jobs : int, default 1
        Pairs compared side by side (``backend``).
    backend : {"threads", "processes"}, default "threads"
        As in :func:`rmt.analyze`; worker processes need both sources as paths (tasks
        carry file offsets).
    executor : concurrent.futures.Executor, optional
        Run the pairs on this executor (a Dask ``Client.get_executor()``).
    resume : path, optional
        Resume file, as in :func:`rmt.analyze`; it records both checkpoints' identities,
        ``k``, ``epsilon`` and the options.
    restart : bool, default False
        Start a resume file of another run anew.
    **analyze_options
        Options of the three analyses, as in :func:`rmt.analyze` (``normalize``,
        ``candidates``, ``randomize=True``, ``n_threads``, ``fpr=``, ...).

    Returns
    -------
    pandas.DataFrame
        One row per matched weight (per matrix of a stack), in ``other``'s order, then one
        failed row per weight found in only one checkpoint or not pairable, saying so.
        Columns: :data:`COMPARISON_COLUMNS`, the analysis of ``other`` (``rmt.COLUMNS``),
        the same with ``base_`` and ``delta_`` prefixes, then status, warning, seconds.

    Raises
    ------
    ValueError
        A bad option.
    rmt.errors.CheckpointError
        A checkpoint itself cannot be opened.
    rmt.resume.ResumeError
        The resume file belongs to another run, or is in use.
    rmt.errors.AnalysisError
        The run stopped part-way; its ``table`` holds every finished row.
    """
    from rmt import __version__
    from rmt.resume import ResumeLog, checkpoint_identity
    from rmt.runner import (
        _threads_per_worker,
        _worker_processes,
        execute,
        layer_options,
        resume_options,
    )

    if "plot_dir" in analyze_options:
        raise ValueError("compare draws no figures (plot_dir): analyse either checkpoint "
                         "with rmt.analyze(plot_dir=...) for its layer plots")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if isinstance(epsilon, bool) or not isinstance(epsilon, float | int) or not 0 < epsilon <= 1:
        raise ValueError(f"epsilon must be in (0, 1], got {epsilon!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be an integer >= 1, got {n_jobs!r}")
    parallel = _worker_processes(executor, n_jobs, backend)
    if parallel and not all(isinstance(s, str | os.PathLike) for s in (base, other)):
        raise ValueError("worker processes need checkpoint paths (tasks carry file "
                         "offsets, never weights); backend='threads' reads any source")
    conv = analyze_options.get("conv", "slices")
    fit_options = {key: value for key, value in analyze_options.items()
                   if key not in inspect.signature(layer_options).parameters}
    if executor is None and n_jobs > 1 and analyze_options.get("n_threads") is None:
        analyze_options = {**analyze_options, "n_threads": _threads_per_worker(n_jobs)}
    opts = layer_options(parallel=parallel, **analyze_options)
    listed_b, listed_o = _weights(base), _weights(other)
    by_b = {name: t for _, name, t in listed_b}
    by_o = {name: (i, t) for i, name, t in listed_o}
    pairing = pair_names([n for _, n, _ in listed_o], [n for _, n, _ in listed_b])
    chosen = _chosen(listed_o, layers)
    todo = [(by_o[o][0], o, Pair(by_b[b], by_o[o][1], b, how, int(k), float(epsilon)))
            for o, b, how in pairing.pairs if chosen[o]]
    log = None
    if resume is not None:
        options = {**resume_options(opts, conv, fit_options), "k": int(k),
                   "epsilon": float(epsilon),
                   "base": checkpoint_identity(base, exclude=resume)}
        log = ResumeLog(resume, checkpoint_identity(other, exclude=resume), options,
                        __version__, restart)
    rows = execute(todo, opts, log=log, executor=executor, n_jobs=n_jobs, backend=backend,
                   n_threads=opts.n_threads, progress=progress, resume=resume,
                   work=compare_pair, desc="rmt.compare", frame=_frame)
    rows += _unpaired_rows(pairing, chosen, by_o, by_b, layers, listed_o)
    return _frame(rows, opts.enabled)


def _unpaired_rows(pairing: Any, chosen: dict[str, bool], by_o: dict, by_b: dict, layers: Any,
                   listed_o: list) -> list[dict[str, Any]]:
    rows = []
    last = max((i for i, _, _ in listed_o), default=-1)
    for name in pairing.only_a:
        if chosen[name]:
            i, t = by_o[name]
            rows.append(failed_row({"layer_id": i, "name": name, "shape": "x".join(
                map(str, t.shape)), "dtype": str(t.dtype)}, "only in the other checkpoint: no "
                "base tensor of this name"))
    if layers is None:
        for j, name in enumerate(pairing.only_b):
            t = by_b[name]
            rows.append(failed_row({"layer_id": last + 1 + j, "base_name": name,
                                    "shape": "x".join(map(str, t.shape)),
                                    "base_dtype": str(t.dtype)},
                                   "only in the base checkpoint: no tensor of this name in "
                                   "the other"))
    for name, why in pairing.ambiguous.items():
        if name in by_o and chosen.get(name, False):
            rows.append(failed_row({"layer_id": by_o[name][0], "name": name},
                                   f"not paired: {why}"))
    return rows

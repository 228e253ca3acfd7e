"""Attention heads one by one (``rmt.analyze(heads=True)``).

A q, k or v projection stores its heads' matrices one above the other (PyTorch's Linear:
out × in, rows h·d … (h+1)·d − 1 are head h), an output projection side by side (its
columns), a fused projection all three (``[q; k; v]`` sectioned along the outputs, as
GPT-2's ``c_attn``, timm's ``qkv`` and ``nn.MultiheadAttention``'s ``in_proj_weight``
do, or interleaved per head or key/value group, as GPT-NeoX's and BLOOM's
``query_key_value``). GPT-2's Conv1D weights are stored in × out; the orientation is
read from the shapes (the output axis is the one of the heads' total size), and from the
name when the matrix is square. With grouped-query attention the key and value heads
are shared by groups of n_heads / n_kv_heads query heads.

Each head's matrix gets its own row (``name[h3]``; fused sections ``name[q,h3]``), and
each head's two bilinear maps (Elhage et al., "A Mathematical Framework for Transformer
Circuits", 2021) a row of role ``qk`` or ``ov``:

* W_QK^h = W_Q^hᵀ W_K^g (hidden × hidden; the attention score of x against y is
  xᵀ W_QK^h y up to the 1/√d scale) and
* W_OV^h = W_O^h W_V^g (hidden × hidden; what the head writes for what it reads),

with g the key/value head of query head h. Both have rank ≤ d; their d nonzero squared
singular values come from a d × d problem (QR of both factors, the SVD of R₁R₂ᵀ, float64,
as for a LoRA update: :mod:`rmt.io.peft`), the other hidden − d eigenvalues of the ESD
are exact zeros, and the hidden × hidden product is never formed unless an opt-in
analysis reads the matrix itself.

The head geometry comes from ``config.json`` beside the checkpoint (Hugging Face keys:
``num_attention_heads`` / ``n_head``, ``num_key_value_heads``, ``head_dim``,
``hidden_size`` / ``n_embd`` / ``d_model``) or is given (``heads=12``, ``heads=(32, 8)``,
``heads={"n_heads": 32, "n_kv_heads": 8, "head_dim": 128}``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rmt.architecture import describe
from rmt.errors import WeightError
from rmt.io import LazyTensor
from rmt.io.layout import Layout
from rmt.io.peft import LowRankUpdate, _Dense

__all__ = ["HeadSpec", "HeadTask", "analyze_item", "attention_tasks", "head_matrices",
           "head_spec", "read_config"]

#: config.json files are a few kB; a larger one is refused unread.
MAX_CONFIG_BYTES = 1 << 20

_ATTENTION_ROLES = ("q", "k", "v", "o", "qkv")


@dataclass(frozen=True)
class HeadSpec:
    """The geometry of a model's attention heads.

    Attributes
    ----------
    n_heads : int
        Query heads.
    n_kv_heads : int
        Key/value heads (= n_heads without grouped-query attention).
    head_dim : int
        d, each head's width.
    qkv_layout : {"auto", "sectioned", "interleaved"}
        Fused projections: ``[q; k; v]``, or per key/value group ``[q…; k; v]``
        (``auto``: interleaved for ``query_key_value``, the GPT-NeoX/BLOOM name).
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    qkv_layout: str = "auto"

    def __post_init__(self) -> None:
        for key in ("n_heads", "n_kv_heads", "head_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"heads: {key} must be a positive integer, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"heads: {self.n_heads} query heads cannot be shared by "
                             f"{self.n_kv_heads} key/value heads")
        if self.qkv_layout not in ("auto", "sectioned", "interleaved"):
            raise ValueError(f"heads: qkv_layout must be auto, sectioned or interleaved, got "
                             f"{self.qkv_layout!r}")

    def as_dict(self) -> dict[str, Any]:
        """The fields, for resume files and reports.

        Returns
        -------
        dict
        """
        return {"n_heads": self.n_heads, "n_kv_heads": self.n_kv_heads,
                "head_dim": self.head_dim, "qkv_layout": self.qkv_layout}


def read_config(source: Any) -> dict[str, Any] | None:
    """``config.json`` beside a checkpoint file, or inside a checkpoint directory.

    Parameters
    ----------
    source : path or anything else
        What ``rmt.analyze`` was given (non-paths have no config).

    Returns
    -------
    dict or None
        The parsed object; None when there is none, it is over 1 MiB, or it is not a JSON
        object.
    """
    if not isinstance(source, str | Path):
        return None
    path = Path(source)
    config = path / "config.json" if path.is_dir() else path.parent / "config.json"
    try:
        if not config.is_file() or config.stat().st_size > MAX_CONFIG_BYTES:
            return None
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("text_config"), dict):
        parsed = {**parsed, **parsed["text_config"]}  # multimodal configs nest the LM's
    return parsed if isinstance(parsed, dict) else None


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def head_spec(heads: Any, source: Any = None) -> HeadSpec | None:
    """The head geometry ``heads=`` asks for.

    Parameters
    ----------
    heads : None, False, True, int, (int, int), dict or HeadSpec
        None/False: no per-head rows. True: from ``config.json`` beside ``source``.
        An int: that many heads (no grouped-query attention), head_dim from each tensor's
        shape; a pair: (n_heads, n_kv_heads); a dict: HeadSpec's fields.
    source : path, optional
        The checkpoint (for ``heads=True``).

    Returns
    -------
    HeadSpec or None

    Raises
    ------
    ValueError
        ``heads=True`` and no usable config.json, or a bad value.
    """
    if heads is None or heads is False:
        return None
    if isinstance(heads, HeadSpec):
        return heads
    if heads is True:
        config = read_config(source)
        if config is None:
            raise ValueError("heads=True reads the head geometry from config.json beside the "
                             f"checkpoint, and there is none for {source!r}: give it, e.g. "
                             "heads=12 or heads=(32, 8) (query, key/value heads; on the "
                             "command line --heads 12, --heads 32:8)")
        n = _first_int(config, "num_attention_heads", "n_head", "num_heads", "n_heads")
        hidden = _first_int(config, "hidden_size", "n_embd", "d_model", "dim")
        if n is None:
            raise ValueError(f"config.json of {source!r} has no num_attention_heads: give "
                             "heads=N")
        kv = _first_int(config, "num_key_value_heads", "n_head_kv", "num_kv_heads",
                        "n_kv_heads")
        if kv is None and config.get("multi_query") is True:
            kv = 1
        d = _first_int(config, "head_dim", "d_kv", "kv_channels")
        if d is None:
            if hidden is None or hidden % n:
                raise ValueError(f"config.json of {source!r}: no head_dim, and hidden size "
                                 f"{hidden} is not a multiple of {n} heads")
            d = hidden // n
        return HeadSpec(n, kv or n, d)
    if isinstance(heads, dict):
        known = {"n_heads", "n_kv_heads", "head_dim", "qkv_layout"}
        if set(heads) - known or "n_heads" not in heads:
            raise ValueError(f"heads: a dict needs n_heads (and may give n_kv_heads, "
                             f"head_dim, qkv_layout), got {sorted(heads)}")
        count: int = heads["n_heads"]
        shared: int = heads.get("n_kv_heads", count)
        layout = heads.get("qkv_layout", "auto")
        if heads.get("head_dim") is not None:
            return HeadSpec(count, shared, heads["head_dim"], layout)
        return _PerTensorWidth(count, shared, 1, layout)
    if isinstance(heads, tuple | list) and len(heads) == 2:
        return _PerTensorWidth(heads[0], heads[1], 1)
    if isinstance(heads, int) and not isinstance(heads, bool):
        return _PerTensorWidth(heads, heads, 1)
    raise ValueError(f"heads must be True, an int, (n_heads, n_kv_heads), a dict or a "
                     f"HeadSpec, got {heads!r}")


@dataclass(frozen=True)
class _PerTensorWidth(HeadSpec):
    """A HeadSpec whose head_dim is read from each tensor (the heads' total / n_heads)."""

    def as_dict(self) -> dict[str, Any]:
        """The fields (head_dim None: read from each tensor).

        Returns
        -------
        dict
        """
        return {**super().as_dict(), "head_dim": None}


def _width(spec: HeadSpec, total: int, heads: int) -> int:
    if not isinstance(spec, _PerTensorWidth):
        return spec.head_dim
    if total % heads:
        raise WeightError(f"{total} is not a multiple of {heads} heads")
    return total // heads


def _conv1d(name: str) -> bool:
    """GPT-2's Conv1D projections store in × out."""
    return bool(re.search(r"(?:^|\.)(?:c_attn|c_proj|c_fc)(?:\.|$)", name.lower()))


def _heads_on_rows(W: np.ndarray, count: int, spec: HeadSpec, conv1d: bool
                   ) -> tuple[np.ndarray, int]:
    """W oriented with its ``count`` heads stacked along the rows (count·d × other), and d.

    The axis of the heads' total size is the heads' axis; a square matrix follows the
    storage convention (``conv1d``: stored in × out, GPT-2's Conv1D, so the heads lie along
    the columns).
    """
    rows, cols = W.shape
    d = _width(spec, cols if conv1d else rows, count)
    total = count * d
    if rows == cols:
        return (W.T if conv1d else W), d
    if rows == total:
        return W, d
    if cols == total:
        return W.T, d
    raise WeightError(f"neither axis of {rows}x{cols} has the heads' total size {total}")


def head_matrices(W: np.ndarray, role: str, spec: HeadSpec, name: str = ""
                  ) -> dict[str, list[np.ndarray]]:
    """Each head's matrix of one attention projection.

    Parameters
    ----------
    W : numpy.ndarray
        The stored 2-D weight.
    role : {"q", "k", "v", "o", "qkv"}
        Its role (:func:`rmt.architecture.role_of`).
    spec : HeadSpec
        The geometry.
    name : str
        Its name (the orientation of a square matrix; the qkv layout).

    Returns
    -------
    dict
        role -> list of matrices, head order: d × hidden for q, k, v (out × in), hidden ×
        d for o. A fused projection gives all three.

    Raises
    ------
    rmt.errors.WeightError
        The shape does not fit the geometry.
    """
    if W.ndim != 2:
        raise WeightError(f"per-head split needs a matrix, got shape {W.shape}")
    n, kv = spec.n_heads, spec.n_kv_heads
    conv1d = _conv1d(name)
    if role == "o":  # the heads are the inputs: the same rule on Wᵀ
        A, d = _heads_on_rows(W.T, n, spec, conv1d)  # n·d × hidden
        return {"o": [A[h * d:(h + 1) * d].T for h in range(n)]}
    if role in ("q", "k", "v"):
        heads = n if role == "q" else kv
        A, d = _heads_on_rows(W, heads, spec, conv1d)  # heads·d × hidden
        return {role: [A[h * d:(h + 1) * d] for h in range(heads)]}
    if role == "qkv":
        A, d = _heads_on_rows(W, n + 2 * kv, spec, conv1d)
        layout = spec.qkv_layout
        if layout == "auto":
            layout = "interleaved" if "query_key_value" in name.lower() else "sectioned"
        if layout == "sectioned":
            q, k, v = A[:n * d], A[n * d:(n + kv) * d], A[(n + kv) * d:]
        else:  # per key/value group: its query heads, then its key, then its value
            group = n // kv
            G = A.reshape(kv, group + 2, d, A.shape[1])
            q = G[:, :group].reshape(n * d, A.shape[1])
            k, v = G[:, group].reshape(kv * d, -1), G[:, group + 1].reshape(kv * d, -1)
        return {"q": [q[h * d:(h + 1) * d] for h in range(n)],
                "k": [k[g * d:(g + 1) * d] for g in range(kv)],
                "v": [v[g * d:(g + 1) * d] for g in range(kv)]}
    raise WeightError(f"role {role!r} has no heads")


def _in_memory(name: str, a: np.ndarray, source: str) -> LazyTensor:
    a = np.ascontiguousarray(a)
    return LazyTensor(name, tuple(a.shape), a.dtype, source, _Held(a),
                      layout=Layout("matrix", origin="one attention head"))


@dataclass(frozen=True)
class _Held:
    """A loader of an array already read (a head's slice of a tensor read once)."""

    array: np.ndarray = field(repr=False)

    def __call__(self) -> np.ndarray:
        return self.array


def _bilinear(name: str, left: np.ndarray, right: np.ndarray, source: str, what: str
              ) -> LazyTensor:
    """The rank-d map left·right as a lazily formed tensor with its factors."""
    update = LowRankUpdate(_in_memory(f"{name}.A", np.asarray(right, dtype=np.float64), source),
                           _in_memory(f"{name}.B", np.asarray(left, dtype=np.float64), source),
                           1.0, "linear")
    shape = (left.shape[0], right.shape[1])
    return LazyTensor(name, shape, np.dtype(np.float64), source, _Dense(update, "float64"),
                      layout=Layout("matrix", origin=f"{what} of one head (rank "
                                                     f"{left.shape[1]})"),
                      low_rank=update)


@dataclass(frozen=True)
class HeadTask:
    """One attention tensor to analyse head by head (a task of ``rmt.analyze``).

    Attributes
    ----------
    tensor : LazyTensor
        The projection (its whole-matrix row is kept).
    role : str
        q, k, v, o or qkv.
    spec : HeadSpec
        The geometry.
    partners : dict
        Tensors a bilinear map needs besides this one, by role: a key projection's task
        carries the query projection (QK maps), an output projection's the value one (OV
        maps; a fused projection's value section).
    prefix : str
        Name prefix of the bilinear rows (the attention module's path).
    """

    tensor: LazyTensor
    role: str
    spec: HeadSpec
    partners: dict[str, LazyTensor] = field(default_factory=dict)
    prefix: str = ""

    data_key = None  # never an alias of another task

    @property
    def nbytes(self) -> int:
        """Bytes read (this tensor and its partners)."""
        return self.tensor.nbytes + sum(t.nbytes for t in self.partners.values())

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape (for the scheduler's cost estimate)."""
        return tuple(self.tensor.shape)


def _heads_of(t: LazyTensor, role: str, spec: HeadSpec) -> dict[str, list[np.ndarray]]:
    return head_matrices(np.asarray(t.load()), role, spec, t.name)


def analyze_heads(layer_id: int, name: str, task: HeadTask, opts: Any) -> list[dict[str, Any]]:
    """The rows of one :class:`HeadTask`: the whole matrix, each head, each bilinear map.

    Parameters
    ----------
    layer_id : int
        Position of the tensor in the checkpoint.
    name : str
        Its row name.
    task : HeadTask
        What to analyse.
    opts : rmt.layers.Options
        The run's options.

    Returns
    -------
    list of dict
        A head the geometry does not fit gives one failed row saying why; the whole
        matrix's row is always there.
    """
    from rmt.layers import analyze_tensor, failed_row

    try:
        W = np.asarray(task.tensor.load())
    except Exception:  # unreadable: the matrix's own row says why
        return analyze_tensor(layer_id, name, task.tensor, opts)
    # the array read once serves the matrix's row and its heads'
    rows = analyze_tensor(layer_id, name, dataclasses.replace(task.tensor, _loader=_Held(W)),
                          opts)
    base = {"layer_id": layer_id, "name": f"{name}[heads]"}
    try:
        own = head_matrices(W, task.role, task.spec, task.tensor.name)
        source = task.tensor.source
        for role, mats in own.items():
            for h, A in enumerate(mats):
                shown = f"{name}[h{h}]" if task.role != "qkv" else f"{name}[{role},h{h}]"
                rows += analyze_tensor(layer_id, shown, _in_memory(shown, A, source), opts)
        group = task.spec.n_heads // task.spec.n_kv_heads
        if "q" in own and "k" in own:  # a fused projection: its QK maps here
            rows += _maps(layer_id, f"{task.prefix}qk", own["q"], own["k"], group, "QK", opts,
                          source)
        if task.role == "k" and "q" in task.partners:
            q = _heads_of(task.partners["q"], "q", task.spec)["q"]
            rows += _maps(layer_id, f"{task.prefix}qk", q, own["k"], group, "QK", opts,
                          source)
        if task.role == "o" and "v" in task.partners:
            partner = task.partners["v"]
            v = _heads_of(partner, describe(partner.name).role, task.spec)["v"]
            rows += _maps(layer_id, f"{task.prefix}ov", own["o"], v, group, "OV", opts,
                          source)
    except WeightError as err:
        if opts.on_error == "raise":
            raise
        rows.append(failed_row(base, f"heads: {err.problem}"))
    return rows


def _maps(layer_id: int, stem: str, first: list[np.ndarray], second: list[np.ndarray],
          group: int, what: str, opts: Any, source: str) -> list[dict[str, Any]]:
    """One bilinear map per query head h with key/value head h // group."""
    from rmt.layers import analyze_tensor

    rows = []
    for h, X in enumerate(first):
        Y = second[h // group]
        shown = f"{stem}[h{h}]"
        # QK: W_Q^hᵀ W_K^g (X = W_Q^h is d × hidden); OV: W_O^h W_V^g (X is hidden × d)
        left, right = (X.T, Y) if what == "QK" else (X, Y)
        rows += analyze_tensor(layer_id, shown, _bilinear(shown, left, right, source, what),
                               opts)
    return rows


def analyze_item(layer_id: int, name: str, payload: Any, opts: Any) -> list[dict[str, Any]]:
    """What a worker runs for one task: a :class:`HeadTask` or a plain tensor.

    Parameters
    ----------
    layer_id : int
        Position of the tensor in the checkpoint.
    name : str
        Its row name.
    payload : HeadTask or LazyTensor
        The task.
    opts : rmt.layers.Options
        The run's options.

    Returns
    -------
    list of dict
    """
    from rmt.layers import analyze_tensor

    if isinstance(payload, HeadTask):
        return analyze_heads(layer_id, name, payload, opts)
    return analyze_tensor(layer_id, name, payload, opts)


def _module(name: str) -> str:
    """The attention module's path: the name up to the projection's component."""
    parts = name.split(".")
    if parts and parts[-1] in ("weight", "in_proj_weight"):
        parts = parts[:-1] if parts[-1] == "weight" else [*parts[:-1], "in_proj"]
    return ".".join(parts[:-1])


def attention_tasks(todo: list[tuple[int, str, Any]], spec: HeadSpec
                    ) -> list[tuple[int, str, Any]]:
    """The task list with each attention projection's tensor wrapped in a :class:`HeadTask`.

    Projections are grouped per block (and expert) by :mod:`rmt.architecture`; a key
    projection's task gets its block's query projection, an output projection's its value
    projection (or fused qkv), for the bilinear maps. Stacked tensors and layers outside a
    block keep their plain task.

    Parameters
    ----------
    todo : list of (int, str, LazyTensor)
        ``rmt.analyze``'s tasks.
    spec : HeadSpec
        The geometry.

    Returns
    -------
    list of (int, str, payload)
    """
    groups: dict[tuple[Any, Any], dict[str, tuple[int, str, LazyTensor]]] = {}
    for i, name, t in todo:
        part = describe(name, tuple(t.shape))
        if part.role in _ATTENTION_ROLES and part.block is not None and t.ndim == 2 \
                and part.expert is None:
            groups.setdefault((part.block, _attention_root(name)), {}).setdefault(
                part.role, (i, name, t))
    wrapped: dict[int, HeadTask] = {}
    for (_, root), members in groups.items():
        prefix = f"{root}." if root else ""  # the bilinear rows' names: <root>.qk[h3]
        for role, (i, _, t) in members.items():
            partners: dict[str, LazyTensor] = {}
            if role == "k" and "q" in members:
                partners["q"] = members["q"][2]
            if role == "o":
                v = members.get("v") or members.get("qkv")
                if v is not None:
                    partners["v"] = v[2]
            wrapped[i] = HeadTask(t, role, spec, partners, prefix)
    return [(i, name, wrapped.get(i, t)) for i, name, t in todo]


def _attention_root(name: str) -> str:
    """The path of the attention module a projection belongs to (BERT's ``attention``,
    LLaMA's ``self_attn``), so that q, k, v and o of one layer group together."""
    low = name.lower()
    match = re.search(r"^(.*?(?:self_attn|selfattention|encdecattention|crossattention|"
                      r"attention|attn))(?:\.|$)", low)
    return name[:match.end(1)] if match else _module(name)

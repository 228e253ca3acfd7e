"""Per-layer hyper-parameters from a spectral metric: the maps of the HT-SR training tools.

``rmt.assign(df, ...)`` turns a column of ``rmt.analyze``'s table (α by default) into one
value per layer, as the tools built on heavy-tailed self-regularisation do:

- **AlphaPruning** (Lu et al., NeurIPS 2024): layer-wise sparsity ratios. ``method="linear"``
  with ``value_range=(1 − ε, 1 + ε)`` (its s₁, s₂; ε = 0.2 by default there), block-wise
  (``groups``: the mean α of each transformer block), then scaled so that the
  parameter-weighted mean sparsity is the target (``budget``).
- **TempBalance** (Zhou et al., NeurIPS 2023): learning-rate multipliers, ``"linear"``
  (``tb_linear_map``, ratios 0.5–1.5), ``"sqrt"``, ``"log2"``, ``"rank"`` (``tb_step``).
- **AlphaDecay** (He et al., 2025): weight-decay multipliers, the same linear/sqrt/log2 maps
  or ``"sigmoid"`` (its ``layerwise_sigmoid``: standardised within each block).
- **FARMS** (Hu et al., ICML 2025) feeds the same maps with ``metric="alpha_farms"``.

Every value is a multiplier of the user's base value (learning rate, weight decay) or,
with ``budget``, a fraction of each layer's parameters. Larger metric → larger value in
every method, as in all four papers (a heavier tail, smaller α, is taken as better
trained: less pruning, smaller step, less decay).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from rmt.architecture import block_key

__all__ = ["Method", "assign", "block_of"]

Method = Literal["linear", "rank", "sqrt", "log2", "sigmoid"]

#: The default value range of the methods that use one (TempBalance's and AlphaDecay's
#: min/max ratios).
DEFAULT_RANGE = (0.5, 1.5)


def block_of(name: str) -> str | None:
    """The block of a layer name (:func:`rmt.architecture.block_key`), as a string.

    Parameters
    ----------
    name : str
        e.g. ``"model.layers.12.self_attn.q_proj.weight"``.

    Returns
    -------
    str or None
        ``"12"`` (``"2.1"`` for a nested stage such as torchvision's ``layer2.1``), or None
        outside the repeated units.
    """
    key = block_key(name)
    return None if key is None else ".".join(map(str, key))


def _group_keys(names: pd.Series, groups: Any) -> list[Any]:
    """One key per layer: layers with the same key form a block; None: a block of one."""
    if groups is None:
        return [("layer", i) for i in range(len(names))]
    if isinstance(groups, str) and groups == "block":
        keys = [block_of(n) for n in names]
    elif isinstance(groups, str):
        pattern = re.compile(groups)
        keys = []
        for n in names:
            m = pattern.search(n)
            keys.append(None if m is None else (m.group(1) if m.groups() else m.group(0)))
    elif isinstance(groups, Mapping | pd.Series):
        keys = [groups.get(n) for n in names]
    elif callable(groups):
        keys = [groups(n) for n in names]
    else:
        raise ValueError("groups must be None, 'block', a regex, a mapping or a callable; "
                         f"got {type(groups).__name__}")
    return [("layer", i) if k is None else ("group", k) for i, k in enumerate(keys)]


def _linear(s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if s.max() == s.min():
        return np.full(s.size, (lo + hi) / 2)
    return lo + (s - s.min()) / (s.max() - s.min()) * (hi - lo)


def _rank(s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    ranks = np.empty(s.size)
    ranks[np.argsort(s, kind="stable")] = np.arange(s.size)
    return lo + (hi - lo) * ranks / s.size


def _mean_normalised(v: np.ndarray, what: str) -> np.ndarray:
    total = float(np.sum(v))
    if not total > 0:
        raise ValueError(f"assign: the {what} of the metric sum to {total}, not > 0")
    return v / total * v.size


def _fill_budget(values: np.ndarray, params: np.ndarray, budget: float) -> np.ndarray:
    """Scale to Σ pᵢvᵢ / Σ pᵢ = budget with every vᵢ ≤ 1 (water-filling at the cap)."""
    if not 0 < budget <= 1:
        raise ValueError(f"budget must be in (0, 1], got {budget}")
    capped = np.zeros(values.size, dtype=bool)
    out = values.astype(np.float64).copy()
    for _ in range(values.size + 1):
        if capped.all():
            break
        free_target = budget * params.sum() - params[capped].sum()
        weight = float(np.sum(params[~capped] * values[~capped]))
        if not weight > 0:
            raise ValueError("assign: the values are all zero, no budget can be met")
        scale = free_target / weight
        out[~capped] = values[~capped] * scale
        over = (~capped) & (out > 1)
        if not over.any():
            break
        capped |= over
        out[capped] = 1.0
    return out


def assign(df: pd.DataFrame, metric: str = "alpha", method: Method = "linear",
           value_range: tuple[float, float] | None = None, budget: float | None = None,
           groups: Any = None, *, steepness: float = 4.0) -> pd.Series:
    """One value per layer from a metric column: AlphaPruning, TempBalance, AlphaDecay maps.

    With s the metric of each layer (of each block when ``groups`` is given) and
    (lo, hi) = ``value_range``:

    - ``"linear"``: lo + (s − min s)/(max s − min s)·(hi − lo) — TempBalance's and
      AlphaDecay's ``tb_linear_map``, AlphaPruning's allocation with (lo, hi) = (s₁, s₂);
      all layers equal: (lo + hi)/2.
    - ``"rank"``: lo + (hi − lo)·r/n, r = 0 … n−1 the rank of s (TempBalance's ``tb_step``).
    - ``"sqrt"``: n·√s / Σ√s (TempBalance's ``tb_sqrt``: mean 1); no range.
    - ``"log2"``: n·log₂ s / Σ log₂ s (``tb_log2``); no range.
    - ``"sigmoid"``: 2/(1 + exp(−k·z)), z = (s − mean)/(std + 1e-8) over the layers of the
      same block (all layers without ``groups``), k = ``steepness`` (AlphaDecay's
      ``layerwise_sigmoid``, k = 4): values in (0, 2), 1 at the block's mean.

    Parameters
    ----------
    df : pandas.DataFrame
        ``rmt.analyze``'s table (``name``, the metric, ``status``; ``N``, ``M``,
        ``num_slices`` for ``budget``).
    metric : str, default "alpha"
        The column to map (``"alpha_hill"`` is AlphaPruning's and TempBalance's
        PL_Alpha_Hill; ``"alpha_farms"`` FARMS's).
    method : {"linear", "rank", "sqrt", "log2", "sigmoid"}, default "linear"
    value_range : (float, float), optional
        (lo, hi) of ``"linear"`` and ``"rank"``; default (0.5, 1.5). Not used by the others
        (passing one is an error).
    budget : float, optional
        AlphaPruning's global sparsity: the values are scaled so that their mean weighted
        by each layer's parameter count (N·M·num_slices) is ``budget``; a layer that would
        exceed 1 is capped at 1 and the rest rescaled (AlphaPruning's code clips at 0.998
        instead and misses the budget).
    groups : None, "block", str, mapping or callable, optional
        Blocks of layers: ``"block"`` (the repeated unit of :mod:`rmt.architecture`:
        ``layers.12.``, ``encoder.layer.3.``, torchvision's ``layer2.1.``), a regex
        (its first group, or the match), a name → key mapping or a function of the
        name. Layers without a key are blocks of their own. For ``"sigmoid"`` the
        standardisation runs within each block; for the other methods each block's score
        is the mean metric of its layers and every member gets the block's value
        (AlphaPruning's block-wise allocation).
    steepness : float, default 4.0
        k of ``"sigmoid"``.

    Returns
    -------
    pandas.Series
        Indexed by layer name, one value per row of ``df``; NaN for failed rows and rows
        without a finite metric (they are not part of the map or the budget).

    Raises
    ------
    ValueError
        Unknown method or column, a range where none applies, lo > hi, a metric ≤ 0 for
        ``"sqrt"``/``"log2"``, a budget outside (0, 1] or missing shape columns.
    """
    if method not in ("linear", "rank", "sqrt", "log2", "sigmoid"):
        raise ValueError(f"method must be linear, rank, sqrt, log2 or sigmoid; got {method!r}")
    if metric not in df.columns:
        raise ValueError(f"assign: no column {metric!r} in the table")
    if value_range is not None and method not in ("linear", "rank"):
        raise ValueError(f"value_range is not used by method={method!r}")
    lo, hi = DEFAULT_RANGE if value_range is None else map(float, value_range)
    if lo > hi:
        raise ValueError(f"value_range must have lo <= hi, got {value_range}")
    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(values)
    if "status" in df.columns:
        ok &= (df["status"] == "success").to_numpy()
    out = np.full(len(df), np.nan)
    if not ok.any():
        return pd.Series(out, index=df["name"].to_numpy(), name=f"{method}({metric})")
    names = df["name"][ok].reset_index(drop=True)
    scores = values[ok]
    keys = _group_keys(names, groups)
    assigned = _map(scores, keys, method, lo, hi, steepness)
    if budget is not None:
        missing = [c for c in ("N", "M", "num_slices") if c not in df.columns]
        if missing:
            raise ValueError(f"assign: budget needs the columns {missing}")
        params = (df["N"] * df["M"] * df["num_slices"]).to_numpy(dtype=np.float64)[ok]
        assigned = _fill_budget(assigned, params, float(budget))
    out[ok] = assigned
    return pd.Series(out, index=df["name"].to_numpy(), name=f"{method}({metric})")


def _map(scores: np.ndarray, keys: list[Any], method: str, lo: float, hi: float,
         steepness: float) -> np.ndarray:
    """The method's values for each layer, from its score and block key."""
    order = list(dict.fromkeys(keys))
    members = {k: [i for i, key in enumerate(keys) if key == k] for k in order}
    if method == "sigmoid":
        out = np.empty(scores.size)
        for idx in members.values():
            s = scores[idx]
            z = (s - s.mean()) / (s.std() + 1e-8)
            out[idx] = 2.0 / (1.0 + np.exp(-steepness * z))
        return out
    block_scores = np.array([scores[members[k]].mean() for k in order])
    if method in ("sqrt", "log2") and not np.all(block_scores > 0):
        raise ValueError(f"assign: method={method!r} needs a metric > 0")
    maps: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "linear": lambda s: _linear(s, lo, hi),
        "rank": lambda s: _rank(s, lo, hi),
        "sqrt": lambda s: _mean_normalised(np.sqrt(s), "square roots"),
        "log2": lambda s: _mean_normalised(np.log2(s), "log2 values"),
    }
    per_block = maps[method](block_scores)
    out = np.empty(scores.size)
    for value, k in zip(per_block, order, strict=True):
        out[members[k]] = value
    return out
